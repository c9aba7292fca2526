// Elementwise binary ops with NumPy broadcasting over the output's dims. Floats compute in fp32
// (f16/bf16 are converted per element), integers natively; comparisons and logical ops write
// bool. The op switch sits inside the loop over a run; compilers unswitch it, and runs are long
// because broadcast dims are collapsed first (common.h).
#include <algorithm>
#include <vector>

#include "engine/cpu/common.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/ops.h"

namespace kiln::engine::cpu {

void run(const ElementwiseParams& p, LayerCall& call) {
  const Layer& layer = call.layer;
  if (call.inputs.size() != 2) fail(layer, "expects 2 inputs");
  const TensorView& a = call.inputs[0];
  const TensorView& b = call.inputs[1];
  const TensorView& out = call.outputs.at(0);
  if (a.dtype != b.dtype) fail(layer, std::string("input dtypes differ: ") + to_string(a.dtype) + " vs " + to_string(b.dtype));
  const bool pred = is_predicate(p.op);
  if (pred && out.dtype != DataType::kBool) fail(layer, "a comparison must output bool");
  if (!pred && out.dtype != a.dtype) fail(layer, "output dtype must match the inputs");
  const bool bitwise = p.op == BinaryOp::kBitAnd || p.op == BinaryOp::kBitOr || p.op == BinaryOp::kBitXor;
  if (bitwise && is_floating(a.dtype)) fail(layer, "bitwise ops need integer or bool inputs");

  dispatch_dtype(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    const T* pa = a.as<T>();
    const T* pb = b.as<T>();
    const BinaryOp op = p.op;
    // bf16 with a small operand (a squeeze-excite scale, a bias) that the runs read again and
    // again: widened to fp32 once here rather than in every run.
    std::vector<float> wide_a, wide_b;
    if constexpr (std::is_same_v<T, bf16>) {
      constexpr int64_t kSmall = 65536;
      if (vector_arith(op) && a.numel() <= kSmall && a.numel() < out.numel()) {
        wide_a.resize(size_t(a.numel()));
        vec::bf16_to_float(reinterpret_cast<const uint16_t*>(pa), wide_a.data(), a.numel());
      }
      if (vector_arith(op) && b.numel() <= kSmall && b.numel() < out.numel()) {
        wide_b.resize(size_t(b.numel()));
        vec::bf16_to_float(reinterpret_cast<const uint16_t*>(pb), wide_b.data(), b.numel());
      }
    }
    for_each_broadcast_run(out.dims, {a.dims, b.dims},
                           [&](int64_t o, const int64_t* off, int64_t n, const int64_t* st) {
      const T* x = pa + off[0];
      const T* y = pb + off[1];
      // Strides as compile-time constants for the common cases (same shape, scalar operand) so
      // the compiler vectorizes those loops.
      auto loop = [&](auto sx, auto sy) {
        if (pred) {
          bool* z = out.as<bool>() + o;
          for (int64_t k = 0; k < n; ++k) z[k] = binary_pred<C>(op, C(x[k * sx]), C(y[k * sy]));
        } else {
          T* z = out.as<T>() + o;
          auto each = [&](auto f) {
            for (int64_t k = 0; k < n; ++k) z[k] = T(f(C(x[k * sx]), C(y[k * sy])));
          };
          // fp32 add/sub/mul/div over contiguous or broadcast operands: vec::arith's loops, compiled
          // for AVX-512 and AVX2 too (this file is built for the baseline x86-64).
          if constexpr (std::is_same_v<T, float>) {
            const int64_t ax = sx, ay = sy;
            if (auto vop = vector_arith(op); vop && ax <= 1 && ay <= 1)
              return vec::arith(*vop, x, ax == 0, y, ay == 0, z, n);
          }
          // bf16 the same way, converted in registers (rounded once, as the scalar loop rounds).
          if constexpr (std::is_same_v<T, bf16>) {
            const int64_t ax = sx, ay = sy;
            if (auto vop = vector_arith(op); vop && ax <= 1 && ay <= 1) {
              const vec::Bf16Operand va{reinterpret_cast<const uint16_t*>(x),
                                        wide_a.empty() ? nullptr : wide_a.data() + off[0], ax == 0};
              const vec::Bf16Operand vb{reinterpret_cast<const uint16_t*>(y),
                                        wide_b.empty() ? nullptr : wide_b.data() + off[1], ay == 0};
              return vec::arith_bf16(*vop, va, vb, reinterpret_cast<uint16_t*>(z), n);
            }
          }
          // The commonest ops with the op known at compile time: the loop vectorizes (a switch per
          // element does not; 2 ns an element for a squeeze-excite scale in channels last).
          if constexpr (!std::is_same_v<C, bool>) {
            switch (op) {
              case BinaryOp::kAdd: return each([](C u, C v) { return C(u + v); });
              case BinaryOp::kSub: return each([](C u, C v) { return C(u - v); });
              case BinaryOp::kMul: return each([](C u, C v) { return C(u * v); });
              case BinaryOp::kDiv:
                if constexpr (std::is_floating_point_v<C>) return each([](C u, C v) { return u / v; });
                break;
              default: break;
            }
          }
          each([op](C u, C v) { return binary_arith<C>(op, u, v); });
        }
      };
      using One = std::integral_constant<int64_t, 1>;
      using Zero = std::integral_constant<int64_t, 0>;
      if (st[0] == 1 && st[1] == 1) loop(One{}, One{});
      else if (st[0] == 1 && st[1] == 0) loop(One{}, Zero{});
      else if (st[0] == 0 && st[1] == 1) loop(Zero{}, One{});
      else loop(st[0], st[1]);
    });
  });
}

}  // namespace kiln::engine::cpu
