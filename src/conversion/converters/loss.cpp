// Losses models return beside their outputs (transformers' models given labels): nll_loss, which
// cross_entropy traces to after its log_softmax, for class scores [N, C] (or [C]) and per-pixel
// scores [N, C, H, W].
#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace {
namespace ew = impl::elementwise;
namespace sh = impl::shuffle;
namespace red = impl::reduce;
using engine::ReduceOp;

enum Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };

}  // namespace

void register_loss() {
  // -weight[t] * self[.., t, ..] per target t, 0 where t == ignore_index; summed, or divided by
  // the summed weights of the targets counted (mean; NaN when none counts, as PyTorch gives).
  // Outputs (loss, total_weight).
  add({"aten.nll_loss_forward.default", "aten.nll_loss2d_forward.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* scores = a.tensor("self");
    Tensor* labels = a.tensor("target");
    Tensor* weight = a.opt_tensor("weight");
    const int64_t reduction = a.i("reduction"), ignore = a.i("ignore_index");
    const int64_t class_dim = scores->rank() == 1 ? 0 : 1;
    labels = impl::cast::to_dtype(ctx, target, kAten, name + "/labels", labels, DataType::kInt64);
    Tensor* counted = ew::ne(ctx, target, kAten, name + "/counted", labels, ignore);
    Tensor* safe = impl::select::where(ctx, target, kAten, name + "/safe", counted, Value(labels), int64_t{0});
    Tensor* picked = impl::select::gather(ctx, target, kAten, name + "/picked", scores, class_dim,
                                          sh::unsqueeze(ctx, target, kAten, name + "/at", safe, class_dim));
    picked = sh::squeeze(ctx, target, kAten, name + "/picked_flat", picked, {class_dim});
    Tensor* w = weight ? impl::cast::to_dtype(ctx, target, kAten, name + "/weight_cast",
                                              impl::select::index_select(ctx, target, kAten, name + "/weight", weight, 0,
                                                                         sh::reshape(ctx, target, kAten, name + "/safe_flat", safe,
                                                                                     {DimExpr(int64_t{-1})})),
                                              scores->dtype())
                       : nullptr;
    if (w) w = sh::reshape(ctx, target, kAten, name + "/weight_like", w, safe->shape());
    Tensor* zero = ctx.constant(impl::scalar_weights(0, scores->dtype(), safe->rank()), name + "/zero");
    Tensor* per = impl::select::where(ctx, target, kAten, name + "/per_weight", counted,
                                      w ? Value(w) : Value(ctx.constant(impl::scalar_weights(1, scores->dtype(), safe->rank()), name + "/one")),
                                      Value(zero));
    Tensor* loss = ew::mul(ctx, target, kAten, name + "/loss", ew::mul(ctx, target, kAten, name + "/neg", picked, -1.0), per);
    Tensor* total = red::reduce(ctx, target, kAten, name + "/total_weight", ReduceOp::kSum, per, {}, false);
    if (reduction == kNone)
      return Value::List{loss, impl::creation::full(ctx, target, kAten, name + "/no_total", {}, 0.0, scores->dtype())};
    Tensor* sum = red::reduce(ctx, target, kAten, name + "/sum", ReduceOp::kSum, loss, {}, false);
    return Value::List{reduction == kSum ? sum : ew::div(ctx, target, kAten, name + "/mean", sum, total), total};
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::TensorMeta *scores = arg_meta(n, "self"), *labels = arg_meta(n, "target");
        const ir::Argument reduction = node_arg(n, "reduction"), ignore = node_arg(n, "ignore_index");
        if (!scores || !labels || !reduction.is<int64_t>() || !ignore.is<int64_t>()) return false;
        const int64_t r = reduction.as<int64_t>();
        const bool per_pixel = n.target == "aten.nll_loss2d_forward.default";
        return r >= kNone && r <= kSum && ir::is_floating(scores->dtype) &&
               (per_pixel ? scores->rank() == 4 && labels->rank() == 3
                          : (scores->rank() == 1 && labels->rank() == 0) || (scores->rank() == 2 && labels->rank() == 1));
      }, "[N, C] or [C] scores (2d: [N, C, H, W]), reduction none, mean or sum"});
}

}  // namespace kiln::conversion::converters
