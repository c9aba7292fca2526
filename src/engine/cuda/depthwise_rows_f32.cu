// The generic and unrolled depthwise kernels for f32 storage (depthwise_kernels.cuh).
#include "engine/cuda/depthwise_kernels.cuh"

namespace kiln::engine::cuda::dw {

void rows_f32(const Launch& a, bool vec8, bool unrolled) { rows<float>(a, vec8, unrolled); }

}  // namespace kiln::engine::cuda::dw
