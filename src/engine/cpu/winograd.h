// Winograd F(2x2, 3x3) convolution for the CPU backend (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2015): each 2x2 block of outputs from a 4x4 input tile with 16
// multiplies per (input, output) channel pair instead of 36, the multiplies done as 16 GEMMs
// [C_out x C_in] x [C_in x tiles]. For stride-1, undilated, ungrouped 3x3 convolutions over
// [N, C, H, W] fp32 data with enough channels and tiles that the GEMMs dominate the transforms.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kiln::engine::cpu::winograd {

struct Shape {
  int64_t N, C_in, C_out, H, W, pad_h, pad_w, OH, OW;
};

// Whether it beats im2col + GEMM for this shape.
bool worthwhile(const Shape& s);
// Floats of scratch `convolve` needs.
size_t workspace_floats(const Shape& s);
// y[N, C_out, OH, OW] = conv(x[N, C_in, H, W], w[C_out, C_in, 3, 3]), no bias.
void convolve(const Shape& s, const float* x, const float* w, float* y, float* workspace);

}  // namespace kiln::engine::cpu::winograd
