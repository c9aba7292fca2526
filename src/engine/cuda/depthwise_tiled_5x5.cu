// The tiled depthwise kernels of 5x5 filters, fp16 and bf16 (depthwise_kernels.cuh).
#include "engine/cuda/depthwise_kernels.cuh"

namespace kiln::engine::cuda::dw {

void tiled_5x5(const Launch& a, DataType dtype, DepthwiseKernel kernel) { tiled_by_type<5>(a, dtype, kernel); }

}  // namespace kiln::engine::cuda::dw
