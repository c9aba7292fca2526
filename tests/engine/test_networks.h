// Networks more than one engine test builds, on the CPU (builder_test) and against the CUDA
// backend (cuda_compute_test).
#pragma once

#include <string>
#include <vector>

#include "engine/network.h"

namespace kiln::engine {

// Attention over a fused qkv projection: `qkv` [B, L, 3*H*D] split in three, each
// [B, L, H*D] -> [B, L, H, D] -> [B, H, L, D], causal attention, heads merged back to
// [B, L, H*D] and marked as output "y". (The builder reads all three through strided views.)
inline void add_qkv_attention(Network& net, Tensor* qkv, int64_t heads, int64_t head) {
  const DimExpr b = qkv->shape()[0], l = qkv->shape()[1];
  const int64_t width = heads * head;
  std::vector<Tensor*> parts;
  for (int64_t i = 0; i < 3; ++i) {
    SliceParams sp;
    sp.start = Shape{0, 0, i * width};
    sp.size = Shape{b, l, width};
    sp.stride = Shape{1, 1, 1};
    Tensor* t = net.add_slice("split" + std::to_string(i), qkv, sp)->output();
    ShuffleParams heads_first;
    heads_first.reshape = Shape{b, l, heads, head};
    heads_first.second_perm = {0, 2, 1, 3};
    parts.push_back(net.add_shuffle("heads" + std::to_string(i), t, heads_first)->output());
  }
  AttentionParams ap;
  ap.causal = true;
  Tensor* o = net.add_attention("sdpa", parts[0], parts[1], parts[2], nullptr, ap)->output();
  ShuffleParams merge;  // [B, H, L, D] -> [B, L, H, D] -> [B, L, H*D]
  merge.first_perm = {0, 2, 1, 3};
  merge.reshape = Shape{b, l, width};
  net.mark_output(net.add_shuffle("merge_heads", o, merge)->output(), "y");
}

}  // namespace kiln::engine
