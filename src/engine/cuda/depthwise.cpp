// Depthwise 2-d convolution of channels-last data ([N, H, W, C] in and out, one filter per channel,
// weights [C, kh, kw, 1]) with bias, residual and activation applied before the single store.
//
// Why kiln has its own: cuDNN's legacy API runs depthwise convolutions (ConvNeXt's 7x7,
// MobileNet's and EfficientNet's 3x3/5x5) through generic grouped kernels that, measured on the
// H200, spend 10-50x the time the data movement needs. A depthwise convolution is memory-bound
// (kh*kw multiply-adds per element loaded), so the kernel is built around loads:
//  - each thread owns VEC neighbouring channels (16-byte loads when C % 8 == 0) of TW
//    neighbouring output pixels along a row, so a warp reads whole 16-byte-aligned channel rows;
//  - with unit dilation the TW outputs share input columns: each input vector of a filter row is
//    loaded once and feeds every output it touches (TW + kw - 1 loads per row instead of TW*kw);
//  - the block's filters (fp32) sit in shared memory, read as broadcasts.
// Which of this kernel and cuDNN runs is decided per shape by timing both (convolution.cpp).
// The kernels live in depthwise_kernels.cuh, compiled in several parts (depthwise_launch.h).
#include "engine/cuda/depthwise_launch.h"

namespace kiln::engine::cuda {

bool depthwise_tiled(const ConvolutionParams& p, const TensorView& x, const TensorView& w) {
  return depthwise_unrolled(p, w) && x.dims.size() == 4 && x.dims[3] % 4 == 0 &&
         (x.dtype == DataType::kFloat16 || x.dtype == DataType::kBFloat16);
}

bool depthwise_unrolled(const ConvolutionParams& p, const TensorView& w) {
  auto all = [](const std::vector<int64_t>& v, int64_t want) {
    for (int64_t e : v)
      if (e != want) return false;
    return true;
  };
  const bool square_stride = p.stride.size() < 2 || p.stride[0] == p.stride[1];
  const int64_t s = p.stride.empty() ? 1 : p.stride[0];
  return all(p.dilation, 1) && square_stride && (s == 1 || s == 2) && w.dims[1] == w.dims[2] &&
         (w.dims[2] == 3 || w.dims[2] == 5 || w.dims[2] == 7);
}

bool depthwise_supported(const ConvolutionParams& p, const TensorView& x, const TensorView& w, const TensorView& y) {
  if (!p.channels_last || p.transposed || x.dims.size() != 4 || w.dims.size() != 4 || !is_floating(x.dtype))
    return false;
  const int64_t C = x.dims[3];
  if (p.groups != C || w.dims[0] != C || w.dims[3] != 1 || y.dims[3] != C) return false;
  if (!x.is_contiguous() || !y.is_contiguous()) return false;
  // 32-bit pixel indices and the filters of one block in 48 KiB of shared memory.
  if (x.numel() >= (int64_t(1) << 31) || y.numel() >= (int64_t(1) << 31)) return false;
  return w.dims[1] * w.dims[2] <= 81;
}

void run_depthwise(Context& ctx, const Layer& layer, const ConvolutionParams& p, const TensorView& x,
                   const TensorView& w, const TensorView* bias, const TensorView* residual, const TensorView& y,
                   DepthwiseKernel kernel) {
  dw::Launch a{};
  dw::DwGeom& g = a.g;
  g.N = int(x.dims[0]), g.H = int(x.dims[1]), g.W = int(x.dims[2]), g.C = int(x.dims[3]);
  g.OH = int(y.dims[1]), g.OW = int(y.dims[2]);
  g.KH = int(w.dims[1]), g.KW = int(w.dims[2]);
  auto at = [](const std::vector<int64_t>& v, size_t i, int64_t dflt) { return int(i < v.size() ? v[i] : dflt); };
  g.SH = at(p.stride, 0, 1), g.SW = at(p.stride, p.stride.size() > 1 ? 1 : 0, 1);
  g.PH = at(p.padding, 0, 0), g.PW = at(p.padding, p.padding.size() > 1 ? 1 : 0, 0);
  g.DH = at(p.dilation, 0, 1), g.DW = at(p.dilation, p.dilation.size() > 1 ? 1 : 0, 1);
  g.tiles_w = int(ceil_div(g.OW, dw::kTileW));
  a.act = p.activation ? int(p.activation->op) : -1;
  a.alpha = p.activation ? float(p.activation->alpha) : 0.f;
  a.beta = p.activation ? float(p.activation->beta) : 0.f;
  a.x = x.data, a.w = w.data, a.bias = bias ? bias->data : nullptr, a.residual = residual ? residual->data : nullptr;
  a.y = y.data, a.stream = ctx.stream, a.sm_count = ctx.sm_count;
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  const bool aligned_all = aligned(x.data) && aligned(y.data) && (!residual || aligned(residual->data));
  const bool tiled_kernel = kernel != DepthwiseKernel::kGeneric && kernel != DepthwiseKernel::kUnrolled;
  if (tiled_kernel && depthwise_tiled(p, x, w) && aligned_all) {
    // depthwise_tiled: fp16 or bf16, a 3x3, 5x5 or 7x7 filter.
    if (g.KW == 3) dw::tiled_3x3(a, x.dtype, kernel);
    else if (g.KW == 5) dw::tiled_5x5(a, x.dtype, kernel);
    else dw::tiled_7x7(a, x.dtype, kernel);
    KILN_CUDA_LAUNCH_CHECK();
    return;
  }
  const bool vec8 = g.C % 8 == 0 && aligned_all;
  const bool unrolled = kernel != DepthwiseKernel::kGeneric;
  switch (x.dtype) {
    case DataType::kFloat32: dw::rows_f32(a, vec8, unrolled); break;
    case DataType::kFloat16: dw::rows_f16(a, vec8, unrolled); break;
    case DataType::kBFloat16: dw::rows_bf16(a, vec8, unrolled); break;
    default: fail(layer, std::string("CUDA kernel needs a float dtype, got ") + to_string(x.dtype));
  }
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::engine::cuda
