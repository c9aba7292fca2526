// Attention masks that are constants of a known form become flags. Exported decoders build their
// causal mask from aranges (GPT-2: where(k_pos <= q_pos, 0, lowest)), which fold_constants turns
// into a constant [B, 1, L, L] tensor (or leaves as a broadcast of constants); read as data, the attention kernel must load it per score
// and cannot skip the key tiles it hides. As the causal flag the kernel skips them (half the work
// at L = 512) and reads nothing. A mask that keeps everything (an all-ones attention_mask made
// additive) is dropped.
#include "engine/builder.h"
#include "engine/network_internal.h"

namespace kiln::engine::passes {

namespace {

constexpr size_t kMaxMaskBytes = size_t{256} << 20;

enum class MaskForm { kOther, kKeepAll, kCausal };

// A score is hidden when the mask is false (bool) or adds at most fp16's lowest value (every
// dtype's lowest and -inf qualify): exp of anything that far below the row's kept maximum is 0
// in fp32, so hiding it exactly is what the softmax would have computed. A kept score adds 0.
MaskForm classify(const Weights& mask, int64_t lq, int64_t lk) {
  const size_t r = mask.dims.size();
  if (r < 2 || mask.dims[r - 2] != lq || mask.dims[r - 1] != lk) return MaskForm::kOther;
  const int64_t slices = mask.numel() / (lq * lk);
  bool all_kept = true, causal = true;
  for (int64_t s = 0; s < slices && (all_kept || causal); ++s)
    for (int64_t i = 0; i < lq && (all_kept || causal); ++i)
      for (int64_t j = 0; j < lk; ++j) {
        const double v = detail::element_as_double(mask.data.get(), mask.dtype, (s * lq + i) * lk + j);
        const bool kept = mask.dtype == DataType::kBool ? v != 0 : v == 0;
        const bool hidden = mask.dtype == DataType::kBool ? v == 0 : v <= -65504.0;
        if (!kept && !hidden) return MaskForm::kOther;
        all_kept = all_kept && kept;
        causal = causal && kept == (j <= i);  // top-left aligned, as PyTorch's is_causal
        if (!all_kept && !causal) return MaskForm::kOther;
      }
  return all_kept ? MaskForm::kKeepAll : causal ? MaskForm::kCausal : MaskForm::kOther;
}

}  // namespace

size_t simplify_attention_masks(Network& net) {
  size_t changes = 0;
  for (Layer* l : net.layers()) {
    const auto* p = l->as<AttentionParams>();
    if (!p || !p->has_mask || l->inputs().size() < 4) continue;
    const auto q = detail::static_dims(l->inputs()[0]), k = detail::static_dims(l->inputs()[1]);
    if (!q || !k || q->size() < 2 || k->size() < 2) continue;
    const int64_t lq = q->end()[-2], lk = k->end()[-2];
    if (lq == 0 || lk == 0) continue;
    // fold_constants leaves large broadcasts (the mask expanded over the batch) unfolded.
    const std::optional<Weights> mask = evaluate_at_build_time(l->inputs()[3], kMaxMaskBytes);
    if (!mask) continue;
    const MaskForm form = classify(*mask, lq, lk);
    if (form == MaskForm::kOther) continue;
    AttentionParams np = *p;
    np.causal = np.causal || form == MaskForm::kCausal;
    Layer* replacement = net.add_attention(l->name(), l->inputs()[0], l->inputs()[1], l->inputs()[2], nullptr, np);
    detail::log_debug("simplify_attention_masks: " + l->name() +
                      (form == MaskForm::kCausal ? ": mask is causal -> flag" : ": mask keeps everything -> dropped"));
    net.replace_all_uses(l->output(), replacement->output());
    net.remove_layer(l);
    ++changes;
  }
  if (changes) net.topological_sort();
  return changes;
}

}  // namespace kiln::engine::passes
