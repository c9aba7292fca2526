// Winograd F(2x2, 3x3) (see winograd.h). With d a 4x4 input tile, g a 3x3 filter and
//   Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1],
//   Aᵀ = [1 1 1 0; 0 1 -1 -1],
// the 2x2 outputs are Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A. The 16 element-wise products summed over
// input channels are 16 matrix products, one per position of the 4x4 transformed tile.
#include "engine/cpu/winograd.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "engine/cpu/common.h"

namespace kiln::engine::cpu::winograd {
namespace {

int64_t tiles_h(const Shape& s) { return (s.OH + 1) / 2; }
int64_t tiles_w(const Shape& s) { return (s.OW + 1) / 2; }

}  // namespace

bool worthwhile(const Shape& s) {
  // Measured on 2 cores against im2col + GEMM (~190 GFLOP/s): faster from 32 channels while the
  // batch has at least half as many tiles as channels; with fewer tiles, transforming the filters
  // (16 x C_out x C_in values, redone every call) costs more than the multiplies saved.
  return s.C_in >= 32 && s.C_out >= 32 && 2 * s.N * tiles_h(s) * tiles_w(s) >= std::max(s.C_in, s.C_out);
}

size_t workspace_floats(const Shape& s) {
  const int64_t T = tiles_h(s) * tiles_w(s);
  return size_t(16 * s.C_out * s.C_in + 16 * s.C_in * T + 16 * s.C_out * T);
}

void convolve(const Shape& s, const float* x, const float* w, float* y, float* workspace) {
  const int64_t TH = tiles_h(s), TW = tiles_w(s), T = TH * TW, Ci = s.C_in, Co = s.C_out;
  float* U = workspace;           // [16][Co][Ci]: transformed filters
  float* V = U + 16 * Co * Ci;    // [16][Ci][T]:  transformed input tiles of one sample
  float* M = V + 16 * Ci * T;     // [16][Co][T]:  their products

  // U = G g Gᵀ for every (output, input) channel pair.
  parallel_for(Co * Ci, Co * Ci * 16 > kParallelGrain, [&](int64_t kc) {
    const float* g = w + kc * 9;
    float t[4][3];  // G g
    for (int j = 0; j < 3; ++j) {
      const float a = g[j], b = g[3 + j], c = g[6 + j];
      t[0][j] = a;
      t[1][j] = 0.5f * (a + b + c);
      t[2][j] = 0.5f * (a - b + c);
      t[3][j] = c;
    }
    for (int i = 0; i < 4; ++i) {
      const float a = t[i][0], b = t[i][1], c = t[i][2];
      const float u[4] = {a, 0.5f * (a + b + c), 0.5f * (a - b + c), c};
      for (int j = 0; j < 4; ++j) U[(i * 4 + j) * Co * Ci + kc] = u[j];
    }
  });

  for (int64_t n = 0; n < s.N; ++n) {
    const float* xn = x + n * Ci * s.H * s.W;
    float* yn = y + n * Co * s.OH * s.OW;
    // V = Bᵀ d B for every input channel and tile, a row of tiles at a time so every loop runs
    // along the row (vectorizable): the tiles' 4 input rows, zero-padded, combined (Bᵀ), then each
    // tile's 4 columns of the result combined (B).
    const int64_t Wp = 2 * TW + 2;  // the padded width a row of tiles reads
    parallel_for(Ci * TH, Ci * T * 16 > kParallelGrain, [&](int64_t ct) {
      const int64_t c = ct / TH, ty = ct % TH;
      const float* xc = xn + c * s.H * s.W;
      thread_local std::vector<float> buf;
      buf.assign(size_t(8 * Wp), 0.0f);
      float* rows = buf.data();        // [4][Wp] input rows
      float* comb = rows + 4 * Wp;     // [4][Wp] Bᵀ of them
      const int64_t lo = std::max<int64_t>(0, s.pad_w), hi = std::min<int64_t>(Wp, s.W + s.pad_w);
      for (int i = 0; i < 4; ++i) {
        const int64_t r = 2 * ty - s.pad_h + i;
        if (r >= 0 && r < s.H && hi > lo) std::copy(xc + r * s.W + (lo - s.pad_w), xc + r * s.W + (hi - s.pad_w), rows + i * Wp + lo);
      }
      const float *d0 = rows, *d1 = rows + Wp, *d2 = rows + 2 * Wp, *d3 = rows + 3 * Wp;
      float *t0 = comb, *t1 = comb + Wp, *t2 = comb + 2 * Wp, *t3 = comb + 3 * Wp;
      for (int64_t q = 0; q < Wp; ++q) {
        t0[q] = d0[q] - d2[q];
        t1[q] = d1[q] + d2[q];
        t2[q] = d2[q] - d1[q];
        t3[q] = d1[q] - d3[q];
      }
      for (int i = 0; i < 4; ++i) {
        const float* t = comb + i * Wp;
        float* v0 = V + ((4 * i + 0) * Ci + c) * T + ty * TW;
        float* v1 = V + ((4 * i + 1) * Ci + c) * T + ty * TW;
        float* v2 = V + ((4 * i + 2) * Ci + c) * T + ty * TW;
        float* v3 = V + ((4 * i + 3) * Ci + c) * T + ty * TW;
        for (int64_t tx = 0; tx < TW; ++tx) {
          const float a = t[2 * tx], b = t[2 * tx + 1], cc = t[2 * tx + 2], d = t[2 * tx + 3];
          v0[tx] = a - cc;
          v1[tx] = b + cc;
          v2[tx] = cc - b;
          v3[tx] = b - d;
        }
      }
    });
    // M[e] = U[e] · V[e]: the channel sums, as 16 GEMMs (OpenBLAS threads them).
    for (int e = 0; e < 16; ++e)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(Co), int(T), int(Ci), 1.0f, U + e * Co * Ci, int(Ci),
                  V + e * Ci * T, int(T), 0.0f, M + e * Co * T, int(T));
    // y = Aᵀ m A for every output channel and tile, a row of tiles at a time: the 16 transformed
    // rows combined (Aᵀ) into 2 x 4, then each tile's 4 columns into 2 (A); the last row/column of
    // tiles may hang over the output.
    parallel_for(Co * TH, Co * T * 16 > kParallelGrain, [&](int64_t kt) {
      const int64_t k = kt / TH, ty = kt % TH;
      thread_local std::vector<float> buf;
      buf.resize(size_t(8 * TW + 4 * TW));
      float* t = buf.data();            // [2][4][TW]: Aᵀ m
      float* out = t + 8 * TW;          // [2][2 * TW]: output rows, full tiles
      auto m = [&](int e) { return M + (e * Co + k) * T + ty * TW; };
      for (int j = 0; j < 4; ++j) {
        const float *m0 = m(j), *m1 = m(4 + j), *m2 = m(8 + j), *m3 = m(12 + j);
        float *r0 = t + j * TW, *r1 = t + (4 + j) * TW;
        for (int64_t tx = 0; tx < TW; ++tx) {
          r0[tx] = m0[tx] + m1[tx] + m2[tx];
          r1[tx] = m1[tx] - m2[tx] - m3[tx];
        }
      }
      for (int i = 0; i < 2; ++i) {
        const float *a = t + (4 * i) * TW, *b = a + TW, *c = b + TW, *d = c + TW;
        float* o = out + i * 2 * TW;
        for (int64_t tx = 0; tx < TW; ++tx) {
          o[2 * tx] = a[tx] + b[tx] + c[tx];
          o[2 * tx + 1] = b[tx] - c[tx] - d[tx];
        }
        const int64_t r = 2 * ty + i;
        if (r < s.OH) std::copy(o, o + s.OW, yn + (k * s.OH + r) * s.OW);
      }
    });
  }
}

}  // namespace kiln::engine::cpu::winograd
