// The tiled depthwise kernels of 7x7 filters, fp16 and bf16 (depthwise_kernels.cuh).
#include "engine/cuda/depthwise_kernels.cuh"

namespace kiln::engine::cuda::dw {

void tiled_7x7(const Launch& a, DataType dtype, DepthwiseKernel kernel) { tiled_by_type<7>(a, dtype, kernel); }

}  // namespace kiln::engine::cuda::dw
