// Scaled dot-product attention as one kernel, flash-style: scores never reach device memory.
// Each warp owns one query row; a block of kRows warps shares tiles of 32 keys (and their values)
// staged in shared memory as fp32. Per tile, lane j scores key j (a full dot product, no shuffles),
// the warp updates the running max / sum (online softmax, fp32) and accumulates P·V with each lane
// owning Ev/32 output dims. Causal masking is top-left aligned (key j visible to query i iff
// j <= i), as PyTorch's is_causal; a bool mask keeps where true, a float mask is added. A row
// with no key kept gives zeros (PyTorch 2.5+'s safe softmax, as the CPU backend).
//
// Two kernels: attention_mma (fp16/bf16, head sizes up to 128 in multiples of 8: the common
// case) runs both products on tensor cores; attention_kernel (the CUDA-core version) covers the
// rest: fp32, any E, Ev <= 256, any alignment.
// For fp16/bf16 shapes cuDNN's fused attention can take, attention_tactic.h times it against
// these kernels the first time the shape runs and keeps the faster one.
#include "engine/cuda/device.cuh"
#include "engine/cuda/attention_tactic.h"

#include <cfloat>
#include <type_traits>

namespace kiln::engine::cuda {
namespace {

constexpr int kRows = 8;   // query rows (warps) per block
constexpr int kTile = 32;  // keys per tile

struct AttnArgs {
  const void* q; const void* k; const void* v; const void* mask; void* out;
  int64_t Lq, Lk, E, Ev;
  int64_t q_rs, k_rs, v_rs, o_rs;               // row strides (elements) of q, k, v, out
  Dims batch;                                   // output batch dims (logical: before output_perm)
  Strides qb, kb, vb, mb, ob;                   // batch strides (elements) of q, k, v, mask, out
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
    for (int64_t e = lane; e < E; e += 32) qs[warp * E + e] = to_float(q[qi * a.q_rs + e]) * a.scale;

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
      ks[j * ldk + e] = to_float(k[(k0 + j) * a.k_rs + e]);
    }
    for (int64_t x = threadIdx.x; x < nk * Ev; x += blockDim.x) vs[x] = to_float(v[(k0 + x / Ev) * a.v_rs + x % Ev]);
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
  T* out = static_cast<T*>(a.out) + strided_offset(b, a.batch, a.ob) + qi * a.o_rs;
  const float inv = l > 0.f ? 1.f / l : 0.f;  // nothing kept: zeros, as PyTorch's safe softmax (and the CPU)
#pragma unroll
  for (int t = 0; t < VPL; ++t) {
    const int64_t d = lane + 32 * t;
    if (d < Ev) out[d] = from_float<T>(acc[t] * inv);
  }
}

// ---- tensor-core flash attention -----------------------------------------------------------
// FlashAttention-2's scheme with mma.sync m16n8k16 (fp16/bf16 in, fp32 accumulate): a block of
// 4 warps owns 64 query rows, 16 per warp, kept as A fragments in registers; it walks the keys in
// tiles of 64 staged in shared memory (dynamic: 70 KB at head size 128), row-major, by cp.async:
// two tiles are in flight, the next one loading while the current one is multiplied. K's B
// fragments come out of ldmatrix (two k-steps per instruction), V's transposed out of
// ldmatrix.trans. Only the tiles a causal diagonal, a mask or the sequence's end cut are masked
// element by element; the others are just scaled. Scores stay in the mma accumulators; the
// online softmax works on them in place (each row's 64 scores are spread over the 4 lanes of a
// quad: two shuffles reduce them), and their fp32 accumulator layout is exactly the A-fragment
// layout the P·V product needs, so P never leaves registers. Head sizes are padded to DP (32, 64
// or 128) with zeros, which changes no dot product.
constexpr int kMmaRows = 64, kMmaKeys = 64, kMmaWarps = 4;

// D += A·B for one m16n8k16 tile, fp32 accumulation (PTX names the input type in the opcode).
#define KILN_MMA_16816(type)                                                                              \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." type "." type ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, " \
               "{%8,%9}, {%0,%1,%2,%3};\n"                                                                 \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                           \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))

template <class T>
struct MmaType {
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    if constexpr (std::is_same_v<T, __half>) KILN_MMA_16816("f16");
    else KILN_MMA_16816("bf16");
  }
  // Two floats as the register of two 16-bit values (lo in the low half), as fragments hold them.
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    if constexpr (std::is_same_v<T, __half>) {
      __half2 h = __floats2half2_rn(lo, hi);
      return *reinterpret_cast<uint32_t*>(&h);
    } else {
      __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
      return *reinterpret_cast<uint32_t*>(&h);
    }
  }
};
#undef KILN_MMA_16816

template <class T>
__device__ __forceinline__ uint32_t lds32(const T* p) { return *reinterpret_cast<const uint32_t*>(p); }

__device__ __forceinline__ unsigned smem_address(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
// Four 8x8 matrices of 16-bit values: lane l names row l % 8 of matrix l / 8; register i holds
// matrix i's elements (row lane / 4, columns 2 * (lane % 4) and the next).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p))
               : "memory");
}
// The same, each matrix transposed on the way.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p))
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int Pending>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory"); }

// Rows [r0, r0 + 64) of a [rows, cols] matrix (row stride `ld_src`) into a [64][DP + 8] tile,
// zero-filled past `rows` and `cols` (cols % 8 == 0, so 16-byte vectors never straddle the edge),
// as asynchronous copies the caller commits and waits for.
template <class T, int DP>
__device__ __forceinline__ void stage_rows_async(T* tile, const T* src, int64_t r0, int64_t rows, int64_t cols,
                                                 int64_t ld_src) {
  constexpr int kVecs = DP / 8, ld = DP + 8;
  for (int x = threadIdx.x; x < 64 * kVecs; x += kMmaWarps * 32) {
    const int r = x / kVecs, c = (x % kVecs) * 8;
    const bool inside = r0 + r < rows && c < cols;
    const T* from = inside ? src + (r0 + r) * ld_src + c : src;  // zero-filled: no byte is read
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(tile + r * ld + c)), "l"(from),
                 "r"(inside ? 16 : 0)
                 : "memory");
  }
}

template <class T, int DP>
__global__ void __launch_bounds__(kMmaWarps * 32) attention_mma(const AttnArgs a) {
  constexpr int ld = DP + 8;  // +8 halves: fragment and ldmatrix reads of 8 rows hit 32 different banks
  constexpr int kStages = 2;
  extern __shared__ __align__(16) unsigned char attn_smem[];
  T(*ks)[kMmaKeys * ld] = reinterpret_cast<T(*)[kMmaKeys * ld]>(attn_smem);  // K tiles (Q's tile first)
  T(*vs)[kMmaKeys * ld] = ks + kStages;                                      // V tiles
  constexpr float kLog2e = 1.4426950408889634f;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  // Causal: the last query tiles see the most keys; they start first, so no long one runs alone at the end.
  const int64_t b = blockIdx.y, tile = a.causal ? int64_t(gridDim.x) - 1 - blockIdx.x : int64_t(blockIdx.x);
  const int64_t q0 = tile * kMmaRows;
  const T* q = static_cast<const T*>(a.q) + strided_offset(b, a.batch, a.qb);
  const T* k = static_cast<const T*>(a.k) + strided_offset(b, a.batch, a.kb);
  const T* v = static_cast<const T*>(a.v) + strided_offset(b, a.batch, a.vb);
  const int64_t mbase = a.mask_kind ? strided_offset(b, a.batch, a.mb) : 0;

  // This warp's 16 query rows as A fragments (rows g and g + 8 of the warp's slice).
  stage_rows_async<T, DP>(ks[0], q, q0, a.Lq, a.E, a.q_rs);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qf[DP / 16][4];
  const int wr = warp * 16 + g;
#pragma unroll
  for (int kc = 0; kc < DP / 16; ++kc) {
    qf[kc][0] = lds32(ks[0] + wr * ld + kc * 16 + 2 * t4);
    qf[kc][1] = lds32(ks[0] + (wr + 8) * ld + kc * 16 + 2 * t4);
    qf[kc][2] = lds32(ks[0] + wr * ld + kc * 16 + 8 + 2 * t4);
    qf[kc][3] = lds32(ks[0] + (wr + 8) * ld + kc * 16 + 8 + 2 * t4);
  }
  __syncthreads();  // every warp has its Q before the first K tile lands on it
  const int64_t rows[2] = {q0 + wr, q0 + wr + 8};
  float o[DP / 8][4];
#pragma unroll
  for (int d = 0; d < DP / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const float scale = a.scale * kLog2e;  // scores in log2 units: exp2f is one instruction

  const int64_t k_end = a.causal ? imin(a.Lk, q0 + kMmaRows) : a.Lk;
  const int64_t tiles = (k_end + kMmaKeys - 1) / kMmaKeys;
  auto issue = [&](int64_t it) {
    stage_rows_async<T, DP>(ks[it % kStages], k, it * kMmaKeys, a.Lk, a.E, a.k_rs);
    stage_rows_async<T, DP>(vs[it % kStages], v, it * kMmaKeys, a.Lk, a.Ev, a.v_rs);
    cp_async_commit();
  };
  if (tiles > 0) issue(0);
  for (int64_t it = 0; it < tiles; ++it) {
    const int64_t k0 = it * kMmaKeys;
    if (it + 1 < tiles) {
      issue(it + 1);  // into the buffer tile it - 1 used: every warp left it at the last barrier
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* kt = ks[it % kStages];
    const T* vt = vs[it % kStages];

    float s[kMmaKeys / 8][4];
    // Lane l addresses row l % 8 of key tile nt, columns 8 * (l / 8) of a 32-wide k-step pair.
    const T* k_lane = kt + (lane & 7) * ld + (lane >> 3) * 8;
#pragma unroll
    for (int nt = 0; nt < kMmaKeys / 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
      for (int kc = 0; kc < DP / 16; kc += 2) {
        uint32_t kf[4];
        ldmatrix_x4(kf, k_lane + nt * 8 * ld + kc * 16);
        MmaType<T>::mma(s[nt], qf[kc], kf[0], kf[1]);
        if (kc + 1 < DP / 16) MmaType<T>::mma(s[nt], qf[kc + 1], kf[2], kf[3]);
      }
    }
    // Scale and mask: element e of tile nt is row rows[e / 2], key k0 + nt*8 + 2*t4 + e%2. A tile
    // below the causal diagonal, inside the sequence and without a mask has nothing to mask.
    const bool plain = !a.mask_kind && k0 + kMmaKeys <= a.Lk && !(a.causal && k0 + kMmaKeys - 1 > q0);
    if (plain) {
#pragma unroll
      for (int nt = 0; nt < kMmaKeys / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] *= scale;
    } else {
#pragma unroll
    for (int nt = 0; nt < kMmaKeys / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t row = rows[e >> 1], kj = k0 + nt * 8 + 2 * t4 + (e & 1);
        float x = s[nt][e] * scale;
        if (kj >= a.Lk || (a.causal && kj > row)) {
          x = -INFINITY;
        } else if (a.mask_kind && row < a.Lq) {
          const int64_t off = mbase + row * a.mask_sq + kj * a.mask_sk;
          if (a.mask_kind == 1) {
            if (!static_cast<const bool*>(a.mask)[off]) x = -INFINITY;
          } else {
            // bf16 masks use its lowest finite value (-3.4e38): in log2 units that would overflow
            // to -inf and a row with every key masked so would give zeros, not PyTorch's average.
            const float mv = mask_value(a, off);
            x += isinf(mv) ? mv : fmaxf(mv * kLog2e, -FLT_MAX);
          }
        }
        s[nt][e] = x;
      }
    }
    // Online softmax per row; a quad's 4 lanes hold one row's 64 scores.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kMmaKeys / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[r], mx);
      const float base = m_new == -INFINITY ? 0.f : m_new;  // all masked so far: every p is 0
      const float corr = exp2f(m[r] - base);
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < kMmaKeys / 8; ++nt) {
        s[nt][2 * r] = exp2f(s[nt][2 * r] - base);
        s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - base);
        sum += s[nt][2 * r] + s[nt][2 * r + 1];
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      l[r] = l[r] * corr + sum;
      m[r] = m_new;
#pragma unroll
      for (int d = 0; d < DP / 8; ++d) {
        o[d][2 * r] *= corr;
        o[d][2 * r + 1] *= corr;
      }
    }
    // O += P·V: the score accumulators of key tiles 2j and 2j+1 are the A fragment of keys
    // 16j..16j+15; one ldmatrix.trans gives the B fragments of two 8-wide column tiles of V.
    const int v_row = (lane & 7) + ((lane >> 3) & 1) * 8, v_col = (lane >> 4) * 8;
#pragma unroll
    for (int j = 0; j < kMmaKeys / 16; ++j) {
      const uint32_t pf[4] = {MmaType<T>::pack(s[2 * j][0], s[2 * j][1]), MmaType<T>::pack(s[2 * j][2], s[2 * j][3]),
                              MmaType<T>::pack(s[2 * j + 1][0], s[2 * j + 1][1]),
                              MmaType<T>::pack(s[2 * j + 1][2], s[2 * j + 1][3])};
#pragma unroll
      for (int dd = 0; dd < DP / 16; ++dd) {
        uint32_t vf[4];
        ldmatrix_x4_trans(vf, vt + (j * 16 + v_row) * ld + dd * 16 + v_col);
        MmaType<T>::mma(o[2 * dd], pf, vf[0], vf[1]);
        MmaType<T>::mma(o[2 * dd + 1], pf, vf[2], vf[3]);
      }
    }
    __syncthreads();  // this tile's buffers are free for the copies issued next
  }
  T* out = static_cast<T*>(a.out) + strided_offset(b, a.batch, a.ob);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (rows[r] >= a.Lq) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;  // nothing kept: zeros, as PyTorch's safe softmax (and the CPU)
#pragma unroll
    for (int d = 0; d < DP / 8; ++d) {
      const int64_t col = d * 8 + 2 * t4;
      if (col < a.Ev) out[rows[r] * a.o_rs + col] = from_float<T>(o[d][2 * r] * inv);
      if (col + 1 < a.Ev) out[rows[r] * a.o_rs + col + 1] = from_float<T>(o[d][2 * r + 1] * inv);
    }
  }
}

// The tensor-core kernel's conditions: fp16/bf16, head sizes <= 128 in multiples of 8, and every
// row start 16-byte aligned (contiguous rows, 8-element batch strides, aligned bases).
bool mma_applicable(DataType dt, const AttnArgs& a, size_t batch_rank) {
  if (dt != DataType::kFloat16 && dt != DataType::kBFloat16) return false;
  if (a.E <= 0 || a.E % 8 || a.Ev % 8 || a.E > 128 || a.Ev > 128) return false;
  for (const void* p : {a.q, a.k, a.v})
    if (reinterpret_cast<uintptr_t>(p) % 16) return false;
  if (a.q_rs % 8 || a.k_rs % 8 || a.v_rs % 8) return false;
  for (size_t i = 0; i < batch_rank; ++i)
    if (a.qb.s[i] % 8 || a.kb.s[i] % 8 || a.vb.s[i] % 8) return false;
  return true;
}

// Where q, k or v lives: its first element, logical dims, batch strides broadcast against the
// output batch dims, and row stride, all in elements. A builder view picks elements of the
// layer's input; without one the input is a dense [*batch, L, E].
struct Operand {
  const void* data;
  std::vector<int64_t> dims, batch_strides;
  int64_t row_stride;
};
Operand operand(const TensorView& t, const std::optional<StridedView>& view, const std::vector<int64_t>& out_batch) {
  Operand o;
  std::vector<int64_t> st;
  if (view) {
    o.data = static_cast<const char*>(t.data) + view->offset * int64_t(element_size(t.dtype));
    o.dims = view->dims;
    st = view->strides;
  } else {
    o.data = t.data;
    o.dims = t.dims;
    st = t.contiguous_strides();
  }
  const size_t r = o.dims.size();
  o.row_stride = st[r - 2];
  std::vector<int64_t> bd(o.dims.begin(), o.dims.end() - 2), bs(st.begin(), st.end() - 2);
  // broadcast: batch dims right-aligned to the output's, size-1 dims step 0
  o.batch_strides.assign(out_batch.size(), 0);
  for (size_t i = 0; i < bd.size(); ++i) {
    const size_t od = out_batch.size() - bd.size() + i;
    o.batch_strides[od] = bd[i] == 1 ? 0 : bs[i];
  }
  return o;
}

}  // namespace

void run_attention(Context& ctx, const AttentionParams& p, LayerCall& call) {
  const TensorView& y = call.outputs.at(0);
  const DataType dtype = call.inputs.at(0).dtype;
  if (call.inputs.at(1).dtype != dtype || call.inputs.at(2).dtype != dtype) fail(call.layer, "q, k, v must share a dtype");
  if (y.dims.size() < 2) fail(call.layer, "q, k, v must share a rank >= 2");
  // The output's logical dims [*batch, Lq, Ev] and their strides in the (maybe permuted) buffer.
  const size_t out_rank = y.dims.size();
  std::vector<int64_t> logical = y.dims, out_strides = y.contiguous_strides();
  if (!p.output_perm.empty()) {
    if (p.output_perm.size() != out_rank) fail(call.layer, "output_perm does not match the output's rank");
    std::vector<int64_t> physical = out_strides;
    for (size_t j = 0; j < out_rank; ++j) {
      logical.at(p.output_perm[j]) = y.dims[j];
      out_strides.at(p.output_perm[j]) = physical[j];
    }
  }
  std::vector<int64_t> ob(logical.begin(), logical.end() - 2);
  auto view_of = [&](size_t i) { return i < p.views.size() ? p.views[i] : std::nullopt; };
  const Operand q = operand(call.inputs.at(0), view_of(0), ob), k = operand(call.inputs.at(1), view_of(1), ob),
                v = operand(call.inputs.at(2), view_of(2), ob);
  const size_t rank = q.dims.size();
  if (rank < 2 || k.dims.size() != rank || v.dims.size() != rank) fail(call.layer, "q, k, v must share a rank >= 2");
  AttnArgs a{};
  a.Lq = q.dims[rank - 2];
  a.E = q.dims[rank - 1];
  a.Lk = k.dims[rank - 2];
  a.Ev = v.dims[rank - 1];
  a.q_rs = q.row_stride;
  a.k_rs = k.row_stride;
  a.v_rs = v.row_stride;
  if (y.numel() == 0) return;
  if (a.Ev > 256) fail(call.layer, "value head size above 256 is not supported on CUDA");
  if (ob.size() > size_t(kMaxRank)) fail(call.layer, "rank above 10");
  const int64_t batch = product(ob);
  a.batch = make_dims(ob);
  a.qb = make_strides(q.batch_strides);
  a.kb = make_strides(k.batch_strides);
  a.vb = make_strides(v.batch_strides);
  a.ob = make_strides(std::vector<int64_t>(out_strides.begin(), out_strides.end() - 2));
  a.o_rs = out_strides[out_rank - 2];
  if (out_strides[out_rank - 1] != 1) fail(call.layer, "the output's last dim must stay last");
  a.q = q.data; a.k = k.data; a.v = v.data; a.out = y.data;
  a.scale = static_cast<float>(p.scale ? *p.scale : 1.0 / std::sqrt(double(a.E)));
  a.causal = p.causal;
  std::vector<int64_t> mask_batch_strides;
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
    mask_batch_strides.assign(ms.begin(), ms.end() - 2);
    a.mb = make_strides(mask_batch_strides);
  }
  const size_t smem = sizeof(float) * (kTile * (a.E + 1) + kTile * a.Ev + kRows * a.E);
  if (smem > ctx.max_smem_optin) fail(call.layer, "head size too large for shared memory");
  if (batch > 65535) fail(call.layer, "batch above 65535");
  const int64_t head = std::max(a.E, a.Ev);
  const int64_t dp = head <= 32 ? 32 : head <= 64 ? 64 : 128;
  const size_t mma_smem = size_t(4) * kMmaKeys * (dp + 8) * 2;  // two stages of K and V tiles, 16-bit
  const bool use_mma = mma_applicable(dtype, a, ob.size()) && mma_smem <= ctx.max_smem_optin;
  // kiln's kernel writing to `out` (the layer's output, or a tactic candidate's scratch copy).
  auto run_kiln = [&](void* out) {
    AttnArgs args = a;
    args.out = out;
    if (use_mma) {
      dim3 grid(static_cast<unsigned>(ceil_div(a.Lq, kMmaRows)), static_cast<unsigned>(batch));
      auto launch = [&](auto kernel) {
        if (mma_smem > 48 * 1024)
          KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(mma_smem)));
        kernel<<<grid, kMmaWarps * 32, mma_smem, ctx.stream>>>(args);
      };
      if (dtype == DataType::kFloat16) {
        if (dp == 32) launch(attention_mma<__half, 32>);
        else if (dp == 64) launch(attention_mma<__half, 64>);
        else launch(attention_mma<__half, 128>);
      } else {
        if (dp == 32) launch(attention_mma<__nv_bfloat16, 32>);
        else if (dp == 64) launch(attention_mma<__nv_bfloat16, 64>);
        else launch(attention_mma<__nv_bfloat16, 128>);
      }
      KILN_CUDA_LAUNCH_CHECK();
      return;
    }
    dim3 grid(static_cast<unsigned>(ceil_div(a.Lq, kRows)), static_cast<unsigned>(batch));
    dispatch_float(dtype, call.layer, [&](auto t) {
      using T = decltype(t);
      auto launch = [&](auto kernel) {
        if (smem > 48 * 1024)
          KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
        kernel<<<grid, kRows * 32, smem, ctx.stream>>>(args);
      };
      if (a.Ev <= 32) launch(attention_kernel<T, 1>);
      else if (a.Ev <= 64) launch(attention_kernel<T, 2>);
      else if (a.Ev <= 128) launch(attention_kernel<T, 4>);
      else launch(attention_kernel<T, 8>);
    });
    KILN_CUDA_LAUNCH_CHECK();
  };
  // The same call for the tactic choice (attention_tactic.h): kiln's kernel or cuDNN's fused
  // attention, whichever is faster for this shape.
  AttentionCall c;
  c.dtype = dtype;
  c.batch = ob;
  c.Lq = a.Lq, c.Lk = a.Lk, c.E = a.E, c.Ev = a.Ev;
  c.q = q.data, c.k = k.data, c.v = v.data, c.out = y.data;
  c.out_bytes = y.nbytes();
  c.q_batch = q.batch_strides, c.k_batch = k.batch_strides, c.v_batch = v.batch_strides;
  c.out_batch.assign(out_strides.begin(), out_strides.end() - 2);
  c.q_row = a.q_rs, c.k_row = a.k_rs, c.v_row = a.v_rs, c.out_row = a.o_rs;
  c.causal = a.causal;
  c.scale = a.scale;
  if (p.has_mask) {
    c.mask = a.mask;
    c.mask_dtype = call.inputs.at(3).dtype;
    c.mask_batch = mask_batch_strides;
    c.mask_row = a.mask_sq, c.mask_col = a.mask_sk;
  }
  run_attention_tactic(ctx, call.layer, c, run_kiln);
}

}  // namespace kiln::engine::cuda
