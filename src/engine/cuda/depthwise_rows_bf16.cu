// The generic and unrolled depthwise kernels for bf16 storage (depthwise_kernels.cuh).
#include "engine/cuda/depthwise_kernels.cuh"

namespace kiln::engine::cuda::dw {

void rows_bf16(const Launch& a, bool vec8, bool unrolled) { rows<__nv_bfloat16>(a, vec8, unrolled); }

}  // namespace kiln::engine::cuda::dw
