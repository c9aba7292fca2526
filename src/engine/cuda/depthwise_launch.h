// Internal to src/engine/cuda/: one depthwise convolution launch. depthwise.cpp decides which
// kernel; the kernels are compiled in depthwise_rows_{f32,f16,bf16}.cu and
// depthwise_tiled_{3x3,5x5,7x7}.cu, so their ~90 template instances build in parallel (in one
// translation unit they took 150 s of nvcc, the longest step of a GPU build).
#pragma once

#include <cuda_runtime.h>

#include "engine/cuda/internal.h"

namespace kiln::engine::cuda::dw {

struct DwGeom {
  int N, H, W, C, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW;
  int tiles_w;  // ceil(OW / TW)
};

// Pointers (of the storage type the function's name says), geometry, fused epilogue, stream.
struct Launch {
  const void* x;
  const void* w;
  const void* bias;      // null: none
  const void* residual;  // null: none
  void* y;
  DwGeom g;
  int act;  // ActivationOp, or -1 for none
  float alpha, beta;
  cudaStream_t stream;
  int sm_count;
};

constexpr int kTileW = 4;  // output pixels along a row per thread in the generic and unrolled kernels

// The tiled kernel (fp16/bf16 `dtype`, stride 1 or 2, channels a multiple of 4, 16-byte aligned) of
// a 3x3, 5x5 or 7x7 filter: kernel picks the tile (kTiled 4x4, kTiledShort 2x4, kTiledPair 1x2,
// kTiledPixel 1x1).
void tiled_3x3(const Launch& a, DataType dtype, DepthwiseKernel kernel);
void tiled_5x5(const Launch& a, DataType dtype, DepthwiseKernel kernel);
void tiled_7x7(const Launch& a, DataType dtype, DepthwiseKernel kernel);
// The row kernels: unrolled for 3x3/5x5/7x7 filters at stride 1 or 2 without dilation when
// `unrolled`, else the generic one; 8 channels per thread when `vec8`.
void rows_f32(const Launch& a, bool vec8, bool unrolled);
void rows_f16(const Launch& a, bool vec8, bool unrolled);
void rows_bf16(const Launch& a, bool vec8, bool unrolled);

}  // namespace kiln::engine::cuda::dw
