// Winograd F(2x2, 3x3) (see winograd.h). With d a 4x4 input tile, g a 3x3 filter and
//   Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1],
//   Aᵀ = [1 1 1 0; 0 1 -1 -1],
// the 2x2 outputs are Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A. The 16 element-wise products summed over
// input channels are 16 matrix products, one per position of the 4x4 transformed tile.
#include "engine/cpu/winograd.h"

#include <cblas.h>

#include <algorithm>

#include "engine/cpu/parallel.h"

namespace kiln::engine::cpu::winograd {
namespace {

constexpr int64_t kGrain = 32768;

int64_t tiles_h(const Shape& s) { return (s.OH + 1) / 2; }
int64_t tiles_w(const Shape& s) { return (s.OW + 1) / 2; }

// Bᵀ v for one column (or row) of 4.
inline void input_1d(const float* v, int64_t step, float* out, int64_t out_step) {
  const float a = v[0], b = v[step], c = v[2 * step], d = v[3 * step];
  out[0] = a - c;
  out[out_step] = b + c;
  out[2 * out_step] = c - b;
  out[3 * out_step] = b - d;
}

}  // namespace

bool worthwhile(const Shape& s) {
  // Measured on 2 cores against im2col + GEMM (~190 GFLOP/s): faster from 128 channels when the
  // tiles of the batch outnumber the channels; below that the tile transforms (which scale with
  // channels x tiles, not channels²) or the filter transform (redone every call) cost more than the
  // multiplies saved.
  return s.C_in >= 128 && s.C_out >= 128 && s.N * tiles_h(s) * tiles_w(s) >= std::max(s.C_in, s.C_out);
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
  parallel_for(Co * Ci, Co * Ci * 16 > kGrain, [&](int64_t kc) {
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
    // V = Bᵀ d B for every input channel and tile (padding reads as zeros).
    parallel_for(Ci * TH, Ci * T * 16 > kGrain, [&](int64_t ct) {
      const int64_t c = ct / TH, ty = ct % TH;
      const float* xc = xn + c * s.H * s.W;
      for (int64_t tx = 0; tx < TW; ++tx) {
        float d[16];
        const int64_t r0 = 2 * ty - s.pad_h, c0 = 2 * tx - s.pad_w;
        for (int i = 0; i < 4; ++i) {
          const int64_t r = r0 + i;
          for (int j = 0; j < 4; ++j) {
            const int64_t col = c0 + j;
            d[i * 4 + j] = (r >= 0 && r < s.H && col >= 0 && col < s.W) ? xc[r * s.W + col] : 0.0f;
          }
        }
        float t[16], v[16];
        for (int j = 0; j < 4; ++j) input_1d(d + j, 4, t + j, 4);  // Bᵀ d (columns)
        for (int i = 0; i < 4; ++i) input_1d(t + 4 * i, 1, v + 4 * i, 1);  // (Bᵀ d) B (rows)
        const int64_t tile = ty * TW + tx;
        for (int e = 0; e < 16; ++e) V[(e * Ci + c) * T + tile] = v[e];
      }
    });
    // M[e] = U[e] · V[e]: the channel sums, as 16 GEMMs (OpenBLAS threads them).
    for (int e = 0; e < 16; ++e)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(Co), int(T), int(Ci), 1.0f, U + e * Co * Ci, int(Ci),
                  V + e * Ci * T, int(T), 0.0f, M + e * Co * T, int(T));
    // y = Aᵀ m A for every output channel and tile; the last row/column of tiles may hang over.
    parallel_for(Co * TH, Co * T * 16 > kGrain, [&](int64_t kt) {
      const int64_t k = kt / TH, ty = kt % TH;
      float* yk = yn + k * s.OH * s.OW;
      for (int64_t tx = 0; tx < TW; ++tx) {
        const int64_t tile = ty * TW + tx;
        float m[16];
        for (int e = 0; e < 16; ++e) m[e] = M[(e * Co + k) * T + tile];
        float t[2][4];  // Aᵀ m
        for (int j = 0; j < 4; ++j) {
          t[0][j] = m[j] + m[4 + j] + m[8 + j];
          t[1][j] = m[4 + j] - m[8 + j] - m[12 + j];
        }
        for (int i = 0; i < 2; ++i) {
          const int64_t r = 2 * ty + i;
          if (r >= s.OH) break;
          const float o0 = t[i][0] + t[i][1] + t[i][2], o1 = t[i][1] - t[i][2] - t[i][3];
          const int64_t col = 2 * tx;
          yk[r * s.OW + col] = o0;
          if (col + 1 < s.OW) yk[r * s.OW + col + 1] = o1;
        }
      }
    });
  }
}

}  // namespace kiln::engine::cpu::winograd
