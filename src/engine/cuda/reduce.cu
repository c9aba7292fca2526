// Reduce: sum, mean, max, min, prod, any, all, var, norm2, argmax/argmin over any set of axes.
// Accumulation is in double (exact enough for every dtype; these kernels are memory-bound, so the
// slower double ALU does not show) and arg-reductions keep the first index of the extreme, NaN
// counting as the extreme as in PyTorch.
//
// Layout: the input splits into kept dims (one output each) and reduced dims, each collapsed
// separately. When the innermost input dim is reduced, one block walks each output's reduced
// elements (coalesced along the row); otherwise one thread per output walks them serially, which
// is coalesced across neighbouring outputs, except for long reductions with few outputs: those
// run tiled and split (reduce_cols_tiled), and float ones over a middle run of dims vectorized
// (reduce_vec_cols).
#include <optional>

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

// The block's states combined; thread 0 holds the result. `sm` has one slot per thread.
__device__ __forceinline__ State block_combine(int op, State st, State* sm) {
  sm[threadIdx.x] = st;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) combine(op, sm[threadIdx.x], sm[threadIdx.x + w]);
    __syncthreads();
  }
  st = sm[0];
  __syncthreads();  // sm is reused by the block's next output
  return st;
}

template <class O>
__device__ __forceinline__ void finish_row(O* out, State* partial, int64_t o, int64_t n_out, int op, const State& st,
                                           int64_t R, double correction) {
  if (threadIdx.x != 0) return;
  if (partial) partial[int64_t(blockIdx.y) * n_out + o] = st;
  else store(out, o, op, st, R, correction);
}

// One block per output row, or (with `partial`) per chunk of a row: a reduction of the whole
// tensor to one value (`isinf(x).any()`, a loss's mean) has a single row of millions of elements,
// which one block would walk at a few percent of the bandwidth, so the grid's y dimension splits
// each row into `chunk`-long pieces whose states reduce_finish combines.
template <class T, class O>
__global__ void reduce_rows(const T* __restrict__ in, O* __restrict__ out, State* __restrict__ partial, int64_t n_out,
                            int64_t R, int64_t chunk, Dims kd, Strides ks, Dims rd, Strides rs, int op,
                            double correction) {
  __shared__ State sm[256];
  const int64_t r_begin = int64_t(blockIdx.y) * chunk, r_end = imin(R, r_begin + chunk);
  for (int64_t o = blockIdx.x; o < n_out; o += gridDim.x) {
    const int64_t base = strided_offset(o, kd, ks);
    State st = init_state(op);
    for (int64_t r = r_begin + threadIdx.x; r < r_end; r += blockDim.x)
      accumulate(op, st, load(in, base + strided_offset(r, rd, rs)), r);
    finish_row(out, partial, o, n_out, op, block_combine(op, st, sm), R, correction);
  }
}

// reduce_rows for contiguous rows whose length and chunks are whole 16-byte vectors: each thread
// loads 16 bytes at a time, several loads in flight, where the element-wise walk keeps one byte
// (a bool) or two (fp16) per thread in flight and so runs latency-bound far below the bandwidth.
template <class T, class O>
__global__ void reduce_rows_vec(const T* __restrict__ in, O* __restrict__ out, State* __restrict__ partial,
                                int64_t n_out, int64_t R, int64_t chunk, int op, double correction) {
  constexpr int V = 16 / sizeof(T);
  __shared__ State sm[256];
  const int64_t v_begin = int64_t(blockIdx.y) * chunk / V, v_end = imin(R, int64_t(blockIdx.y + 1) * chunk) / V;
  for (int64_t o = blockIdx.x; o < n_out; o += gridDim.x) {
    const uint4* row = reinterpret_cast<const uint4*>(in + o * R);
    State st = init_state(op);
#pragma unroll 4
    for (int64_t v = v_begin + threadIdx.x; v < v_end; v += blockDim.x) {
      const uint4 raw = __ldg(row + v);
      const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int k = 0; k < V; ++k) accumulate(op, st, load(e, k), v * V + k);
    }
    finish_row(out, partial, o, n_out, op, block_combine(op, st, sm), R, correction);
  }
}

// Contiguous float rows with many outputs (a layer or RMS norm's mean over the hidden dim): one
// warp per row, 16-byte loads, fp32 accumulators, shuffles instead of shared memory. reduce_rows'
// per-element index arithmetic and block-wide tree leave such a reduction ~10x off the bandwidth.
constexpr int kRowsPerBlock = 8;

template <class T, class O>
__global__ void reduce_rows_warp(const T* __restrict__ in, O* __restrict__ out, int64_t n_out, int64_t R, int op) {
  constexpr int V = 16 / sizeof(T);
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (row >= n_out) return;
  const bool is_max = op == int(ReduceOp::kMax), is_min = op == int(ReduceOp::kMin);
  const bool squares = op == int(ReduceOp::kNorm2);
  float acc = is_max ? -INFINITY : is_min ? INFINITY : 0.f;
  auto add = [&](float x) {
    if (is_max) acc = (isnan(x) || isnan(acc)) ? x + acc : fmaxf(acc, x);
    else if (is_min) acc = (isnan(x) || isnan(acc)) ? x + acc : fminf(acc, x);
    else acc += squares ? x * x : x;
  };
  const uint4* p = reinterpret_cast<const uint4*>(in + row * R);
  for (int64_t v = lane; v < R / V; v += 32) {
    const uint4 raw = p[v];
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int k = 0; k < V; ++k) add(to_float(e[k]));
  }
  for (int off = 16; off > 0; off >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, acc, off);
    if (is_max) acc = (isnan(other) || isnan(acc)) ? other + acc : fmaxf(acc, other);
    else if (is_min) acc = (isnan(other) || isnan(acc)) ? other + acc : fminf(acc, other);
    else acc += other;
  }
  if (lane == 0) {
    const float r = op == int(ReduceOp::kMean) ? acc / float(R) : squares ? sqrtf(acc) : acc;
    out[row] = from_float<O>(r);
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

// Long reductions of kept-innermost data with few outputs (NHWC global pooling, a mean over H and
// W) starve reduce_cols: a few thousand threads each walk thousands of elements one after another.
// Here a block of 32 x 8 threads takes 32 neighbouring outputs (coalesced loads) and splits the
// reduction over its 8 rows of threads, and the grid splits it further into `blockIdx.y` chunks
// so that small batches still fill the GPU. With one chunk the block stores the result; with
// several it stores partial states for reduce_finish to combine.
constexpr int kTileOutputs = 32, kTileRows = 8;

template <class T, class O>
__global__ void reduce_cols_tiled(const T* __restrict__ in, O* __restrict__ out, State* __restrict__ partial,
                                  int64_t n_out, int64_t R, int64_t chunk, Dims kd, Strides ks, Dims rd, Strides rs,
                                  int op, double correction) {
  __shared__ State sm[kTileRows][kTileOutputs + 1];
  const int64_t o = int64_t(blockIdx.x) * kTileOutputs + threadIdx.x;
  const int64_t r_begin = int64_t(blockIdx.y) * chunk, r_end = imin(R, r_begin + chunk);
  State st = init_state(op);
  if (o < n_out) {
    const int64_t base = strided_offset(o, kd, ks);
    for (int64_t r = r_begin + threadIdx.y; r < r_end; r += kTileRows)
      accumulate(op, st, load(in, base + strided_offset(r, rd, rs)), r);
  }
  sm[threadIdx.y][threadIdx.x] = st;
  __syncthreads();
  if (threadIdx.y != 0 || o >= n_out) return;
  for (int k = 1; k < kTileRows; ++k) combine(op, st, sm[k][threadIdx.x]);
  if (partial) partial[int64_t(blockIdx.y) * n_out + o] = st;
  else store(out, o, op, st, R, correction);
}

template <class O>
__global__ void reduce_finish(const State* __restrict__ partial, O* __restrict__ out, int64_t n_out, int splits,
                              int64_t R, int op, double correction) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < n_out; o += int64_t(gridDim.x) * blockDim.x) {
    State st = partial[o];
    for (int s = 1; s < splits; ++s) combine(op, st, partial[int64_t(s) * n_out + o]);
    store(out, o, op, st, R, correction);
  }
}

// reduce_finish for split rows: a block per output combines its partial states in parallel. A
// whole-tensor reduction has one output and hundreds of partials, which reduce_finish's single
// thread would walk one dependent load at a time (~55 us on an H200, 3x the reduction itself).
template <class O>
__global__ void reduce_finish_block(const State* __restrict__ partial, O* __restrict__ out, int64_t n_out, int splits,
                                    int64_t R, int op, double correction) {
  __shared__ State sm[256];
  for (int64_t o = blockIdx.x; o < n_out; o += gridDim.x) {
    State st = init_state(op);
    for (int s = threadIdx.x; s < splits; s += blockDim.x) combine(op, st, partial[int64_t(s) * n_out + o]);
    st = block_combine(op, st, sm);
    if (threadIdx.x == 0) store(out, o, op, st, R, correction);
  }
}

// The float sums, means, maxima and minima of [outer, R, inner] data over R with inner % 8 == 0
// (global pooling of NHWC activations, means over H and W) — the squeeze-and-excite reductions of
// mobile networks, which are pure bandwidth: each thread moves 8 channels with one 16-byte load
// and keeps 8 fp32 accumulators (as PyTorch's pooling kernels accumulate), a block covers 32 such
// groups with 8 rows of threads walking R, and the grid splits R further when the outputs alone
// would not fill the GPU. Partial results are fp32 [split][outer * inner] for reduce_vec_finish.
constexpr int kVecGroups = 32;

struct VecCols {
  int64_t outer, R, inner, chunk;
  int splits;
};

__device__ __forceinline__ float vec_combine(int op, float a, float b) {
  switch (op) {
    case int(ReduceOp::kMax): return (isnan(a) || isnan(b)) ? a + b : fmaxf(a, b);
    case int(ReduceOp::kMin): return (isnan(a) || isnan(b)) ? a + b : fminf(a, b);
    default: return a + b;
  }
}

template <class T>
__global__ void reduce_vec_cols(const T* __restrict__ in, T* __restrict__ out, float* __restrict__ partial, VecCols g,
                                int op) {
  __shared__ float sm[kTileRows][kVecGroups][9];  // 9: no bank conflicts between neighbouring groups
  const int64_t groups = g.inner / 8;
  const int64_t blocks_per_outer = (groups + kVecGroups - 1) / kVecGroups;
  const int64_t o = blockIdx.x / blocks_per_outer;
  const int64_t grp = (blockIdx.x % blocks_per_outer) * kVecGroups + threadIdx.x;
  const int64_t r_begin = int64_t(blockIdx.y) * g.chunk, r_end = imin(g.R, r_begin + g.chunk);
  const float init = op == int(ReduceOp::kMax) ? -INFINITY : op == int(ReduceOp::kMin) ? INFINITY : 0.f;
  float acc[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) acc[k] = init;
  if (grp < groups) {
    const T* base = in + o * g.R * g.inner + grp * 8;
#pragma unroll 4
    for (int64_t r = r_begin + threadIdx.y; r < r_end; r += kTileRows) {
      float v[8];
      load8(base + r * g.inner, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[k] = vec_combine(op, acc[k], v[k]);
    }
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) sm[threadIdx.y][threadIdx.x][k] = acc[k];
  __syncthreads();
  if (threadIdx.y != 0 || grp >= groups) return;
  for (int row = 1; row < kTileRows; ++row)
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[k] = vec_combine(op, acc[k], sm[row][threadIdx.x][k]);
  const int64_t at = o * g.inner + grp * 8;
  if (partial) {
#pragma unroll
    for (int k = 0; k < 8; ++k) partial[int64_t(blockIdx.y) * g.outer * g.inner + at + k] = acc[k];
    return;
  }
  if (op == int(ReduceOp::kMean))
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[k] /= float(g.R);
  store8(out + at, acc);
}

template <class T>
__global__ void reduce_vec_finish(const float* __restrict__ partial, T* __restrict__ out, VecCols g, int op) {
  const int64_t n = g.outer * g.inner;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float a = partial[i];
    for (int s = 1; s < g.splits; ++s) a = vec_combine(op, a, partial[int64_t(s) * n + i]);
    if (op == int(ReduceOp::kMean)) a /= float(g.R);
    out[i] = from_float<T>(a);
  }
}

// [outer, R, inner] when the reduced dims are one run that leaves the innermost dim kept, the op
// and dtype are ones reduce_vec_cols handles and inner % 8 == 0; nullopt otherwise.
std::optional<VecCols> vec_cols_shape(const Context& ctx, const std::vector<int64_t>& dims,
                                      const std::vector<bool>& reduced, ReduceOp op, DataType in, DataType out) {
  if (op != ReduceOp::kSum && op != ReduceOp::kMean && op != ReduceOp::kMax && op != ReduceOp::kMin) return std::nullopt;
  if (!is_floating(in) || out != in || dims.empty() || reduced.back()) return std::nullopt;
  size_t first = dims.size(), last = 0;
  for (size_t d = 0; d < dims.size(); ++d)
    if (reduced[d] && dims[d] != 1) first = std::min(first, d), last = d + 1;
  if (first >= last) return std::nullopt;
  for (size_t d = first; d < last; ++d)
    if (!reduced[d] && dims[d] != 1) return std::nullopt;  // reduced dims not one run
  VecCols g{1, 1, 1, 0, 1};
  for (size_t d = 0; d < dims.size(); ++d) (d < first ? g.outer : d < last ? g.R : g.inner) *= dims[d];
  if (g.inner % 8 != 0 || g.R < 16) return std::nullopt;
  const int64_t blocks = g.outer * ceil_div(g.inner / 8, kVecGroups);
  const int64_t target = 2 * int64_t(ctx.sm_count);
  int64_t splits = 1;
  if (blocks < target) splits = std::max<int64_t>(1, std::min(ceil_div(target, blocks), g.R / (kTileRows * 8)));
  g.chunk = ceil_div(g.R, splits);
  g.splits = int(ceil_div(g.R, g.chunk));
  return g;
}

// How a reduction of `n_out` outputs over `R` elements each runs: rows (innermost dim reduced),
// the tiled column kernel in `splits` chunks, or one thread per output.
struct ReducePlan {
  bool rows = false, tiled = false;
  int64_t splits = 1, chunk = 0;
};

ReducePlan plan_reduce(const Context& ctx, bool rows, int64_t n_out, int64_t R) {
  ReducePlan rp;
  rp.rows = rows;
  const int64_t target = 2 * int64_t(ctx.sm_count);
  if (rows) {
    // Rows split only when the outputs leave most SMs idle and each chunk still gives every
    // thread of a 256-wide block 16 elements or more.
    constexpr int64_t kMinChunk = 256 * 16;
    if (n_out < target && R >= 2 * kMinChunk)
      rp.splits = std::max<int64_t>(1, std::min(ceil_div(target, n_out), R / kMinChunk));
    rp.chunk = ceil_div(ceil_div(R, rp.splits), 16) * 16;  // whole 16-byte vectors of any dtype
    rp.splits = ceil_div(R, rp.chunk);
    return rp;
  }
  if (R < 64) return rp;
  rp.tiled = true;
  const int64_t blocks = ceil_div(n_out, kTileOutputs);
  // Each chunk keeps at least 32 elements per thread row, so the partial states stay few.
  if (blocks < target) rp.splits = std::max<int64_t>(1, std::min(ceil_div(target, blocks), R / (kTileRows * 32)));
  rp.chunk = ceil_div(R, rp.splits);
  rp.splits = ceil_div(R, rp.chunk);
  return rp;
}

std::vector<bool> reduced_axes(const std::vector<int64_t>& axes, size_t rank) {
  std::vector<bool> reduced(rank, false);
  for (int64_t a : axes) reduced.at(size_t(a)) = true;  // canonical (shape inference); at() rejects others
  return reduced;
}

size_t workspace_for(const Context& ctx, const TensorView& x, const std::vector<bool>& reduced) {
  int64_t n_out = 1, R = 1;
  for (size_t d = 0; d < x.dims.size(); ++d) (reduced[d] ? R : n_out) *= x.dims[d];
  const bool rows = !x.dims.empty() && reduced.back();
  const ReducePlan rp = plan_reduce(ctx, rows, n_out, R);
  size_t bytes = rp.splits > 1 ? size_t(rp.splits * n_out) * sizeof(State) : 0;
  // The vectorized kernel's partials, for whichever op and output dtype may run here (the
  // workspace is asked for before the op is known to the caller: pooling's max and mean).
  if (auto g = vec_cols_shape(ctx, x.dims, reduced, ReduceOp::kSum, x.dtype, x.dtype); g && g->splits > 1)
    bytes = std::max(bytes, size_t(g->splits) * size_t(n_out) * sizeof(float));
  return bytes;
}

}  // namespace

size_t reduce_workspace(const Context& ctx, const ReduceParams& p, const std::vector<TensorView>& in) {
  if (in.empty()) return 0;
  return workspace_for(ctx, in[0], reduced_axes(p.axes, in[0].dims.size()));
}

void run_reduce(Context& ctx, const ReduceParams& p, LayerCall& call) {
  const TensorView& x = call.inputs.at(0);
  reduce_over(ctx, call, p.op, reduced_axes(p.axes, x.dims.size()), p.correction);
}

size_t reduce_over_workspace(const Context& ctx, const TensorView& x, const std::vector<bool>& reduced) {
  return workspace_for(ctx, x, reduced);
}

void reduce_over(Context& ctx, LayerCall& call, ReduceOp reduce_op, const std::vector<bool>& reduced,
                 double correction) {
  const TensorView& x = call.inputs.at(0);
  const TensorView& y = call.outputs.at(0);
  const int64_t n_out = y.numel();
  if (n_out == 0) return;
  const size_t rank = x.dims.size();
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
  const int op = int(reduce_op);
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (auto g = vec_cols_shape(ctx, x.dims, reduced, reduce_op, x.dtype, y.dtype);
      g && x.is_contiguous() && aligned(x.data) && aligned(y.data)) {
    float* partial = g->splits > 1 ? static_cast<float*>(call.workspace) : nullptr;
    if (partial && size_t(g->splits) * size_t(n_out) * sizeof(float) > call.workspace_bytes)
      fail(call.layer, "reduction workspace smaller than planned");
    const dim3 grid{unsigned(g->outer * ceil_div(g->inner / 8, kVecGroups)), unsigned(g->splits)};
    const dim3 block{unsigned(kVecGroups), unsigned(kTileRows)};
    dispatch_float(x.dtype, call.layer, [&](auto t) {
      using T = decltype(t);
      reduce_vec_cols<T><<<grid, block, 0, ctx.stream>>>(static_cast<const T*>(x.data), static_cast<T*>(y.data),
                                                          partial, *g, op);
      if (partial)
        reduce_vec_finish<T><<<grid_for(ctx, n_out, 256), 256, 0, ctx.stream>>>(partial, static_cast<T*>(y.data), *g, op);
    });
    KILN_CUDA_LAUNCH_CHECK();
    return;
  }
  const bool warp_rows = rows && rd.size() == 1 && rs[0] == 1 && (kd.empty() || (kd.size() == 1 && ks[0] == R)) &&
                         n_out >= 1024 && x.dtype == y.dtype && is_floating(x.dtype) && aligned(x.data) &&
                         (R * int64_t(element_size(x.dtype))) % 16 == 0 &&
                         (reduce_op == ReduceOp::kSum || reduce_op == ReduceOp::kMean || reduce_op == ReduceOp::kMax ||
                          reduce_op == ReduceOp::kMin || reduce_op == ReduceOp::kNorm2);
  if (warp_rows) {
    dispatch_float(x.dtype, call.layer, [&](auto t) {
      using T = decltype(t);
      reduce_rows_warp<T, T><<<unsigned(ceil_div(n_out, kRowsPerBlock)), 32 * kRowsPerBlock, 0, ctx.stream>>>(
          static_cast<const T*>(x.data), static_cast<T*>(y.data), n_out, R, op);
    });
    KILN_CUDA_LAUNCH_CHECK();
    return;
  }
  const ReducePlan rp = plan_reduce(ctx, rows, n_out, R);
  const size_t ws_needed = rp.splits > 1 ? size_t(rp.splits * n_out) * sizeof(State) : 0;
  if (ws_needed > call.workspace_bytes) fail(call.layer, "reduction workspace smaller than planned");
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
        const int threads = R >= 256 ? 256 : R >= 64 ? 64 : 32;
        State* partial = rp.splits > 1 ? static_cast<State*>(call.workspace) : nullptr;
        const dim3 grid{unsigned(std::min<int64_t>(n_out, int64_t(ctx.sm_count) * 16)), unsigned(rp.splits)};
        const int64_t V = 16 / int64_t(sizeof(T));
        const bool contiguous_rows = rd.size() == 1 && rs[0] == 1 && (kd.empty() || (kd.size() == 1 && ks[0] == R));
        if (contiguous_rows && aligned(x.data) && R % V == 0 && rp.chunk % V == 0)
          reduce_rows_vec<T, O><<<grid, threads, 0, ctx.stream>>>(static_cast<const T*>(x.data),
                                                                  static_cast<O*>(y.data), partial, n_out, R, rp.chunk,
                                                                  op, correction);
        else
          reduce_rows<T, O><<<grid, threads, 0, ctx.stream>>>(static_cast<const T*>(x.data), static_cast<O*>(y.data),
                                                              partial, n_out, R, rp.chunk, make_dims(kd),
                                                              make_strides(ks), make_dims(rd), make_strides(rs), op,
                                                              correction);
        if (partial)
          reduce_finish_block<O><<<grid.x, 256, 0, ctx.stream>>>(partial, static_cast<O*>(y.data), n_out,
                                                                 int(rp.splits), R, op, correction);
      } else if (rp.tiled) {
        State* partial = rp.splits > 1 ? static_cast<State*>(call.workspace) : nullptr;
        const dim3 grid{unsigned(ceil_div(n_out, kTileOutputs)), unsigned(rp.splits)};
        const dim3 block{unsigned(kTileOutputs), unsigned(kTileRows)};
        reduce_cols_tiled<T, O><<<grid, block, 0, ctx.stream>>>(static_cast<const T*>(x.data), static_cast<O*>(y.data),
                                                              partial, n_out, R, rp.chunk, make_dims(kd),
                                                              make_strides(ks), make_dims(rd), make_strides(rs), op,
                                                              correction);
        if (partial)
          reduce_finish<O><<<grid_for(ctx, n_out, 128), 128, 0, ctx.stream>>>(partial, static_cast<O*>(y.data), n_out,
                                                                             int(rp.splits), R, op, correction);
      } else {
        reduce_cols<T, O><<<grid_for(ctx, n_out, 128), 128, 0, ctx.stream>>>(
            static_cast<const T*>(x.data), static_cast<O*>(y.data), n_out, R, make_dims(kd), make_strides(ks),
            make_dims(rd), make_strides(rs), op, correction);
      }
    });
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::engine::cuda
