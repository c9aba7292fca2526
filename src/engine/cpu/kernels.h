// One `run` overload per layer kind; dispatch.cpp visits LayerParams over these, so a layer kind
// without a CPU kernel fails to compile. Internal to src/engine/cpu/.
#pragma once

#include <functional>

#include "engine/backend.h"
#include "engine/cpu/common.h"
#include "engine/network.h"
#include "engine/network_internal.h"

namespace kiln::engine::cpu {

void run(const ConstantParams& p, LayerCall& call);        // misc.cpp
void run(const ElementwiseParams& p, LayerCall& call);     // elementwise.cpp
void run(const UnaryParams& p, LayerCall& call);           // unary_activation.cpp
void run(const ActivationParams& p, LayerCall& call);      // unary_activation.cpp
void run(const MatMulParams& p, LayerCall& call);          // matmul.cpp
void run(const ConvolutionParams& p, LayerCall& call);     // convolution.cpp
void run(const PoolingParams& p, LayerCall& call);         // pooling.cpp
void run(const ReduceParams& p, LayerCall& call);          // reduce.cpp
void run(const SoftmaxParams& p, LayerCall& call);         // softmax_norm.cpp
void run(const NormalizationParams& p, LayerCall& call);   // softmax_norm.cpp
void run(const ShuffleParams& p, LayerCall& call);         // shuffle_concat_slice.cpp
void run(const ConcatParams& p, LayerCall& call);          // shuffle_concat_slice.cpp
void run(const SliceParams& p, LayerCall& call);           // shuffle_concat_slice.cpp
void run(const GatherParams& p, LayerCall& call);          // gather_scatter.cpp
void run(const ScatterParams& p, LayerCall& call);         // gather_scatter.cpp
void run(const SelectParams& p, LayerCall& call);          // misc.cpp
void run(const CastParams& p, LayerCall& call);            // misc.cpp
void run(const ShapeParams& p, LayerCall& call);           // misc.cpp
void run(const FillParams& p, LayerCall& call);            // misc.cpp
void run(const PadParams& p, LayerCall& call);             // misc.cpp
void run(const ResizeParams& p, LayerCall& call);          // misc.cpp
void run(const CumSumParams& p, LayerCall& call);          // misc.cpp
void run(const TopKParams& p, LayerCall& call);            // misc.cpp
void run(const IdentityParams& p, LayerCall& call);        // misc.cpp
void run(const NonZeroParams& p, LayerCall& call);         // misc.cpp
void run(const AttentionParams& p, LayerCall& call);       // attention.cpp
void run(const PluginParams& p, LayerCall& call);          // plugin.cpp
void run(const FusedPointwiseParams& p, LayerCall& call);  // pointwise_fused.cpp
// How many fused programs have run in blocks of whole channels-last rows (tests: the path ran).
uint64_t fused_row_block_runs();

// Scratch sizes (bytes) of the kernels that need any.
size_t convolution_workspace(const ConvolutionParams& p, const std::vector<TensorView>& inputs);

// out (contiguous, `dims`) = src[base + sum(i_d * strides_d)], for any element size.
void strided_copy(const void* src, int64_t base, const std::vector<int64_t>& dims,
                  const std::vector<int64_t>& strides, void* dst, size_t elem);
// dst = `in` (contiguous, in_dims) permuted: dst dim i is in dim perm[i].
void permute_copy(const void* in, const std::vector<int64_t>& in_dims, const std::vector<int64_t>& perm, void* dst,
                  size_t elem);

// Channels-last layers (CUDA's layout) run here through their NCHW kernels between permutes.
using detail::kToNchw;
using detail::kToNhwc;
std::vector<int64_t> reorder(const std::vector<int64_t>& dims, const std::vector<int64_t>& perm);
// `t` permuted into `storage`, as a contiguous view.
TensorView permuted(const TensorView& t, const std::vector<int64_t>& perm, std::vector<uint8_t>& storage);
// A channels-last call run by `nchw` (the layer's NCHW kernel): the inputs listed permuted to
// NCHW, the output written back in NHWC.
void run_via_nchw(const LayerCall& call, const std::vector<size_t>& permuted_inputs,
                  const std::function<void(LayerCall&)>& nchw);

// Applies bias (broadcast to `out`'s dims) and an optional activation in place on fp32 data;
// the epilogue of matmul and convolution.
void apply_activation_inplace(float* data, int64_t n, const ActivationParams& act);
// The residual of an n-element output as fp32 (its element count checked).
FloatInput residual_as_float(const TensorView& residual, int64_t n);
// data[i] += residual[i] for the n elements of a residual of the output's shape (fp32 data).
void add_residual(float* data, const TensorView& residual, int64_t n);

}  // namespace kiln::engine::cpu
