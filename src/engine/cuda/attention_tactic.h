// How a CUDA attention layer runs, chosen per shape the first time the shape is seen (never inside
// a graph capture), as convolutions choose theirs: kiln's kernel (attention.cu) or cuDNN's fused
// flash attention (cudnn_sdpa.h), whichever is faster on this GPU. cuDNN's output must match
// kiln's before its time counts. Shapes cuDNN cannot take (fp32, bool masks, head sizes that are
// not multiples of 8, layouts that do not fold into [batch, heads]) stay on kiln's kernel.
// KILN_ATTENTION_TACTIC=kiln or =cudnn forces one (tests, and users comparing them; a shape cuDNN
// declines still runs on kiln's kernel); KILN_LOG=debug prints each choice with its timings, or
// why cuDNN declined.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/cuda/internal.h"

namespace kiln::engine::cuda {

// One attention call as kiln's kernels see it, in elements: q, k, v and the mask read through
// batch strides broadcast to the output's logical batch dims (0 on broadcast dims), the output
// written through its own (maybe permuted) strides; every last dim has stride 1.
struct AttentionCall {
  DataType dtype = DataType::kFloat16;
  std::vector<int64_t> batch;  // the output's logical batch dims
  int64_t Lq = 0, Lk = 0, E = 0, Ev = 0;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  size_t out_bytes = 0;  // the whole output buffer (tactic candidates write scratch copies of it)
  std::vector<int64_t> q_batch, k_batch, v_batch, out_batch;  // batch strides
  int64_t q_row = 0, k_row = 0, v_row = 0, out_row = 0;      // row strides
  bool causal = false;
  float scale = 1.f;
  // Optional mask, broadcast to [*batch, Lq, Lk]: bool keeps where true, a float one is added.
  const void* mask = nullptr;
  DataType mask_dtype = DataType::kFloat32;
  std::vector<int64_t> mask_batch;
  int64_t mask_row = 0, mask_col = 0;
};

// Runs `call` the way chosen for its shape. `run_kiln(out)` launches kiln's kernel for the call
// with its output written to `out` (a buffer laid out as call.out): the reference and a candidate
// during the choice, and the fallback whenever cuDNN is not chosen or fails.
void run_attention_tactic(Context& ctx, const Layer& layer, const AttentionCall& call,
                          const std::function<void(void* out)>& run_kiln);

}  // namespace kiln::engine::cuda
