// The builder's fused pointwise kernels: a small register program run over blocks of output
// elements. Registers 0..n_inputs-1 hold the inputs (broadcast to the output's dims), then one
// register per instruction. A float register computes in fp32 and is rounded to its dtype after
// every instruction (so f16/bf16 chains give what the unfused layers give); integer and bool
// registers compute in int64 and wrap to their width. Blocks keep every register in L1.
// A row program (row_length R) runs with one row per block: kRowReduce fills its register with the
// reduction of its operand over the block, and per-row outputs take the block's first element.
#include <algorithm>
#include <atomic>
#include <cmath>

#include "engine/cpu/common.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/ops.h"
#include "engine/cpu/parallel.h"
#include "engine/index_expr.h"

namespace kiln::engine::cpu {
namespace {

constexpr int64_t kBlock = 256;

// Rounds a register's values to its dtype (float side or integer side).
void round_float(DataType t, float* r, int64_t n) {
  if (t == DataType::kFloat16) for (int64_t i = 0; i < n; ++i) r[i] = float(f16(r[i]));
  else if (t == DataType::kBFloat16) vec::round_to_bf16(r, n);
}
void wrap_int(DataType t, int64_t* r, int64_t n) {
  dispatch_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!is_float_v<T> && !std::is_same_v<T, int64_t>)
      for (int64_t i = 0; i < n; ++i) r[i] = int64_t(T(r[i]));
  });
}

struct Registers {
  int64_t block = kBlock;  // elements per register
  std::vector<float> f;
  std::vector<int64_t> i;
  float* fr(int32_t r) { return f.data() + r * block; }
  int64_t* ir(int32_t r) { return i.data() + r * block; }
  // Input register j from n elements of `v`, `stride` apart from element `base`.
  void load(int32_t j, const TensorView& v, int64_t base, int64_t stride, int64_t n) {
    dispatch_dtype(v.dtype, [&](auto tag) {
      using T = decltype(tag);
      const T* src = v.as<T>() + base;
      if constexpr (std::is_same_v<T, float>) {
        float* r = fr(j);
        if (stride == 1) std::copy(src, src + n, r);
        else if (stride == 0) std::fill(r, r + n, src[0]);
        else for (int64_t e = 0; e < n; ++e) r[e] = src[e * stride];
      } else if constexpr (std::is_same_v<T, bf16>) {
        float* r = fr(j);
        if (stride == 1) vec::bf16_to_float(reinterpret_cast<const uint16_t*>(src), r, n);
        else for (int64_t e = 0; e < n; ++e) r[e] = float(src[e * stride]);
      } else if constexpr (is_float_v<T>) {
        float* r = fr(j);
        for (int64_t e = 0; e < n; ++e) r[e] = float(src[e * stride]);
      } else {
        int64_t* r = ir(j);
        for (int64_t e = 0; e < n; ++e) r[e] = int64_t(src[e * stride]);
      }
    });
  }
};

// Sum, max or min of n values in double (max/min: NaN wins, as PyTorch's).
double reduce_row(ReduceOp op, const float* a, int64_t n) {
  double acc = op == ReduceOp::kSum ? 0.0 : double(a[0]);
  for (int64_t e = 0; e < n; ++e) {
    const double v = a[e];
    if (op == ReduceOp::kSum) acc += v;
    else if (std::isnan(v) || std::isnan(acc)) acc = v + acc;
    else acc = op == ReduceOp::kMax ? std::max(acc, v) : std::min(acc, v);
  }
  return acc;
}

}  // namespace

std::atomic<uint64_t> row_block_runs{0};

// The program over channels-last data whose every input is the output's shape, one value, or a
// vector along the last axis broadcast over the others ([1, ..., 1, C]: a batch norm's scale and
// shift, a bias): broadcast runs would be one row of C each, and their per-run cost outweighed the
// arithmetic (DenseNet's batch norm + ReLU, 26 ms of 47 at batch 1). Instead blocks of whole rows,
// each thread's per-channel registers tiled once. False where the inputs are not of these forms.
template <class Execute>
bool run_per_channel_blocks(const std::vector<int64_t>& out_dims, const std::vector<std::vector<int64_t>>& in_dims,
                            size_t n_regs, LayerCall& call, Execute& execute) {
  if (out_dims.size() < 2) return false;
  const int64_t C = out_dims.back(), total = product(out_dims);
  if (C < 1 || total < 1 || C > 4096) return false;
  enum class Form { kFull, kScalar, kChannel };
  std::vector<Form> forms;
  bool any_channel = false;
  for (const auto& d : in_dims) {
    const int64_t numel = product(d);
    if (d == out_dims) forms.push_back(Form::kFull);
    else if (numel == 1) forms.push_back(Form::kScalar);
    else if (!d.empty() && d.back() == C && numel == C && d.size() <= out_dims.size()) forms.push_back(Form::kChannel), any_channel = true;
    else return false;
  }
  if (!any_channel) return false;  // the broadcast runs are long already
  const int64_t rows_per_block = std::max<int64_t>(1, 2048 / C), block = rows_per_block * C;
  const int64_t blocks = (total + block - 1) / block;
  auto part = [&](int64_t lo, int64_t hi) {
    Registers regs;
    regs.block = block;
    regs.f.resize(n_regs * size_t(block));
    regs.i.resize(n_regs * size_t(block));
    for (size_t j = 0; j < forms.size(); ++j) {
      if (forms[j] == Form::kScalar) regs.load(int32_t(j), call.inputs[j], 0, 0, block);
      if (forms[j] != Form::kChannel) continue;
      regs.load(int32_t(j), call.inputs[j], 0, 1, C);  // one row, then copies of it
      for (int64_t r = 1; r < rows_per_block; ++r) {
        if (is_floating(call.inputs[j].dtype)) std::copy(regs.fr(int32_t(j)), regs.fr(int32_t(j)) + C, regs.fr(int32_t(j)) + r * C);
        else std::copy(regs.ir(int32_t(j)), regs.ir(int32_t(j)) + C, regs.ir(int32_t(j)) + r * C);
      }
    }
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t first = b * block, n = std::min(block, total - first);  // whole rows: total is a multiple of C
      for (size_t j = 0; j < forms.size(); ++j)
        if (forms[j] == Form::kFull) regs.load(int32_t(j), call.inputs[j], first, 1, n);
      execute(regs, first, n);
    }
  };
  parallel_ranges(blocks, total > kParallelGrain, part);
  ++row_block_runs;
  return true;
}

uint64_t fused_row_block_runs() { return row_block_runs.load(); }

void run(const FusedPointwiseParams& p, LayerCall& call) {
  const Layer& layer = call.layer;
  std::vector<DataType> in_types;
  for (const auto& v : call.inputs) in_types.push_back(v.dtype);
  if (p.gather) {
    if (std::string why = index_expr::check(*p.gather, in_types); !why.empty()) fail(layer, why);
  }
  const size_t n_in = p.gather ? p.gather->registers.size() : call.inputs.size();
  const size_t n_regs = n_in + p.program.size();
  std::vector<DataType> dt(n_regs);
  for (size_t i = 0; i < n_in; ++i) dt[i] = p.gather ? index_expr::register_type(*p.gather, i, in_types) : in_types[i];
  for (size_t k = 0; k < p.program.size(); ++k) {
    dt[n_in + k] = p.program[k].dtype;
    for (int32_t o : p.program[k].operands)
      if (o < 0 || size_t(o) >= n_in + k) fail(layer, "fused program reads a register before it is written");
  }
  if (p.outputs.size() != call.outputs.size()) fail(layer, "fused program outputs disagree with the layer");
  for (size_t o = 0; o < p.outputs.size(); ++o)
    if (p.outputs[o] < 0 || size_t(p.outputs[o]) >= n_regs || dt[size_t(p.outputs[o])] != call.outputs[o].dtype)
      fail(layer, "fused program output " + std::to_string(o) + " has the wrong register or dtype");
  const std::vector<int64_t>& out_dims = call.outputs.at(0).dims;
  std::vector<std::vector<int64_t>> in_dims;
  for (const auto& v : call.inputs) in_dims.push_back(v.dims);
  std::vector<char> row;  // row programs: the registers holding one value per row
  if (p.row_length) {
    if (p.gather) fail(layer, "a row program cannot have gathered loads");
    std::vector<char> in_row;
    for (const auto& d : in_dims) in_row.push_back(d.empty() || d.back() == 1);
    row = detail::row_registers(p, in_row);
  }

  // Runs the program over n elements whose input registers are loaded, storing from `first` (a row
  // program: row `first`, its per-row outputs at `first` and the others at first * n).
  auto execute = [&](Registers& regs, int64_t first, int64_t n) {
    // Execute.
    for (size_t k = 0; k < p.program.size(); ++k) {
      const PointwiseInstr& in = p.program[k];
      const int32_t dst = int32_t(n_in + k);
      const bool dfl = is_floating(in.dtype);
      auto opf = [&](size_t a) { return regs.fr(in.operands[a]); };
      auto opi = [&](size_t a) { return regs.ir(in.operands[a]); };
      auto opfloat = [&](size_t a) { return is_floating(dt[size_t(in.operands[a])]); };
      float* df = regs.fr(dst);
      int64_t* di = regs.ir(dst);
      switch (in.kind) {
        case PointwiseInstr::Kind::kConstant:
          if (dfl) std::fill(df, df + n, float(in.constant));
          else std::fill(di, di + n, int64_t(in.constant));
          break;
        case PointwiseInstr::Kind::kRowReduce:
          if (!p.row_length || !opfloat(0) || !dfl) fail(layer, "a row reduction outside a row program, or not on floats");
          std::fill(df, df + n, float(reduce_row(in.reduce, opf(0), n)));
          break;
        case PointwiseInstr::Kind::kBinary: {
          const bool pred = is_predicate(in.binary);
          const bool bl = dt[size_t(in.operands[0])] == DataType::kBool;
          if (opfloat(0)) {
            const float *a = opf(0), *b = opf(1);
            if (pred) for (int64_t e = 0; e < n; ++e) di[e] = binary_pred<float>(in.binary, a[e], b[e]);
            else if (auto vop = vector_arith(in.binary)) vec::arith(*vop, a, false, b, false, df, n);
            else for (int64_t e = 0; e < n; ++e) df[e] = binary_arith<float>(in.binary, a[e], b[e]);
          } else {
            const int64_t *a = opi(0), *b = opi(1);
            if (pred) for (int64_t e = 0; e < n; ++e) di[e] = binary_pred<int64_t>(in.binary, a[e], b[e]);
            else if (bl) for (int64_t e = 0; e < n; ++e) di[e] = binary_arith<bool>(in.binary, a[e] != 0, b[e] != 0);
            else for (int64_t e = 0; e < n; ++e) di[e] = binary_arith<int64_t>(in.binary, a[e], b[e]);
          }
          break;
        }
        case PointwiseInstr::Kind::kUnary: {
          const bool pred = is_predicate(in.unary);
          const DataType at = dt[size_t(in.operands[0])];
          if (is_floating(at)) {
            const float* a = opf(0);
            if (pred) for (int64_t e = 0; e < n; ++e) di[e] = unary_pred<float>(in.unary, a[e]);
            else if (dfl) for (int64_t e = 0; e < n; ++e) df[e] = unary_arith<float>(in.unary, a[e]);
            else for (int64_t e = 0; e < n; ++e) di[e] = int64_t(unary_arith<float>(in.unary, a[e]));
          } else {
            const int64_t* a = opi(0);
            if (pred) for (int64_t e = 0; e < n; ++e) di[e] = unary_pred<int64_t>(in.unary, a[e]);
            else if (dfl) for (int64_t e = 0; e < n; ++e) df[e] = float(unary_arith<double>(in.unary, double(a[e])));
            else if (at == DataType::kBool) for (int64_t e = 0; e < n; ++e) di[e] = unary_arith<bool>(in.unary, a[e] != 0);
            else for (int64_t e = 0; e < n; ++e) di[e] = unary_arith<int64_t>(in.unary, a[e]);
          }
          break;
        }
        case PointwiseInstr::Kind::kActivation:
          if (opfloat(0)) {
            activation_rows(in.activation, opf(0), df, n);
          } else {
            const int64_t* a = opi(0);
            for (int64_t e = 0; e < n; ++e)
              di[e] = int64_t(activation<double>(in.activation, double(a[e])));
          }
          break;
        case PointwiseInstr::Kind::kCast: {
          const DataType at = dt[size_t(in.operands[0])];
          if (is_floating(at)) {
            const float* a = opf(0);
            if (dfl) std::copy(a, a + n, df);
            else if (in.dtype == DataType::kBool) for (int64_t e = 0; e < n; ++e) di[e] = a[e] != 0.0f;
            else dispatch_dtype(in.dtype, [&](auto tag) {
              using T = decltype(tag);
              for (int64_t e = 0; e < n; ++e) di[e] = int64_t(convert<T>(a[e]));
            });
          } else {
            const int64_t* a = opi(0);
            if (dfl) for (int64_t e = 0; e < n; ++e) df[e] = float(a[e]);
            else if (in.dtype == DataType::kBool) for (int64_t e = 0; e < n; ++e) di[e] = a[e] != 0;
            else std::copy(a, a + n, di);
          }
          break;
        }
        case PointwiseInstr::Kind::kSelect: {
          const int64_t* c = opi(0);
          if (dfl) {
            const float *a = opf(1), *b = opf(2);
            for (int64_t e = 0; e < n; ++e) df[e] = c[e] ? a[e] : b[e];
          } else {
            const int64_t *a = opi(1), *b = opi(2);
            for (int64_t e = 0; e < n; ++e) di[e] = c[e] ? a[e] : b[e];
          }
          break;
        }
      }
      if (dfl) round_float(in.dtype, df, n);
      else wrap_int(in.dtype, di, n);
    }
    // Store outputs.
    for (size_t o = 0; o < p.outputs.size(); ++o) {
      const TensorView& v = call.outputs[o];
      const int32_t r = p.outputs[o];
      const bool per_row = p.row_length && row[size_t(r)];
      const int64_t count = per_row ? 1 : n;
      dispatch_dtype(v.dtype, [&](auto tag) {
        using T = decltype(tag);
        T* d = v.as<T>() + (p.row_length && !per_row ? first * n : first);
        if constexpr (std::is_same_v<T, bf16>) {
          vec::float_to_bf16(regs.fr(r), reinterpret_cast<uint16_t*>(d), count);
        } else if constexpr (is_float_v<T>) {
          const float* s = regs.fr(r);
          for (int64_t e = 0; e < count; ++e) d[e] = T(s[e]);
        } else {
          const int64_t* s = regs.ir(r);
          for (int64_t e = 0; e < count; ++e) d[e] = T(s[e]);
        }
      });
    }
  };

  if (p.gather) {
    // Each register's element found by evaluating the index nodes per output element (the CUDA
    // kernels compile the same nodes; here they serve tests and CPU plans that ask for them).
    const GatherLoads& g = *p.gather;
    if (out_dims != g.out_dims) fail(layer, "gathered loads were built for another output shape");
    const int64_t total = product(out_dims);
    const size_t rank = out_dims.size();
    Registers regs;
    regs.f.resize(n_regs * kBlock);
    regs.i.resize(n_regs * kBlock);
    std::vector<int64_t> coords(rank), values(g.nodes.size());
    for (int64_t b0 = 0; b0 < total; b0 += kBlock) {
      const int64_t n = std::min(kBlock, total - b0);
      for (int64_t e = 0; e < n; ++e) {
        int64_t rem = b0 + e;
        for (size_t d = rank; d-- > 0;) {
          coords[d] = rem % out_dims[d];
          rem /= out_dims[d];
        }
        index_expr::evaluate(g, coords.data(), values.data());
        for (size_t r = 0; r < n_in; ++r) {
          const int piece = index_expr::pick_piece(g, r, values.data());
          const LoadPiece* lp = piece < 0 ? nullptr : &g.registers[r][size_t(piece)];
          if (!lp || lp->input < 0) {
            const double v = lp ? lp->value : 0.0;
            if (is_floating(dt[r])) regs.fr(int32_t(r))[e] = float(v);
            else regs.ir(int32_t(r))[e] = int64_t(v);
            continue;
          }
          const TensorView& src = call.inputs[size_t(lp->input)];
          const int64_t at = values[size_t(lp->offset)];
          if (at < 0 || at >= src.numel()) fail(layer, "a gathered load reads outside its input");
          regs.fr(int32_t(r))[e] = 0;
          dispatch_dtype(src.dtype, [&](auto tag) {
            using T = decltype(tag);
            if constexpr (is_float_v<T>) regs.fr(int32_t(r))[e] = float(src.as<T>()[at]);
            else regs.ir(int32_t(r))[e] = int64_t(src.as<T>()[at]);
          });
        }
      }
      execute(regs, b0, n);
    }
    return;
  }
  if (p.row_length) {
    // The domain: the outputs' outer dims, rows of R. Each row's inputs are loaded by their
    // broadcast strides (0 along the row for per-row inputs).
    const int64_t R = p.row_length;
    std::vector<int64_t> domain = out_dims;
    domain.back() = R;
    const int64_t rows = product(domain) / R;
    std::vector<std::vector<int64_t>> strides;
    for (const auto& d : in_dims) strides.push_back(broadcast_strides(d, domain));
    Registers regs;
    regs.block = R;
    regs.f.resize(n_regs * size_t(R));
    regs.i.resize(n_regs * size_t(R));
    for (int64_t m = 0; m < rows; ++m) {
      for (size_t j = 0; j < n_in; ++j) {
        int64_t base = 0, rem = m;
        for (size_t k = domain.size() - 1; k-- > 0;) {
          base += (rem % domain[k]) * strides[j][k];
          rem /= domain[k];
        }
        regs.load(int32_t(j), call.inputs[j], base, strides[j].back(), R);
      }
      execute(regs, m, R);
    }
    return;
  }
  if (run_per_channel_blocks(out_dims, in_dims, n_regs, call, execute)) return;
  for_each_broadcast_run(out_dims, in_dims, [&](int64_t o0, const int64_t* off, int64_t len, const int64_t* st) {
    thread_local Registers regs;
    regs.f.resize(n_regs * kBlock);
    regs.i.resize(n_regs * kBlock);
    for (int64_t b0 = 0; b0 < len; b0 += kBlock) {
      const int64_t n = std::min(kBlock, len - b0);
      for (size_t j = 0; j < n_in; ++j) regs.load(int32_t(j), call.inputs[j], off[j] + b0 * st[j], st[j], n);
      execute(regs, o0 + b0, n);
    }
  });
}

}  // namespace kiln::engine::cpu
