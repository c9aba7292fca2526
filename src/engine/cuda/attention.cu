// Scaled dot-product attention as one kernel, flash-style: scores never reach device memory.
// Each warp owns one query row; a block of kRows warps shares tiles of 32 keys (and their values)
// staged in shared memory as fp32. Per tile, lane j scores key j (a full dot product, no shuffles),
// the warp updates the running max / sum (online softmax, fp32) and accumulates P·V with each lane
// owning Ev/32 output dims. Causal masking is top-left aligned (key j visible to query i iff
// j <= i), as PyTorch's is_causal; a bool mask keeps where true, a float mask is added.
//
// This is the CUDA-core version: correct for any E, Ev <= 256 and any lengths; a tensor-core
// (wgmma/mma) version is the next step for long sequences.
#include "engine/cuda/device.cuh"

namespace kiln::engine::cuda {
namespace {

constexpr int kRows = 8;   // query rows (warps) per block
constexpr int kTile = 32;  // keys per tile

struct AttnArgs {
  const void* q; const void* k; const void* v; const void* mask; void* out;
  int64_t Lq, Lk, E, Ev;
  Dims batch;                                   // output batch dims
  Strides qb, kb, vb, mb;                       // batch strides (elements) of q, k, v, mask
  int64_t mask_sq, mask_sk;                     // mask strides along Lq, Lk (0 = broadcast)
  int mask_kind;                                // 0 none, 1 bool keep, 2 additive (mask_dt)
  int mask_dt;                                  // float mask dtype code (0 f32, 1 f16, 2 bf16)
  float scale;
  bool causal;
};

__device__ __forceinline__ float mask_value(const AttnArgs& a, int64_t off) {
  switch (a.mask_dt) {
    case 1: return __half2float(static_cast<const __half*>(a.mask)[off]);
    case 2: return __bfloat162float(static_cast<const __nv_bfloat16*>(a.mask)[off]);
    default: return static_cast<const float*>(a.mask)[off];
  }
}

template <class T, int VPL>  // VPL: value dims per lane (Ev <= 32 * VPL)
__global__ void __launch_bounds__(kRows * 32) attention_kernel(const AttnArgs a) {
  extern __shared__ float smem[];
  const int64_t E = a.E, Ev = a.Ev, ldk = E + 1;  // +1: lanes read different key rows, no bank conflicts
  float* ks = smem;                       // [kTile][E+1]
  float* vs = ks + kTile * ldk;           // [kTile][Ev]
  float* qs = vs + kTile * Ev;            // [kRows][E]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t b = blockIdx.y;
  const int64_t qi = int64_t(blockIdx.x) * kRows + warp;
  const bool active = qi < a.Lq;

  const T* q = static_cast<const T*>(a.q) + strided_offset(b, a.batch, a.qb);
  const T* k = static_cast<const T*>(a.k) + strided_offset(b, a.batch, a.kb);
  const T* v = static_cast<const T*>(a.v) + strided_offset(b, a.batch, a.vb);
  const int64_t mbase = a.mask_kind ? strided_offset(b, a.batch, a.mb) : 0;

  if (active)
    for (int64_t e = lane; e < E; e += 32) qs[warp * E + e] = to_float(q[qi * E + e]) * a.scale;

  float m = -INFINITY, l = 0.f;
  float acc[VPL];
#pragma unroll
  for (int t = 0; t < VPL; ++t) acc[t] = 0.f;

  // Keys past this block's last query are causally invisible to all its rows.
  int64_t k_end = a.Lk;
  if (a.causal) k_end = imin(a.Lk, (int64_t(blockIdx.x) + 1) * kRows);
  for (int64_t k0 = 0; k0 < k_end; k0 += kTile) {
    const int64_t nk = imin(kTile, a.Lk - k0);
    __syncthreads();  // previous tile fully consumed (and qs written, first time)
    for (int64_t x = threadIdx.x; x < nk * E; x += blockDim.x) {
      int64_t j = x / E, e = x % E;
      ks[j * ldk + e] = to_float(k[(k0 + j) * E + e]);
    }
    for (int64_t x = threadIdx.x; x < nk * Ev; x += blockDim.x) vs[x] = to_float(v[k0 * Ev + x]);
    __syncthreads();
    if (!active) continue;

    // Lane j scores key k0 + j.
    float s = -INFINITY;
    const int64_t kj = k0 + lane;
    if (lane < nk && !(a.causal && kj > qi)) {
      const float* qr = qs + warp * E;
      const float* kr = ks + lane * ldk;
      float d = 0.f;
      for (int64_t e = 0; e < E; ++e) d = fmaf(qr[e], kr[e], d);
      s = d;
      if (a.mask_kind == 1) {
        if (!static_cast<const bool*>(a.mask)[mbase + qi * a.mask_sq + kj * a.mask_sk]) s = -INFINITY;
      } else if (a.mask_kind == 2) {
        s += mask_value(a, mbase + qi * a.mask_sq + kj * a.mask_sk);
      }
    }
    const float m_new = fmaxf(m, warp_max(s));
    if (m_new == -INFINITY) continue;  // everything so far masked
    const float p = __expf(s - m_new);
    const float corr = __expf(m - m_new);
    l = l * corr + warp_sum(p);
    m = m_new;
#pragma unroll
    for (int t = 0; t < VPL; ++t) acc[t] *= corr;
    for (int j = 0; j < nk; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
      const float* vr = vs + j * Ev;
#pragma unroll
      for (int t = 0; t < VPL; ++t) {
        const int64_t d = lane + 32 * t;
        if (d < Ev) acc[t] = fmaf(pj, vr[d], acc[t]);
      }
    }
  }
  if (!active) return;
  T* out = static_cast<T*>(a.out) + (b * a.Lq + qi) * Ev;
  const float inv = 1.f / l;  // a fully masked row gives NaN, as PyTorch's math path
#pragma unroll
  for (int t = 0; t < VPL; ++t) {
    const int64_t d = lane + 32 * t;
    if (d < Ev) out[d] = from_float<T>(l > 0.f ? acc[t] * inv : NAN);
  }
}

// Batch strides (in elements) of a tensor whose last two dims are one matrix of `mat` elements,
// broadcast against the output batch dims.
std::vector<int64_t> batch_strides(const std::vector<int64_t>& dims, const std::vector<int64_t>& out_batch) {
  std::vector<int64_t> bd(dims.begin(), dims.end() - 2);
  std::vector<int64_t> st = broadcast_strides(bd, out_batch);
  const int64_t mat = dims[dims.size() - 1] * dims[dims.size() - 2];
  for (auto& s : st) s *= mat;
  return st;
}

}  // namespace

void run_attention(Context& ctx, const AttentionParams& p, LayerCall& call) {
  const TensorView& q = call.inputs.at(0);
  const TensorView& k = call.inputs.at(1);
  const TensorView& v = call.inputs.at(2);
  const TensorView& y = call.outputs.at(0);
  const size_t rank = q.dims.size();
  if (rank < 2 || k.dims.size() != rank || v.dims.size() != rank) fail(call.layer, "q, k, v must share a rank >= 2");
  if (k.dtype != q.dtype || v.dtype != q.dtype) fail(call.layer, "q, k, v must share a dtype");
  AttnArgs a{};
  a.Lq = q.dims[rank - 2];
  a.E = q.dims[rank - 1];
  a.Lk = k.dims[rank - 2];
  a.Ev = v.dims[rank - 1];
  if (y.numel() == 0) return;
  if (a.Ev > 256) fail(call.layer, "value head size above 256 is not supported on CUDA");
  std::vector<int64_t> ob(y.dims.begin(), y.dims.end() - 2);
  if (ob.size() > size_t(kMaxRank)) fail(call.layer, "rank above 10");
  const int64_t batch = product(ob);
  a.batch = make_dims(ob);
  a.qb = make_strides(batch_strides(q.dims, ob));
  a.kb = make_strides(batch_strides(k.dims, ob));
  a.vb = make_strides(batch_strides(v.dims, ob));
  a.q = q.data; a.k = k.data; a.v = v.data; a.out = y.data;
  a.scale = static_cast<float>(p.scale ? *p.scale : 1.0 / std::sqrt(double(a.E)));
  a.causal = p.causal;
  if (p.has_mask) {
    const TensorView& mk = call.inputs.at(3);
    std::vector<int64_t> full(ob);
    full.push_back(a.Lq);
    full.push_back(a.Lk);
    std::vector<int64_t> ms = broadcast_strides(mk.dims, full);
    a.mask = mk.data;
    a.mask_kind = mk.dtype == DataType::kBool ? 1 : 2;
    a.mask_dt = mk.dtype == DataType::kFloat16 ? 1 : mk.dtype == DataType::kBFloat16 ? 2 : 0;
    if (a.mask_kind == 2 && !is_floating(mk.dtype)) fail(call.layer, "mask must be bool or float");
    a.mask_sq = ms[ms.size() - 2];
    a.mask_sk = ms[ms.size() - 1];
    a.mb = make_strides(std::vector<int64_t>(ms.begin(), ms.end() - 2));
  }
  const size_t smem = sizeof(float) * (kTile * (a.E + 1) + kTile * a.Ev + kRows * a.E);
  if (smem > ctx.max_smem_optin) fail(call.layer, "head size too large for shared memory");
  dim3 grid(static_cast<unsigned>(ceil_div(a.Lq, kRows)), static_cast<unsigned>(batch));
  if (batch > 65535) fail(call.layer, "batch above 65535");
  dispatch_float(q.dtype, call.layer, [&](auto t) {
    using T = decltype(t);
    auto launch = [&](auto kernel) {
      if (smem > 48 * 1024) KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      kernel<<<grid, kRows * 32, smem, ctx.stream>>>(a);
    };
    if (a.Ev <= 32) launch(attention_kernel<T, 1>);
    else if (a.Ev <= 64) launch(attention_kernel<T, 2>);
    else if (a.Ev <= 128) launch(attention_kernel<T, 4>);
    else launch(attention_kernel<T, 8>);
  });
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::engine::cuda
