// Tactic selection's device helpers: how far a candidate's output is from a reference output
// (every candidate is checked against a reference before its time is trusted: an engine that
// computes the wrong thing fast must not win), and a kernel that holds the stream while the host
// queues the launches being timed.
#include <cstring>

#include "engine/cuda/device.cuh"

namespace kiln::engine::cuda {

namespace {

// Non-negative floats order like their bit patterns, so atomicMax on the bits is a float max.
__device__ __forceinline__ void atomic_max_nonneg(unsigned* slot, float v) { atomicMax(slot, __float_as_uint(v)); }

template <class T>
__global__ void max_abs_and_diff(const T* __restrict__ got, const T* __restrict__ want, int64_t n, unsigned* out) {
  float diff = 0.f, mag = 0.f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_float(got[i]), w = to_float(want[i]);
    const float d = fabsf(g - w);
    diff = fmaxf(diff, d != d ? INFINITY : d);  // a NaN where the reference has none counts as infinitely far
    mag = fmaxf(mag, fabsf(w));
  }
  for (int off = 16; off > 0; off >>= 1) {
    diff = fmaxf(diff, __shfl_xor_sync(0xffffffffu, diff, off));
    mag = fmaxf(mag, __shfl_xor_sync(0xffffffffu, mag, off));
  }
  if ((threadIdx.x & 31) == 0) {
    atomic_max_nonneg(out, diff);
    atomic_max_nonneg(out + 1, mag);
  }
}

// Waits `ns` nanoseconds of the GPU's global timer on one thread.
__global__ void hold_for(unsigned long long ns) {
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    __nanosleep(2000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < ns);
}

}  // namespace

void hold_stream(Context& ctx, double microseconds) {
  hold_for<<<1, 1, 0, ctx.stream>>>((unsigned long long)(microseconds * 1000.0));
  KILN_CUDA_LAUNCH_CHECK();
}

float relative_difference(Context& ctx, const void* got, const void* want, DataType t, int64_t n) {
  unsigned* dev = nullptr;
  KILN_CUDA_CHECK(cudaMalloc(&dev, 2 * sizeof(unsigned)));
  KILN_CUDA_CHECK(cudaMemsetAsync(dev, 0, 2 * sizeof(unsigned), ctx.stream));
  const unsigned grid = grid_for(ctx, n, 256);
  switch (t) {
    case DataType::kFloat16:
      max_abs_and_diff<<<grid, 256, 0, ctx.stream>>>(static_cast<const __half*>(got), static_cast<const __half*>(want), n, dev);
      break;
    case DataType::kBFloat16:
      max_abs_and_diff<<<grid, 256, 0, ctx.stream>>>(static_cast<const __nv_bfloat16*>(got),
                                                     static_cast<const __nv_bfloat16*>(want), n, dev);
      break;
    default:
      max_abs_and_diff<<<grid, 256, 0, ctx.stream>>>(static_cast<const float*>(got), static_cast<const float*>(want), n, dev);
  }
  KILN_CUDA_LAUNCH_CHECK();
  unsigned host[2] = {0, 0};
  KILN_CUDA_CHECK(cudaMemcpyAsync(host, dev, sizeof host, cudaMemcpyDeviceToHost, ctx.stream));
  KILN_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  cudaFree(dev);
  float diff, mag;
  std::memcpy(&diff, &host[0], sizeof diff);
  std::memcpy(&mag, &host[1], sizeof mag);
  return mag > 0 ? diff / mag : diff;
}

}  // namespace kiln::engine::cuda
