// Reduce: sum, mean, max, min, prod, any, all, var, norm2, argmax/argmin over any set of axes.
// Accumulation is in double (exact enough for every dtype; these kernels are memory-bound, so the
// slower double ALU does not show) and arg-reductions keep the first index of the extreme, NaN
// counting as the extreme as in PyTorch.
//
// Layout: the input splits into kept dims (one output each) and reduced dims, each collapsed
// separately. When the innermost input dim is reduced, one block walks each output's reduced
// elements (coalesced along the row); otherwise one thread per output walks them serially, which
// is coalesced across neighbouring outputs.
#include "engine/cuda/device.cuh"

namespace kiln::engine::cuda {
namespace {

struct State {
  double s;
  double q;
  int64_t i;
};

__device__ __forceinline__ State init_state(int op) {
  switch (op) {
    case int(ReduceOp::kProd): case int(ReduceOp::kAll): return {1.0, 0.0, 0};
    case int(ReduceOp::kMax): case int(ReduceOp::kArgMax): return {-INFINITY, 0.0, INT64_MAX};
    case int(ReduceOp::kMin): case int(ReduceOp::kArgMin): return {INFINITY, 0.0, INT64_MAX};
    default: return {0.0, 0.0, 0};
  }
}

// Is (v, i) a better extreme than (b, bi)? NaN wins; ties go to the lower index.
__device__ __forceinline__ bool better(int op, double v, int64_t i, double b, int64_t bi) {
  const bool vn = isnan(v), bn = isnan(b);
  if (vn || bn) return vn && (!bn || i < bi);
  if (v == b) return i < bi;
  return op == int(ReduceOp::kArgMax) ? v > b : v < b;
}

__device__ __forceinline__ void accumulate(int op, State& st, double x, int64_t i) {
  switch (op) {
    case int(ReduceOp::kSum): case int(ReduceOp::kMean): st.s += x; break;
    case int(ReduceOp::kProd): st.s *= x; break;
    case int(ReduceOp::kMax): st.s = (isnan(x) || isnan(st.s)) ? x + st.s : fmax(st.s, x); break;
    case int(ReduceOp::kMin): st.s = (isnan(x) || isnan(st.s)) ? x + st.s : fmin(st.s, x); break;
    case int(ReduceOp::kAny): st.s = (st.s != 0 || x != 0) ? 1.0 : 0.0; break;
    case int(ReduceOp::kAll): st.s = (st.s != 0 && x != 0) ? 1.0 : 0.0; break;
    case int(ReduceOp::kVar): st.s += x; st.q += x * x; break;
    case int(ReduceOp::kNorm2): st.s += x * x; break;
    case int(ReduceOp::kArgMax): case int(ReduceOp::kArgMin):
      if (better(op, x, i, st.s, st.i)) { st.s = x; st.i = i; }
      break;
  }
}

__device__ __forceinline__ void combine(int op, State& a, const State& b) {
  switch (op) {
    case int(ReduceOp::kArgMax): case int(ReduceOp::kArgMin):
      if (better(op, b.s, b.i, a.s, a.i)) a = b;
      break;
    case int(ReduceOp::kVar): a.s += b.s; a.q += b.q; break;
    case int(ReduceOp::kSum): case int(ReduceOp::kMean): case int(ReduceOp::kNorm2): a.s += b.s; break;
    default: accumulate(op, a, b.s, 0); break;  // prod, max, min, any, all fold a partial like an element
  }
}

template <class O>
__device__ __forceinline__ void store(O* out, int64_t o, int op, const State& st, int64_t R, double correction) {
  double r;
  switch (op) {
    case int(ReduceOp::kMean): r = st.s / double(R); break;
    case int(ReduceOp::kVar): r = (st.q - st.s * st.s / double(R)) / (double(R) - correction); break;
    case int(ReduceOp::kNorm2): r = sqrt(st.s); break;
    case int(ReduceOp::kArgMax): case int(ReduceOp::kArgMin): r = double(st.i == INT64_MAX ? 0 : st.i); break;
    default: r = st.s;
  }
  if constexpr (is_float_storage_v<O>) out[o] = from_float<O>(float(r));
  else if constexpr (std::is_same_v<O, bool>) out[o] = r != 0;
  else out[o] = static_cast<O>(r);
}

template <class T>
__device__ __forceinline__ double load(const T* p, int64_t off) {
  if constexpr (is_float_storage_v<T>) return double(to_float(p[off]));
  else return double(p[off]);
}

template <class T, class O>
__global__ void reduce_rows(const T* __restrict__ in, O* __restrict__ out, int64_t n_out, int64_t R, Dims kd, Strides ks,
                            Dims rd, Strides rs, int op, double correction) {
  __shared__ State sm[256];
  for (int64_t o = blockIdx.x; o < n_out; o += gridDim.x) {
    const int64_t base = strided_offset(o, kd, ks);
    State st = init_state(op);
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) accumulate(op, st, load(in, base + strided_offset(r, rd, rs)), r);
    sm[threadIdx.x] = st;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
      if (threadIdx.x < w) combine(op, sm[threadIdx.x], sm[threadIdx.x + w]);
      __syncthreads();
    }
    if (threadIdx.x == 0) store(out, o, op, sm[0], R, correction);
    __syncthreads();
  }
}

template <class T, class O>
__global__ void reduce_cols(const T* __restrict__ in, O* __restrict__ out, int64_t n_out, int64_t R, Dims kd, Strides ks,
                            Dims rd, Strides rs, int op, double correction) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < n_out; o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = strided_offset(o, kd, ks);
    State st = init_state(op);
    for (int64_t r = 0; r < R; ++r) accumulate(op, st, load(in, base + strided_offset(r, rd, rs)), r);
    store(out, o, op, st, R, correction);
  }
}

}  // namespace

void run_reduce(Context& ctx, const ReduceParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& y = call.outputs.at(0);
  const int64_t n_out = y.numel();
  if (n_out == 0) return;
  const size_t rank = x.dims.size();
  std::vector<bool> reduced(rank, false);
  for (int64_t a : p.axes) reduced.at(a < 0 ? a + int64_t(rank) : a) = true;
  std::vector<int64_t> kd, ks, rd, rs;
  int64_t stride = 1;
  std::vector<int64_t> cs(rank);
  for (size_t d = rank; d-- > 0;) {
    cs[d] = stride;
    stride *= x.dims[d];
  }
  for (size_t d = 0; d < rank; ++d) {
    (reduced[d] ? rd : kd).push_back(x.dims[d]);
    (reduced[d] ? rs : ks).push_back(cs[d]);
  }
  // Arg-reductions number elements along their single axis: keep it uncollapsed.
  const int64_t R = product(rd);
  collapse(kd, ks);
  collapse(rd, rs);
  if (kd.size() > size_t(kMaxRank) || rd.size() > size_t(kMaxRank)) fail(call.layer, "rank above 8");
  const bool rows = rank > 0 && reduced[rank - 1];
  const int op = int(p.op);
  dispatch_all(x.dtype, [&](auto t) {
    using T = decltype(t);
    // Outputs are the input's dtype, i64 (arg-reductions), bool (any/all) or f32: only these.
    auto with_out = [&](auto f) {
      if (y.dtype == x.dtype) f(T{});
      else if (y.dtype == DataType::kInt64) f(int64_t{});
      else if (y.dtype == DataType::kBool) f(bool{});
      else if (y.dtype == DataType::kFloat32) f(float{});
      else fail(call.layer, std::string("reduce output dtype ") + to_string(y.dtype) + " is not supported");
    };
    with_out([&](auto o) {
      using O = decltype(o);
      if (rows) {
        int threads = R >= 256 ? 256 : R >= 64 ? 64 : 32;
        unsigned grid = static_cast<unsigned>(std::min<int64_t>(n_out, int64_t(ctx.sm_count) * 16));
        reduce_rows<T, O><<<grid, threads, 0, ctx.stream>>>(static_cast<const T*>(x.data), static_cast<O*>(y.data), n_out,
                                                            R, make_dims(kd), make_strides(ks), make_dims(rd),
                                                            make_strides(rs), op, p.correction);
      } else {
        reduce_cols<T, O><<<grid_for(ctx, n_out, 128), 128, 0, ctx.stream>>>(
            static_cast<const T*>(x.data), static_cast<O*>(y.data), n_out, R, make_dims(kd), make_strides(ks),
            make_dims(rd), make_strides(rs), op, p.correction);
      }
    });
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::engine::cuda
