// Attention masks that are constants of a known form become flags (and, for symbolic sizes, masks
// built the way decoders build their causal mask). Exported decoders build their causal mask from
// aranges (GPT-2: where(k_pos <= q_pos, 0, lowest)), which fold_constants turns into a constant
// [B, 1, L, L] tensor (or leaves as a broadcast of constants); read as data, the attention kernel
// must load it per score and cannot skip the key tiles it hides. As the causal flag the kernel skips them (half the work
// at L = 512) and reads nothing. A mask that keeps everything (an all-ones attention_mask made
// additive) is dropped.
#include <algorithm>

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

// ---- masks with symbolic sizes: recognised from how they are built --------------------------
// With a dynamic sequence length the mask has no value at build time, but exported decoders build
// it the same way: two aranges, one laid along the key dim and one along the query dim, compared
// (k <= q), maybe broadcast over the batch, then turned into 0 / lowest by a where.

// A tensor whose element at any index is `offset + index[d]`, d counted from the last dim
// (`from_end`), constant along every other dim: an arange of `length` laid along one dim.
struct Ramp {
  size_t from_end = 0;
  double offset = 0;
  DimExpr length;
};

std::optional<double> scalar_constant(const Tensor* t) {
  if (!detail::is_constant(t)) return std::nullopt;
  const Weights& w = detail::weights_of(t);
  if (w.numel() != 1) return std::nullopt;
  return detail::element_as_double(w.data.get(), w.dtype, 0);
}

// All zeros (or false) by construction: what an expand's broadcast adds.
bool is_zero_fill(const Tensor* t) {
  const auto* f = t->producer() ? t->producer()->as<FillParams>() : nullptr;
  if (f) return f->op == FillOp::kConstant && f->value == 0;
  const auto c = scalar_constant(t);
  return c && *c == 0;
}

// Positions as exports build them: integers (float positions round at large values and a float
// cast truncates, either of which can merge neighbouring positions).
bool exact_positions(DataType t) { return t == DataType::kInt64 || t == DataType::kInt32; }

std::optional<Ramp> ramp_of(const Tensor* t, int depth = 0) {
  const Layer* l = t->producer();
  if (!l || depth > 32 || !exact_positions(t->dtype())) return std::nullopt;
  if (const auto* f = l->as<FillParams>()) {
    if (f->op != FillOp::kArange || f->step != 1 || f->dims.size() != 1) return std::nullopt;
    return Ramp{0, f->start, f->dims[0]};
  }
  if (l->as<CastParams>()) return ramp_of(l->inputs()[0], depth + 1);  // int <-> int: both ends checked
  if (const auto* e = l->as<ElementwiseParams>()) {
    const Tensor *a = l->inputs()[0], *b = l->inputs()[1];
    if (e->op == BinaryOp::kAdd || e->op == BinaryOp::kOr) {
      for (int i = 0; i < 2; ++i) {
        const Tensor *x = i ? b : a, *y = i ? a : b;
        if (is_zero_fill(y)) return ramp_of(x, depth + 1);  // a broadcast: dims stay right-aligned
        if (auto c = scalar_constant(y); c && e->op == BinaryOp::kAdd) {
          auto r = ramp_of(x, depth + 1);
          if (r) r->offset += *c;
          return r;  // (offsets must come to 0: see is_causal_condition)
        }
      }
    }
    if (e->op == BinaryOp::kSub)
      if (auto c = scalar_constant(b)) {
        auto r = ramp_of(a, depth + 1);
        if (r) r->offset -= *c;
        return r;
      }
    return std::nullopt;
  }
  if (detail::is_pure_reshape(l)) {  // only unit dims added or removed: the ramp's dim keeps its order
    auto r = ramp_of(l->inputs()[0], depth + 1);
    if (!r) return std::nullopt;
    auto is_unit = [](const DimExpr& d) { return d.constant() && *d.constant() == 1; };
    const Shape &in = l->inputs()[0]->shape(), &out = l->output()->shape();
    std::vector<size_t> in_real, out_real;  // positions of the non-unit dims
    for (size_t i = 0; i < in.size(); ++i)
      if (!is_unit(in[i])) in_real.push_back(i);
    for (size_t i = 0; i < out.size(); ++i)
      if (!is_unit(out[i])) out_real.push_back(i);
    if (in_real.size() != out_real.size()) return std::nullopt;
    for (size_t k = 0; k < in_real.size(); ++k)
      if (!in[in_real[k]].same_as(out[out_real[k]])) return std::nullopt;
    const size_t at = in.size() - 1 - r->from_end;
    const auto k = std::find(in_real.begin(), in_real.end(), at);
    if (k == in_real.end()) return std::nullopt;
    r->from_end = out.size() - 1 - out_real[size_t(k - in_real.begin())];
    return r;
  }
  return std::nullopt;
}

// Whether `l` only puts unit dims in front (rank broadcasting: right-aligned dims keep their place).
bool adds_leading_units(const Layer* l) {
  if (!detail::is_pure_reshape(l)) return false;
  const Shape &in = l->inputs()[0]->shape(), &out = l->output()->shape();
  if (out.size() < in.size()) return false;
  const size_t lead = out.size() - in.size();
  for (size_t i = 0; i < out.size(); ++i) {
    if (i < lead ? out[i].constant() != std::optional<int64_t>(1) : !out[i].same_as(in[i - lead])) return false;
  }
  return true;
}

// `t` without the broadcasts (adds of zeros, ors with false, leading unit dims) put around it.
const Tensor* unbroadcast(const Tensor* t) {
  for (int guard = 0; guard < 8 && t->producer(); ++guard) {
    const Layer* l = t->producer();
    if (adds_leading_units(l)) {
      t = l->inputs()[0];
      continue;
    }
    const auto* e = l->as<ElementwiseParams>();
    if (!e || (e->op != BinaryOp::kAdd && e->op != BinaryOp::kOr)) break;
    if (is_zero_fill(l->inputs()[1])) t = l->inputs()[0];
    else if (is_zero_fill(l->inputs()[0])) t = l->inputs()[1];
    else break;
  }
  return t;
}

// Whether `keep` (bool) is true exactly where key j <= query i, j along the last dim of length
// `lk`, i along the one before of length `lq`.
bool is_causal_condition(const Tensor* keep, const DimExpr& lq, const DimExpr& lk) {
  keep = unbroadcast(keep);
  const auto* e = keep->producer() ? keep->producer()->as<ElementwiseParams>() : nullptr;
  if (!e || (e->op != BinaryOp::kLessEqual && e->op != BinaryOp::kGreaterEqual)) return false;
  const Tensor* key = keep->producer()->inputs()[e->op == BinaryOp::kLessEqual ? 0 : 1];
  const Tensor* query = keep->producer()->inputs()[e->op == BinaryOp::kLessEqual ? 1 : 0];
  const auto j = ramp_of(key), i = ramp_of(query);
  auto is_unit = [](const DimExpr& d) { return d.constant() && *d.constant() == 1; };
  // Both ramps start at 0 (as exports build them; then no integer type can wrap below 2^31 keys).
  return j && i && j->from_end == 0 && i->from_end == 1 && j->offset == 0 && i->offset == 0 && j->length.same_as(lk) &&
         i->length.same_as(lq) && !is_unit(lk) && !is_unit(lq);
}

// The mask's form from its construction: a causal condition (bool mask), maybe broadcast, or
// where(causal condition, 0, lowest).
MaskForm classify_by_construction(const Tensor* mask, const DimExpr& lq, const DimExpr& lk) {
  const Shape& s = mask->shape();
  if (s.size() < 2 || !s[s.size() - 2].same_as(lq) || !s.back().same_as(lk)) return MaskForm::kOther;
  const Tensor* m = unbroadcast(mask);  // broadcasts over the batch
  if (m->dtype() == DataType::kBool) return is_causal_condition(m, lq, lk) ? MaskForm::kCausal : MaskForm::kOther;
  const Layer* where = m->producer();
  if (!where || !where->as<SelectParams>()) return MaskForm::kOther;
  const auto kept = scalar_constant(where->inputs()[1]), hidden = scalar_constant(where->inputs()[2]);
  if (!kept || !hidden || *kept != 0 || !(*hidden <= -65504.0)) return MaskForm::kOther;  // (NaN is no hiding)
  return is_causal_condition(where->inputs()[0], lq, lk) ? MaskForm::kCausal : MaskForm::kOther;
}

}  // namespace

size_t simplify_attention_masks(Network& net) {
  size_t changes = 0;
  for (Layer* l : net.layers()) {
    const auto* p = l->as<AttentionParams>();
    if (!p || !p->has_mask || l->inputs().size() < 4) continue;
    const Shape &qs = l->inputs()[0]->shape(), &ks = l->inputs()[1]->shape();
    if (qs.size() < 2 || ks.size() < 2 || p->views.size()) continue;
    MaskForm form = MaskForm::kOther;
    const auto q = detail::static_dims(l->inputs()[0]), k = detail::static_dims(l->inputs()[1]);
    if (q && k) {
      const int64_t lq = q->end()[-2], lk = k->end()[-2];
      if (lq == 0 || lk == 0) continue;
      // fold_constants leaves large broadcasts (the mask expanded over the batch) unfolded.
      if (const std::optional<Weights> mask = evaluate_at_build_time(l->inputs()[3], kMaxMaskBytes))
        form = classify(*mask, lq, lk);
      else
        form = classify_by_construction(l->inputs()[3], qs.end()[-2], ks.end()[-2]);
    } else {
      form = classify_by_construction(l->inputs()[3], qs.end()[-2], ks.end()[-2]);
    }
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
