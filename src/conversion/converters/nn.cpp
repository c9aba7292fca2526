// matmul / linear, convolution, normalization, softmax, pooling, attention, upsampling, padding.
#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace {

bool is_false(const ir::Node& n, const std::string& arg) {
  ir::Argument a = node_arg(n, arg);
  return a.is<bool>() && !a.as<bool>();
}
bool is_none(const ir::Node& n, const std::string& arg) { return node_arg(n, arg).is_none(); }
bool is_int_list(const ir::Node& n, const std::string& arg) {
  ir::Argument a = node_arg(n, arg);
  if (a.is<int64_t>()) return true;
  if (!a.is_list()) return false;
  for (const auto& e : a.list())
    if (!e.is<int64_t>()) return false;
  return true;
}
// Static output sizes of the node's spatial dims (for adaptive pooling).
std::vector<int64_t> static_tail(const ConversionContext& ctx, size_t n) {
  std::vector<int64_t> out;
  const auto& sizes = ctx.current_node->meta.is_tensor() ? ctx.current_node->meta.tensor.sizes
                                                         : ctx.current_node->meta.tuple.at(0)->sizes;
  for (size_t i = sizes.size() - n; i < sizes.size(); ++i) {
    if (!sizes[i].is_constant()) throw ConversionError("adaptive pooling to a symbolic size");
    out.push_back(sizes[i].value);
  }
  return out;
}
std::vector<DimExpr> spatial_out(const ConversionContext& ctx, size_t n) {
  std::vector<DimExpr> s = node_shape(ctx);
  return std::vector<DimExpr>(s.end() - static_cast<std::ptrdiff_t>(n), s.end());
}
Value tuple_first(Tensor* t, size_t n) {
  Value::List l{t};
  for (size_t i = 1; i < n; ++i) l.push_back(Value());
  return l;
}
CapabilityValidator output0_only() {
  return [](const ir::Node& n, const CompilationSettings&) { return only_output0_used(n); };
}

// nn.MultiheadAttention's computation on [batch, length, embed] inputs: the q/k/v projections
// (one packed matmul for self-attention), heads split, fused attention, heads merged, the output
// projection.
Tensor* multi_head_attention(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* query,
                             Tensor* key, Tensor* value, int64_t embed, int64_t heads, Tensor* weight, Tensor* bias,
                             Tensor* proj_weight, Tensor* proj_bias) {
  namespace mm = impl::matmul;
  namespace sh = impl::shuffle;
  if (heads <= 0 || embed % heads) throw ConversionError("embed_dim must be a multiple of num_head");
  std::vector<Tensor*> qkv;
  if (query == key && key == value) {  // self-attention: one matmul, split after
    qkv = impl::slice::chunk(ctx, target, kAten, name + "/qkv_split",
                             mm::linear(ctx, target, kAten, name + "/qkv", query, weight, bias), 3, -1);
  } else {
    std::vector<Tensor*> w = impl::slice::chunk(ctx, target, kAten, name + "/w_split", weight, 3, 0);
    std::vector<Tensor*> b = impl::slice::chunk(ctx, target, kAten, name + "/b_split", bias, 3, 0);
    const char* part[] = {"/q", "/k", "/v"};
    Tensor* in[] = {query, key, value};
    for (int i = 0; i < 3; ++i) qkv.push_back(mm::linear(ctx, target, kAten, name + part[i], in[i], w[i], b[i]));
  }
  auto split_heads = [&](Tensor* t, const std::string& part) {  // [B, L, E] -> [B, H, L, E / H]
    std::vector<DimExpr> d = impl::shape::dims(t);
    if (d.size() != 3) throw ConversionError("multi-head attention inputs must be [batch, length, embed]");
    Tensor* r = sh::reshape(ctx, target, kAten, name + part + "_heads", t, {d[0], d[1], DimExpr(heads), DimExpr(embed / heads)});
    return sh::permute(ctx, target, kAten, name + part + "_bhld", r, {0, 2, 1, 3});
  };
  Tensor* att = impl::attention::scaled_dot_product_attention(
      ctx, target, kAten, name + "/attention", split_heads(qkv[0], "/q"), split_heads(qkv[1], "/k"),
      split_heads(qkv[2], "/v"), nullptr, false, std::nullopt);
  std::vector<DimExpr> qd = impl::shape::dims(query);
  Tensor* merged = sh::reshape(ctx, target, kAten, name + "/merge_heads",
                               sh::permute(ctx, target, kAten, name + "/blhd", att, {0, 2, 1, 3}),
                               {qd[0], qd[1], DimExpr(embed)});
  return mm::linear(ctx, target, kAten, name + "/out", merged, proj_weight, proj_bias);
}

}  // namespace

void register_nn() {
  namespace mm = impl::matmul;
  // ---- parametric activations ----
  // prelu: max(x, 0) + w * min(x, 0), w one slope per channel (dim 1) or one for all, broadcast
  // along the other dims. _prelu_kernel (PyTorch >= 2.0's decomposition of prelu) has its weight
  // shaped to broadcast already.
  add({"aten.prelu.default", "aten._prelu_kernel.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    Tensor* w = a.tensor("weight");
    if (target == "aten.prelu.default" && w->rank() == 1 && x->rank() >= 2) {  // [C] -> [1, C, 1, ...]
      std::vector<DimExpr> shape(x->rank(), DimExpr(int64_t{1}));
      shape[1] = w->shape()[0];
      w = impl::shuffle::reshape(ctx, target, kAten, name + "/slopes", w, shape);
    }
    Tensor* neg = impl::activation::clamp(ctx, target, kAten, name + "/neg", x, Value(), 0.0);
    Tensor* pos = impl::activation::clamp(ctx, target, kAten, name + "/pos", x, 0.0, Value());
    return impl::elementwise::add(ctx, target, kAten, name, pos,
                                  impl::elementwise::mul(ctx, target, kAten, name + "/scaled", neg, w));
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::Argument x = node_arg(n, "self"), w = node_arg(n, "weight");
        if (!x.is_node() || !w.is_node() || !x.node()->meta.is_tensor() || !w.node()->meta.is_tensor()) return false;
        const ir::TensorMeta &xm = x.node()->meta.tensor, &wm = w.node()->meta.tensor;
        if (n.target == "aten._prelu_kernel.default") return wm.rank() <= xm.rank();  // broadcasts as given
        if (wm.rank() == 0 || (wm.rank() == 1 && wm.sizes[0].is_constant() && wm.sizes[0].value == 1)) return true;
        // One per channel (PyTorch gives a 1-d input one channel: only one slope there).
        return wm.rank() == 1 && xm.rank() >= 2 && wm.sizes[0].is_constant() && xm.sizes[1].is_constant() &&
               wm.sizes[0].value == xm.sizes[1].value;
      }, "one slope, or one per channel"});
  // log_sigmoid_forward (F.logsigmoid): log(sigmoid(x)) = -softplus(-x), stable for large |x|;
  // its second result is a buffer for the backward pass.
  add({"aten.log_sigmoid_forward.default"}, KILN_CONVERTER {
    Tensor* x = args.at(0).tensor();
    Tensor* minus = impl::elementwise::mul(ctx, target, kAten, name + "/minus", x, -1.0);
    Tensor* sp = impl::activation::softplus(ctx, target, kAten, name + "/softplus", minus, 1.0, 20.0);
    return tuple_first(impl::elementwise::mul(ctx, target, kAten, name, sp, -1.0), 2);
  }, {output0_only(), "buffer unused"});
  // ---- matmul ----
  add({"aten.mm.default", "aten.bmm.default", "aten.matmul.default"}, KILN_CONVERTER {
    return mm::matrix_multiply(ctx, target, kAten, name, args.at(0).tensor(), args.at(1).tensor());
  });
  add({"aten.addmm.default", "aten.baddbmm.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    const bool bmm = target == "aten.baddbmm.default";
    return mm::addmm(ctx, target, kAten, name, a.tensor("self"), a.tensor(bmm ? "batch1" : "mat1"),
                     a.tensor(bmm ? "batch2" : "mat2"), a["beta"], a["alpha"]);
  });
  add({"aten.linear.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return mm::linear(ctx, target, kAten, name, a.tensor("input"), a.tensor("weight"), a.opt_tensor("bias"));
  });

  // ---- convolution ----
  add({"aten.convolution.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return impl::conv::convNd(ctx, target, kAten, name, a.tensor("input"), a.tensor("weight"), a.opt_tensor("bias"),
                              a.ints("stride"), a["padding"], a.ints("dilation"), a.i("groups"), a.b("transposed"),
                              a.ints("output_padding"));
  }, {[](const ir::Node& n, const CompilationSettings&) {
        ir::Argument w = node_arg(n, "weight");
        return w.is_node() && w.node()->meta.is_tensor() && w.node()->meta.tensor.rank() >= 3 &&
               w.node()->meta.tensor.rank() <= 5;
      }, "1d/2d/3d"});
  add({"aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default", "aten.conv1d.padding",
       "aten.conv2d.padding", "aten.conv3d.padding"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return impl::conv::convNd(ctx, target, kAten, name, a.tensor("input"), a.tensor("weight"), a.opt_tensor("bias"),
                              a.ints("stride"), a["padding"], a.ints("dilation"), a.i("groups"));
  });
  add({"aten.conv_transpose1d.default", "aten.conv_transpose2d.input", "aten.conv_transpose3d.input"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return impl::conv::convNd(ctx, target, kAten, name, a.tensor("input"), a.tensor("weight"), a.opt_tensor("bias"),
                              a.ints("stride"), a["padding"], a.ints("dilation"), a.i("groups"), true,
                              a.ints("output_padding"));
  });

  // ---- embedding bags ----
  // The bags' rows of `weight` summed, averaged or maxed. A 2-d input is fixed-size bags (one per
  // row); a 1-d input is cut into bags where `offsets` say: row i belongs to bag (count of offsets
  // <= i) - 1, and the rows are scatter-added into their bags (means divide by the bag sizes,
  // empty bags give 0). Max over offset bags takes each bag's members by a [bags, rows] mask.
  add({"aten.embedding_bag.default", "aten.embedding_bag.padding_idx", "aten._embedding_bag.default",
       "aten._embedding_bag_forward_only.default"}, KILN_CONVERTER {
    namespace ew = impl::elementwise;
    namespace sh = impl::shuffle;
    Args a(target, args, kwargs);
    Tensor* weight = a.tensor("weight");
    Tensor* input = a.tensor("indices");
    const int64_t mode = a.i("mode");  // 0 sum, 1 mean, 2 max
    Tensor* rows = impl::embedding::embedding(ctx, target, kAten, name + "/rows", input, weight);
    if (Tensor* psw = a.opt_tensor("per_sample_weights"))
      rows = ew::mul(ctx, target, kAten, name + "/weighted", rows, impl::shuffle::unsqueeze(ctx, target, kAten, name + "/psw", psw, -1));
    const engine::ReduceOp ops[] = {engine::ReduceOp::kSum, engine::ReduceOp::kMean, engine::ReduceOp::kMax};
    if (input->rank() == 2)
      return tuple_first(impl::reduce::reduce(ctx, target, kAten, name, ops[mode], rows, {1}, false), 4);
    const DimExpr n = input->shape()[0], dim = weight->shape()[1];
    Tensor* offsets = a.tensor("offsets");
    int64_t bags = impl::static_dims(offsets, "embedding_bag offsets")[0];
    Tensor* pos = impl::creation::arange(ctx, target, kAten, name + "/pos", int64_t{0}, n, int64_t{1}, DataType::kInt64);
    Tensor* valid = nullptr;  // include_last_offset: rows at or past the last offset belong to no bag
    if (a.b("include_last_offset")) {
      --bags;
      Tensor* end = impl::select::select(ctx, target, kAten, name + "/end", offsets, 0, bags);
      valid = ew::lt(ctx, target, kAten, name + "/valid", pos, end);
      offsets = impl::slice::slice_op(ctx, target, kAten, name + "/starts", offsets, 0, int64_t{0}, bags, int64_t{1});
      rows = impl::select::where(ctx, target, kAten, name + "/rows_valid",
                                 sh::unsqueeze(ctx, target, kAten, name + "/valid_col", valid, 1), rows, 0.0);
    }
    Tensor* started = ew::le(ctx, target, kAten, name + "/started",
                             sh::reshape(ctx, target, kAten, name + "/starts_row", offsets, {DimExpr(int64_t{1}), DimExpr(bags)}),
                             sh::reshape(ctx, target, kAten, name + "/pos_col", pos, {n, DimExpr(int64_t{1})}));  // [n, bags]
    Tensor* bag = ew::sub(ctx, target, kAten, name + "/bag",
                          impl::reduce::reduce(ctx, target, kAten, name + "/count", engine::ReduceOp::kSum, started, {1}, false),
                          int64_t{1});  // [n]
    const DataType t = rows->dtype();
    if (mode == 2) {
      Tensor* member = ew::eq(ctx, target, kAten, name + "/member",
                              sh::reshape(ctx, target, kAten, name + "/bag_row", bag, {DimExpr(int64_t{1}), n}),
                              sh::reshape(ctx, target, kAten, name + "/bags_col",
                                          impl::creation::arange(ctx, target, kAten, name + "/bags", int64_t{0},
                                                                 DimExpr(bags), int64_t{1}, DataType::kInt64),
                                          {DimExpr(bags), DimExpr(int64_t{1})}));  // [1, n] vs [bags, 1]
      if (valid)
        member = ew::logical_and(ctx, target, kAten, name + "/member_valid", member,
                                 sh::reshape(ctx, target, kAten, name + "/valid_row", valid, {DimExpr(int64_t{1}), n}));
      member = sh::reshape(ctx, target, kAten, name + "/member3", member, {DimExpr(bags), n, DimExpr(int64_t{1})});
      Tensor* masked = impl::select::where(ctx, target, kAten, name + "/masked", member,
                                           sh::unsqueeze(ctx, target, kAten, name + "/rows3", rows, 0),
                                           -std::numeric_limits<double>::infinity());
      Tensor* top = impl::reduce::reduce(ctx, target, kAten, name + "/max", engine::ReduceOp::kMax, masked, {1}, false);
      Tensor* filled = impl::reduce::reduce(ctx, target, kAten, name + "/filled", engine::ReduceOp::kAny, member, {1}, false);
      return tuple_first(impl::select::where(ctx, target, kAten, name, filled, top, 0.0), 4);
    }
    Tensor* index = sh::expand(ctx, target, kAten, name + "/index",
                               sh::unsqueeze(ctx, target, kAten, name + "/bag_col", bag, 1), {n, dim});
    Tensor* zeros = impl::creation::full(ctx, target, kAten, name + "/zeros", {DimExpr(bags), dim}, 0.0, t);
    Tensor* sum = impl::select::scatter(ctx, target, kAten, mode == 0 ? name : name + "/sum", zeros, 0, index, rows,
                                        engine::ScatterReduce::kAdd);
    if (mode == 0) return tuple_first(sum, 4);
    Tensor* ones = impl::creation::full(ctx, target, kAten, name + "/ones", {n, DimExpr(int64_t{1})}, 1.0, t);
    if (valid)
      ones = impl::select::where(ctx, target, kAten, name + "/ones_valid",
                                 sh::unsqueeze(ctx, target, kAten, name + "/valid_col1", valid, 1), ones, 0.0);
    Tensor* size = impl::select::scatter(ctx, target, kAten, name + "/size",
                                         impl::creation::full(ctx, target, kAten, name + "/size0", {DimExpr(bags), DimExpr(int64_t{1})}, 0.0, t),
                                         0, sh::unsqueeze(ctx, target, kAten, name + "/bag_col1", bag, 1), ones,
                                         engine::ScatterReduce::kAdd);
    return tuple_first(ew::div(ctx, target, kAten, name, sum,
                               impl::activation::clamp(ctx, target, kAten, name + "/size1", size, 1.0, Value())), 4);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::Argument mode = node_arg(n, "mode"), input = node_arg(n, "indices"), offsets = node_arg(n, "offsets");
        // embedding_bag.default has no padding_idx; the other three overloads do.
        const ir::Argument pad = n.target == "aten.embedding_bag.default" ? ir::Argument() : node_arg(n, "padding_idx");
        const ir::Argument psw = node_arg(n, "per_sample_weights");
        if (!only_output0_used(n) || !mode.is<int64_t>() || mode.as<int64_t>() < 0 || mode.as<int64_t>() > 2) return false;
        if (!pad.is_none() && !(pad.is<int64_t>() && pad.as<int64_t>() < 0)) return false;  // padding rows: not yet
        if (!psw.is_none() && mode.as<int64_t>() != 0) return false;                         // PyTorch: sum only
        if (!input.is_node() || !input.node()->meta.is_tensor()) return false;
        const size_t rank = input.node()->meta.tensor.rank();
        if (rank == 2) return true;
        return rank == 1 && offsets.is_node() && offsets.node()->meta.is_tensor() &&
               offsets.node()->meta.tensor.rank() == 1 && offsets.node()->meta.tensor.sizes[0].is_constant();
      }, "output 0 only; sum, mean or max; no padding_idx; offsets of static length"});
  // ---- normalization ----
  namespace norm = impl::normalization;
  add({"aten.layer_norm.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return norm::layer_norm(ctx, target, kAten, name, a.tensor("input"), a.ints("normalized_shape"),
                            a.opt_tensor("weight"), a.opt_tensor("bias"), a.d("eps"));
  });
  add({"aten.native_layer_norm.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return tuple_first(norm::layer_norm(ctx, target, kAten, name, a.tensor("input"), a.ints("normalized_shape"),
                                        a.opt_tensor("weight"), a.opt_tensor("bias"), a.d("eps")), 3);
  }, {output0_only(), "mean/rstd outputs unused"});
  add({"aten.batch_norm.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return norm::batch_norm(ctx, target, kAten, name, a.tensor("input"), a.opt_tensor("weight"), a.opt_tensor("bias"),
                            a.opt_tensor("running_mean"), a.opt_tensor("running_var"), a.d("eps"));
  }, {[](const ir::Node& n, const CompilationSettings&) {
        return is_false(n, "training") && !is_none(n, "running_mean") && !is_none(n, "running_var");
      }, "inference with running stats"});
  add({"aten._native_batch_norm_legit_no_training.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return tuple_first(norm::batch_norm(ctx, target, kAten, name, a.tensor("input"), a.opt_tensor("weight"),
                                        a.opt_tensor("bias"), a.tensor("running_mean"), a.tensor("running_var"),
                                        a.d("eps")), 3);
  }, {output0_only(), "saved mean/invstd unused"});
  add({"aten.native_batch_norm.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return tuple_first(norm::batch_norm(ctx, target, kAten, name, a.tensor("input"), a.opt_tensor("weight"),
                                        a.opt_tensor("bias"), a.tensor("running_mean"), a.tensor("running_var"),
                                        a.d("eps")), 3);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        return only_output0_used(n) && is_false(n, "training") && !is_none(n, "running_mean");
      }, "inference, output 0 only"});
  // Batch norm over the batch's own statistics, with no running statistics to update: what
  // InstanceNorm (PyTorch 1.13 runs it as this on [1, N*C, ...]) and a BatchNorm built with
  // track_running_stats=False compute in eval mode. Mean and biased variance over every dim but 1.
  auto batch_statistics_norm = [](ConversionContext& ctx, const std::string& target, const std::string& name,
                                  Tensor* x, Tensor* weight, Tensor* bias, double eps) {
    namespace ew = impl::elementwise;
    std::vector<int64_t> dims;
    for (int64_t d = 0; d < int64_t(x->rank()); ++d)
      if (d != 1) dims.push_back(d);
    Tensor* mean = impl::reduce::reduce(ctx, target, kAten, name + "/mean", engine::ReduceOp::kMean, x, dims, true);
    Tensor* var = impl::reduce::reduce(ctx, target, kAten, name + "/var", engine::ReduceOp::kVar, x, dims, true, 0.0);
    Tensor* scale = impl::unary::unary(ctx, target, kAten, name + "/rstd", engine::UnaryOp::kRsqrt,
                                       ew::add(ctx, target, kAten, name + "/var_eps", var, eps));
    const bool affine = weight || bias;
    Tensor* y = ew::mul(ctx, target, kAten, affine ? name + "/normalized" : name,
                        ew::sub(ctx, target, kAten, name + "/centered", x, mean), scale);
    std::vector<DimExpr> per_channel(x->rank(), DimExpr(int64_t{1}));
    per_channel[1] = x->shape()[1];
    if (weight)
      y = ew::mul(ctx, target, kAten, bias ? name + "/scaled" : name, y,
                  impl::shuffle::reshape(ctx, target, kAten, name + "/weight", weight, per_channel));
    if (bias) y = ew::add(ctx, target, kAten, name, y, impl::shuffle::reshape(ctx, target, kAten, name + "/bias", bias, per_channel));
    return y;
  };
  add({"aten.native_batch_norm.default", "aten.batch_norm.default", "aten._native_batch_norm_legit.no_stats"},
      [batch_statistics_norm](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args,
                              const Kwargs& kwargs, const std::string& name) -> Value {
        Args a(target, args, kwargs);
        Tensor* y = batch_statistics_norm(ctx, target, name, a.tensor("input"), a.opt_tensor("weight"),
                                          a.opt_tensor("bias"), a.d("eps"));
        return target == "aten.batch_norm.default" ? Value(y) : tuple_first(y, 3);
      },
      {[](const ir::Node& n, const CompilationSettings&) {
         const ir::Argument x = node_arg(n, "input");
         if (!x.is_node() || !x.node()->meta.is_tensor() || x.node()->meta.tensor.rank() < 2) return false;
         if (n.target != "aten.batch_norm.default" && !only_output0_used(n)) return false;
         if (n.target == "aten._native_batch_norm_legit.no_stats") return true;
         // Training mode with no running statistics (nothing to update).
         return !is_false(n, "training") && is_none(n, "running_mean") && is_none(n, "running_var");
       }, "batch statistics, no running statistics to update"});
  add({"aten.group_norm.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return norm::group_norm(ctx, target, kAten, name, a.tensor("input"), a.i("num_groups"), a.opt_tensor("weight"),
                            a.opt_tensor("bias"), a.d("eps"));
  });
  add({"aten.native_group_norm.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return tuple_first(norm::group_norm(ctx, target, kAten, name, a.tensor("input"), a.i("group"),
                                        a.opt_tensor("weight"), a.opt_tensor("bias"), a.d("eps")), 3);
  }, {output0_only(), "mean/rstd outputs unused"});

  // ---- softmax ----
  auto softmax = [](bool log) {
    return [log](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args,
                 const Kwargs& kwargs, const std::string& name) -> Value {
      Args a(target, args, kwargs);
      Tensor* x = a.tensor("self");
      // softmax.int's dtype / _softmax's half_to_float: compute in the node's output dtype.
      x = impl::cast::to_dtype(ctx, target, kAten, name + "/cast", x, node_dtype(ctx));
      return norm::softmax(ctx, target, kAten, name, x, a.i("dim"), log);
    };
  };
  add({"aten.softmax.int", "aten._softmax.default"}, softmax(false));
  add({"aten.log_softmax.int", "aten._log_softmax.default"}, softmax(true));

  // ---- pooling ----
  namespace pool = impl::pool;
  auto max_pool = KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* out = pool::max_poolNd(ctx, target, kAten, name, a.tensor("self"), a.ints("kernel_size"), a.ints("stride"),
                                   a.ints("padding"), a.ints("dilation"), a.b("ceil_mode"));
    if (target.find("with_indices") == std::string::npos) return out;
    if (only_output0_used(*ctx.current_node)) return tuple_first(out, 2);
    return Value::List{out, max_pool2d_indices(ctx, target, name + "/indices", a.tensor("self"), a.ints("kernel_size"),
                                               a.ints("stride"), a.ints("padding"), a.ints("dilation"), out)};
  };
  add({"aten.max_pool1d.default", "aten.max_pool2d.default", "aten.max_pool3d.default"}, max_pool);
  add({"aten.max_pool3d_with_indices.default"}, max_pool, {output0_only(), "indices unused"});
  // 2-d indices (for max_unpool2d) from a gather of the windows where the input's plane is static.
  add({"aten.max_pool2d_with_indices.default"}, max_pool, {[](const ir::Node& n, const CompilationSettings&) {
        if (only_output0_used(n)) return true;
        const ir::TensorMeta* m = arg_meta(n, "self");
        if (!m || (m->rank() != 3 && m->rank() != 4) || !static_size(n, "self", -1) || !static_size(n, "self", -2) ||
            n.meta.kind != ir::ValueMeta::Kind::Tuple || n.meta.tuple.size() != 2)
          return false;
        // The output's size from whichever element capture described (values and indices share it;
        // an element nothing reads may have no metadata).
        const std::optional<ir::TensorMeta>& pooled = n.meta.tuple[0] ? n.meta.tuple[0] : n.meta.tuple[1];
        if (!pooled || !pooled->is_static()) return false;
        const auto kernel = ints_arg(node_arg(n, "kernel_size"));  // one position per tap per window
        if (!kernel || kernel->empty() || kernel->size() > 2) return false;
        const auto& out = pooled->sizes;
        const int64_t taps = kernel->front() * kernel->back();  // one int stands for both dims
        const int64_t positions = out[out.size() - 1].value * out[out.size() - 2].value * taps;
        return positions > 0 && positions <= kMaxConstantPositions;
      }, "indices unused, or a 2-d input of static height and width"});
  add({"aten.avg_pool1d.default", "aten.avg_pool2d.default", "aten.avg_pool3d.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    const Value& div = a["divisor_override"];
    return pool::avg_poolNd(ctx, target, kAten, name, a.tensor("self"), a.ints("kernel_size"), a.ints("stride"),
                            a.ints("padding"), a.b("ceil_mode"), a.b("count_include_pad"),
                            div.is_none() ? std::nullopt : std::optional<int64_t>(div.to_int()));
  });
  auto adaptive = [](engine::PoolType type, size_t n, bool tuple) {
    return [type, n, tuple](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args,
                            const Kwargs& kwargs, const std::string& name) -> Value {
      // Output sizes from the node's metadata: output_size may hold None (keep the input's size).
      Tensor* out = pool::adaptive_poolNd(ctx, target, kAten, name, args.at(0).tensor(), static_tail(ctx, n), type);
      return tuple ? tuple_first(out, 2) : Value(out);
    };
  };
  auto static_spatial = [](size_t n) {
    return [n](const ir::Node& node, const CompilationSettings&) {
      const ir::TensorMeta* m = node.meta.is_tensor() ? &node.meta.tensor
                                : (!node.meta.tuple.empty() && node.meta.tuple[0]) ? &*node.meta.tuple[0] : nullptr;
      if (!m || m->rank() < n) return false;
      for (size_t i = m->rank() - n; i < m->rank(); ++i)
        if (!m->sizes[i].is_constant()) return false;
      return node.meta.is_tensor() || only_output0_used(node);  // tuple (max): indices unused
    };
  };
  using engine::PoolType;
  add({"aten.adaptive_avg_pool1d.default"}, adaptive(PoolType::kAverage, 1, false), {static_spatial(1), "static output size"});
  add({"aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default"}, adaptive(PoolType::kAverage, 2, false),
      {static_spatial(2), "static output size"});
  add({"aten.adaptive_avg_pool3d.default", "aten._adaptive_avg_pool3d.default"}, adaptive(PoolType::kAverage, 3, false),
      {static_spatial(3), "static output size"});
  add({"aten.adaptive_max_pool1d.default"}, adaptive(PoolType::kMax, 1, true), {static_spatial(1), "static output size, indices unused"});
  add({"aten.adaptive_max_pool2d.default"}, adaptive(PoolType::kMax, 2, true), {static_spatial(2), "static output size, indices unused"});

  // ---- attention ----
  // The public op, and the backend kernels PyTorch dispatches it to, which a program decomposed on
  // a CUDA (or CPU) machine holds instead: the same computation, under another name for the mask
  // and with extra outputs (log-sum-exp, RNG state) that inference leaves unused.
  auto no_dropout = [](const ir::Node& n) {
    ir::Argument p = node_arg(n, "dropout_p");
    return (p.is<double>() && p.as<double>() == 0.0) || (p.is<int64_t>() && p.as<int64_t>() == 0);
  };
  auto attention = [](const char* mask_arg, size_t outputs) {
    return [mask_arg, outputs](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args,
                               const Kwargs& kwargs, const std::string& name) -> Value {
      Args a(target, args, kwargs);
      const Value& scale = a["scale"];
      Tensor* out = impl::attention::scaled_dot_product_attention(
          ctx, target, kAten, name, a.tensor("query"), a.tensor("key"), a.tensor("value"),
          mask_arg ? a.opt_tensor(mask_arg) : nullptr, a.b("is_causal"),
          scale.is_none() ? std::nullopt : std::optional<double>(scale.to_double()));
      return outputs == 1 ? Value(out) : tuple_first(out, outputs);
    };
  };
  add({"aten.scaled_dot_product_attention.default"}, attention("attn_mask", 1),
      {[no_dropout](const ir::Node& n, const CompilationSettings&) {
         const ir::OpSchema* s = ir::find_schema(n.target);
         const bool gqa = s && s->find("enable_gqa") && node_arg(n, "enable_gqa").is<bool>() &&
                          node_arg(n, "enable_gqa").as<bool>();
         return no_dropout(n) && !gqa;
       }, "dropout_p == 0, no enable_gqa"});
  const CapabilityValidator backend_ok = [no_dropout](const ir::Node& n, const CompilationSettings&) {
    return no_dropout(n) && only_output0_used(n);
  };
  const std::string backend_why = "dropout_p == 0, only the output used";
  add({"aten._scaled_dot_product_flash_attention.default"}, attention(nullptr, 9), {backend_ok, backend_why});
  add({"aten._scaled_dot_product_flash_attention_for_cpu.default"}, attention("attn_mask", 2), {backend_ok, backend_why});
  add({"aten._scaled_dot_product_efficient_attention.default"}, attention("attn_bias", 4), {backend_ok, backend_why});
  add({"aten._scaled_dot_product_cudnn_attention.default"}, attention("attn_bias", 9), {backend_ok, backend_why});
  // nn.MultiheadAttention's and nn.TransformerEncoderLayer's inference fast paths, as the layers
  // they are made of (so the builder fuses them as it does the written-out forms).
  add({"aten._native_multi_head_attention.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return tuple_first(multi_head_attention(ctx, target, name, a.tensor("query"), a.tensor("key"), a.tensor("value"),
                                            a.i("embed_dim"), a.i("num_head"), a.tensor("qkv_weight"),
                                            a.tensor("qkv_bias"), a.tensor("proj_weight"), a.tensor("proj_bias")),
                       2);
  }, {[](const ir::Node& n, const CompilationSettings&) { return is_none(n, "mask") && only_output0_used(n); },
      "no mask, attention weights unused"});
  add({"aten._transformer_encoder_layer_fwd.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("src");
    const int64_t embed = a.i("embed_dim");
    auto norm = [&](Tensor* t, const char* which) {
      return norm::layer_norm(ctx, target, kAten, name + "/norm" + which, t, {embed},
                              a.tensor(std::string("norm_weight_") + which), a.tensor(std::string("norm_bias_") + which),
                              a.d("eps"));
    };
    auto attention = [&](Tensor* t) {
      return multi_head_attention(ctx, target, name + "/self_attn", t, t, t, embed, a.i("num_heads"),
                                  a.tensor("qkv_weight"), a.tensor("qkv_bias"), a.tensor("proj_weight"),
                                  a.tensor("proj_bias"));
    };
    auto feed_forward = [&](Tensor* t) {
      Tensor* h = mm::linear(ctx, target, kAten, name + "/linear1", t, a.tensor("ffn_weight_1"), a.tensor("ffn_bias_1"));
      h = a.b("use_gelu") ? impl::activation::gelu(ctx, target, kAten, name + "/gelu", h)
                          : impl::activation::relu(ctx, target, kAten, name + "/relu", h);
      return mm::linear(ctx, target, kAten, name + "/linear2", h, a.tensor("ffn_weight_2"), a.tensor("ffn_bias_2"));
    };
    auto add = [&](Tensor* lhs, Tensor* rhs, const char* what) {
      return impl::elementwise::add(ctx, target, kAten, name + what, lhs, rhs);
    };
    if (a.b("norm_first")) {
      x = add(x, attention(norm(x, "1")), "/residual1");
      return add(x, feed_forward(norm(x, "2")), "/residual2");
    }
    x = norm(add(x, attention(x), "/residual1"), "1");
    return norm(add(x, feed_forward(x), "/residual2"), "2");
  }, {[](const ir::Node& n, const CompilationSettings&) { return is_none(n, "mask"); }, "no mask"});

  // ---- upsampling: output sizes from the node's metadata (symbolic when the input is) ----
  using engine::ResizeMode;
  auto resize = [](ResizeMode mode, size_t n) {
    return [mode, n](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args,
                     const Kwargs& kwargs, const std::string& name) -> Value {
      Args a(target, args, kwargs);
      std::vector<double> scales;
      if (!a.none("scale_factors")) {
        for (const Value& s : a["scale_factors"].list()) scales.push_back(s.to_double());
      } else {
        for (const char* k : {"scales_d", "scales_h", "scales_w", "scales"})
          if (!a[k].is_none()) scales.push_back(a.d(k));
        if (scales.size() != n) scales.clear();  // partial scales: sizes decide
      }
      const bool align = mode == ResizeMode::kLinear && a.b("align_corners");
      return impl::upsample::resize(ctx, target, kAten, name, a.tensor(a.none("input") ? "self" : "input"),
                                    spatial_out(ctx, n), scales, mode, align);
    };
  };
  add({"aten.upsample_nearest1d.vec", "aten.upsample_nearest1d.default"}, resize(ResizeMode::kNearest, 1));
  add({"aten.upsample_nearest2d.vec", "aten.upsample_nearest2d.default"}, resize(ResizeMode::kNearest, 2));
  add({"aten.upsample_nearest3d.vec", "aten.upsample_nearest3d.default"}, resize(ResizeMode::kNearest, 3));
  add({"aten._upsample_nearest_exact2d.vec", "aten._upsample_nearest_exact2d.default"},
      resize(ResizeMode::kNearestExact, 2));
  add({"aten.upsample_linear1d.vec", "aten.upsample_linear1d.default"}, resize(ResizeMode::kLinear, 1));
  add({"aten.upsample_bilinear2d.vec", "aten.upsample_bilinear2d.default"}, resize(ResizeMode::kLinear, 2));
  add({"aten.upsample_trilinear3d.vec", "aten.upsample_trilinear3d.default"}, resize(ResizeMode::kLinear, 3));

  // Bicubic (PyTorch's A = -0.75 kernel, taps clamped at the borders; ViTs resize position
  // embeddings so, super-resolution models upsample so): per spatial dim, four index_selects of
  // the input weighted by per-output-position constants, from static sizes. Built from layers
  // every backend has, so no kernel of its own.
  add({"aten.upsample_bicubic2d.vec", "aten.upsample_bicubic2d.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor(target == "aten.upsample_bicubic2d.vec" ? "input" : "self");
    const bool align = a.b("align_corners");
    std::vector<double> scales(2, 0.0);  // 0: from the sizes
    if (target == "aten.upsample_bicubic2d.vec") {
      if (!a.none("scale_factors")) {
        const Value::List& l = a["scale_factors"].list();
        for (size_t i = 0; i < 2 && i < l.size(); ++i) scales[i] = l[i].to_double();
      }
    } else {
      if (!a.none("scales_h")) scales[0] = a.d("scales_h");
      if (!a.none("scales_w")) scales[1] = a.d("scales_w");
    }
    const std::vector<int64_t> out = static_tail(ctx, 2);
    constexpr double A = -0.75;
    auto near = [](double t) { return ((A + 2) * t - (A + 3)) * t * t + 1; };          // |t| <= 1
    auto far = [](double t) { return ((A * t - 5 * A) * t + 8 * A) * t - 4 * A; };  // 1 < |t| < 2
    Tensor* y = x;
    for (size_t i = 0; i < 2; ++i) {
      const size_t dim = 2 + i;
      const int64_t in = known_extent(y, int64_t(dim), "bicubic upsampling"), n = out[i];
      const double step = align ? (n > 1 ? double(in - 1) / double(n - 1) : 0.0)
                                : (scales[i] > 0 ? 1.0 / scales[i] : double(in) / double(n));
      std::vector<std::vector<int64_t>> taps(4, std::vector<int64_t>(size_t(n)));
      std::vector<std::vector<float>> weights(4, std::vector<float>(size_t(n)));
      for (int64_t o = 0; o < n; ++o) {
        const double real = align ? step * double(o) : step * (double(o) + 0.5) - 0.5;  // no clamp for cubic
        const double first = std::floor(real), t = real - first;
        const double w[4] = {far(t + 1), near(t), near(1 - t), far(2 - t)};
        for (int k = 0; k < 4; ++k) {
          taps[size_t(k)][size_t(o)] = std::clamp<int64_t>(int64_t(first) - 1 + k, 0, in - 1);
          weights[size_t(k)][size_t(o)] = float(w[k]);
        }
      }
      y = weighted_taps(ctx, target, i == 1 ? name : name + "/h", y, int64_t(dim), taps, weights);
    }
    return y;
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::Argument x = node_arg(n, n.target == "aten.upsample_bicubic2d.vec" ? "input" : "self");
        if (!x.is_node() || !x.node()->meta.is_tensor() || !n.meta.is_tensor()) return false;
        const ir::TensorMeta &in = x.node()->meta.tensor, &out = n.meta.tensor;
        if (in.rank() != 4 || out.rank() != 4 || !ir::is_floating(in.dtype)) return false;
        for (size_t d = 2; d < 4; ++d)
          if (!in.sizes[d].is_constant() || !out.sizes[d].is_constant()) return false;
        return true;
      }, "4-d float input, static spatial sizes"});

  // ---- padding ----
  add({"aten.constant_pad_nd.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    return impl::pad::pad(ctx, target, kAten, name, a.tensor("self"), a.ints("pad"), engine::PadMode::kConstant,
                          a.d("value"));
  }, {[](const ir::Node& n, const CompilationSettings&) { return is_int_list(n, "pad"); }, "static pad"});
  add({"aten.pad.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    const std::string& m = a["mode"].str();
    const engine::PadMode mode = m == "reflect"     ? engine::PadMode::kReflect
                                 : m == "replicate" ? engine::PadMode::kReplicate
                                 : m == "circular"  ? engine::PadMode::kCircular
                                                    : engine::PadMode::kConstant;
    return impl::pad::pad(ctx, target, kAten, name, a.tensor("self"), a.ints("pad"), mode,
                          a.none("value") ? 0.0 : a.d("value"));
  }, {[](const ir::Node& n, const CompilationSettings&) {
        ir::Argument m = node_arg(n, "mode");
        static const std::set<std::string> modes = {"constant", "reflect", "replicate", "circular"};
        return is_int_list(n, "pad") && m.is<std::string>() && modes.count(m.as<std::string>());
      }, "static pad, known mode"});
  auto mode_pad = [](engine::PadMode mode) {
    return [mode](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args,
                  const Kwargs& kwargs, const std::string& name) -> Value {
      return impl::pad::pad(ctx, target, kAten, name, args.at(0).tensor(), args.at(1).to_ints(), mode, 0.0);
    };
  };
  add({"aten.reflection_pad1d.default", "aten.reflection_pad2d.default", "aten.reflection_pad3d.default"},
      mode_pad(engine::PadMode::kReflect));
  add({"aten.replication_pad1d.default", "aten.replication_pad2d.default", "aten.replication_pad3d.default"},
      mode_pad(engine::PadMode::kReplicate));
}

}  // namespace kiln::conversion::converters
