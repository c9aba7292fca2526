// to_json/from_json for every layer parameter struct. Enums are stored as integers and range
// checked on load; every read goes through nlohmann's checked accessors so that a malformed
// description throws (and becomes a PlanError in Plan::deserialize).
#include "engine/plan_json.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "engine/network_internal.h"
#include "engine/plan.h"

namespace kiln::engine {

using nlohmann::json;

namespace {

template <class E>
E enum_from(const json& j, const char* what) {
  int v = j.get<int>();
  if (v < 0 || v >= enum_count<E>()) throw PlanError(std::string("bad ") + what + " value " + std::to_string(v));
  return static_cast<E>(v);
}
template <class E>
int enum_to(E e) {
  return static_cast<int>(e);
}


DataType dtype_from(const json& j) { return enum_from<DataType>(j, "dtype"); }

template <class T>
json opt_to(const std::optional<T>& v) {
  return v ? json(*v) : json(nullptr);
}

// JSON has no NaN or infinity (nlohmann writes them as null), yet constants such as a
// masked_fill's -inf must survive a round trip: non-finite values are written as strings.
json real_to(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return v;
}
double real_from(const json& j) {
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
    if (s == "Infinity") return std::numeric_limits<double>::infinity();
    if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
    throw PlanError("bad number '" + s + "'");
  }
  return j.get<double>();
}
json reals_to(const std::vector<double>& v) {
  json a = json::array();
  for (double x : v) a.push_back(real_to(x));
  return a;
}
std::vector<double> reals_from(const json& j) {
  std::vector<double> v;
  for (const json& x : j) v.push_back(real_from(x));
  return v;
}

}  // namespace

// ---- params structs (found by ADL from json::get / json construction) ----

void to_json(json& j, const ActivationParams& p) { j = {{"op", enum_to(p.op)}, {"alpha", real_to(p.alpha)}, {"beta", real_to(p.beta)}}; }
void from_json(const json& j, ActivationParams& p) {
  p.op = enum_from<ActivationOp>(j.at("op"), "activation");
  p.alpha = real_from(j.at("alpha"));
  p.beta = real_from(j.at("beta"));
}

namespace {
std::optional<ActivationParams> activation_from(const json& j) {
  if (j.is_null()) return std::nullopt;
  return j.get<ActivationParams>();
}
json activation_to(const std::optional<ActivationParams>& a) { return a ? json(*a) : json(nullptr); }
}  // namespace

namespace plan_json {

json BlobWriter::add(const Weights& w) {
  size_t offset = (bytes.size() + 63) / 64 * 64;
  bytes.resize(offset + w.nbytes());
  if (w.nbytes()) std::memcpy(bytes.data() + offset, w.data.get(), w.nbytes());
  return {{"dtype", enum_to(w.dtype)}, {"dims", w.dims}, {"offset", offset}, {"bytes", w.nbytes()}};
}

Weights BlobReader::get(const json& j) const {
  Weights w;
  w.dtype = dtype_from(j.at("dtype"));
  w.dims = j.at("dims").get<std::vector<int64_t>>();
  if (w.dims.size() > kMaxRank) throw PlanError("weights of rank " + std::to_string(w.dims.size()));
  const uint64_t offset = j.at("offset").get<uint64_t>(), nbytes = j.at("bytes").get<uint64_t>();
  // The byte count from dims and dtype, every product checked: a wrapped product (dims [2^62] of
  // float32 is 2^64 bytes, i.e. 0) would pass the comparison below and let a layer read past the blob.
  uint64_t n = element_size(w.dtype);
  for (int64_t d : w.dims) {
    if (d < 0) throw PlanError("weights have a negative dim");
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) throw PlanError("weights byte size overflows");
  }
  if (n != nbytes)
    throw PlanError("weights byte count " + std::to_string(nbytes) + " does not match dtype and dims (" +
                    std::to_string(n) + " bytes)");
  // In range before any pointer into the blob is formed; aligned as BlobWriter aligns them (kernels
  // load whole elements, and vector loads expect the 64 bytes the blob base has).
  if (offset > size || nbytes > size - offset)
    throw PlanError("weights at offset " + std::to_string(offset) + " (+" + std::to_string(nbytes) +
                    " bytes) lie outside the weight blob (" + std::to_string(size) + " bytes)");
  if (offset % 64 != 0) throw PlanError("weights at offset " + std::to_string(offset) + " are not 64-byte aligned");
  w.data = std::shared_ptr<const uint8_t>(base, base.get() + offset);
  return w;
}

size_t nesting_depth(const uint8_t* p, size_t n) {
  size_t depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t c = p[i];
    if (in_string) {
      if (c == '\\') ++i;  // the escaped character cannot end the string
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

json parse_bounded(const uint8_t* p, size_t n, size_t max_depth) {
  const size_t depth = nesting_depth(p, n);
  if (depth > max_depth)
    throw PlanError("JSON nested " + std::to_string(depth) + " levels deep (at most " + std::to_string(max_depth) +
                    " are accepted)");
  return json::parse(p, p + n);
}

json dim_to_json(const DimExpr& d) {
  if (auto c = d.constant()) return *c;
  if (d.op() == DimExpr::Op::Sym) return d.symbol_name();
  return json::array({enum_to(d.op()), dim_to_json(d.lhs()), dim_to_json(d.rhs())});
}

DimExpr dim_from_json(const json& j, int depth) {
  if (depth > 64) throw PlanError("dimension expression nested too deeply");
  if (j.is_number_integer()) return DimExpr(j.get<int64_t>());
  if (j.is_string()) {
    auto s = j.get<std::string>();
    if (s.empty()) throw PlanError("empty symbol name");
    return DimExpr::symbol(s);
  }
  if (!j.is_array() || j.size() != 3) throw PlanError("bad dimension expression");
  auto op = enum_from<DimExpr::Op>(j[0], "dimension op");
  if (op == DimExpr::Op::Const || op == DimExpr::Op::Sym) throw PlanError("bad dimension expression");
  return DimExpr::binary(op, dim_from_json(j[1], depth + 1), dim_from_json(j[2], depth + 1));
}

json shape_to_json(const Shape& s) {
  json a = json::array();
  for (const DimExpr& d : s) a.push_back(dim_to_json(d));
  return a;
}
Shape shape_from_json(const json& j) {
  if (!j.is_array()) throw PlanError("shape is not an array");
  if (j.size() > kMaxRank) throw PlanError("shape of rank " + std::to_string(j.size()));
  Shape s;
  for (const json& d : j) s.push_back(dim_from_json(d));
  return s;
}

namespace {

json instr_to_json(const PointwiseInstr& i) {
  json j = {{"kind", enum_to(i.kind)},     {"binary", enum_to(i.binary)}, {"unary", enum_to(i.unary)},
            {"activation", i.activation}, {"dtype", enum_to(i.dtype)},   {"constant", real_to(i.constant)},
            {"operands", i.operands}};
  if (i.kind == PointwiseInstr::Kind::kRowReduce) j["reduce"] = enum_to(i.reduce);
  return j;
}
PointwiseInstr instr_from_json(const json& j) {
  PointwiseInstr i{};
  i.kind = enum_from<PointwiseInstr::Kind>(j.at("kind"), "pointwise instruction kind");
  if (i.kind == PointwiseInstr::Kind::kRowReduce) i.reduce = enum_from<ReduceOp>(j.at("reduce"), "reduce op");
  i.binary = enum_from<BinaryOp>(j.at("binary"), "binary op");
  i.unary = enum_from<UnaryOp>(j.at("unary"), "unary op");
  i.activation = j.at("activation").get<ActivationParams>();
  i.dtype = dtype_from(j.at("dtype"));
  i.constant = real_from(j.at("constant"));
  i.operands = j.at("operands").get<std::vector<int32_t>>();
  return i;
}

// Gathered loads as flat arrays: nodes [op, a, b, k]; pieces {input, offset, value, bounds:
// [[node, lo, hi]...]} (the shape checks in index_expr::check run when the layer is re-added).
json gather_to_json(const GatherLoads& g) {
  json nodes = json::array(), regs = json::array();
  for (const IndexNode& n : g.nodes) nodes.push_back({enum_to(n.op), n.a, n.b, n.k});
  for (const auto& pieces : g.registers) {
    json r = json::array();
    for (const LoadPiece& p : pieces) {
      json bounds = json::array();
      for (const IndexBound& b : p.bounds) bounds.push_back({b.node, b.lo, b.hi});
      r.push_back({{"input", p.input}, {"offset", p.offset}, {"value", real_to(p.value)}, {"bounds", bounds}});
    }
    regs.push_back(r);
  }
  return {{"out_dims", g.out_dims}, {"nodes", nodes}, {"registers", regs}};
}
GatherLoads gather_from_json(const json& j) {
  GatherLoads g;
  j.at("out_dims").get_to(g.out_dims);
  for (const json& n : j.at("nodes")) {
    if (!n.is_array() || n.size() != 4) throw PlanError("gather index node is not [op, a, b, k]");
    g.nodes.push_back({enum_from<IndexNode::Op>(n[0], "index node op"), n[1].get<int32_t>(), n[2].get<int32_t>(),
                       n[3].get<int64_t>()});
  }
  for (const json& r : j.at("registers")) {
    std::vector<LoadPiece> pieces;
    for (const json& p : r) {
      LoadPiece lp;
      lp.input = p.at("input").get<int32_t>();
      lp.offset = p.at("offset").get<int32_t>();
      lp.value = real_from(p.at("value"));
      for (const json& b : p.at("bounds")) {
        if (!b.is_array() || b.size() != 3) throw PlanError("gather bound is not [node, lo, hi]");
        lp.bounds.push_back({b[0].get<int32_t>(), b[1].get<int64_t>(), b[2].get<int64_t>()});
      }
      pieces.push_back(std::move(lp));
    }
    g.registers.push_back(std::move(pieces));
  }
  return g;
}

}  // namespace

json params_to_json(const LayerParams& params, BlobWriter& blob) {
  return std::visit(
      [&](const auto& p) -> json {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, ConstantParams>) {
          return {{"weights", blob.add(p.weights)}};
        } else if constexpr (std::is_same_v<P, ElementwiseParams> || std::is_same_v<P, UnaryParams>) {
          return {{"op", enum_to(p.op)}};
        } else if constexpr (std::is_same_v<P, ActivationParams>) {
          return json(p);
        } else if constexpr (std::is_same_v<P, MatMulParams>) {
          return {{"transpose_a", p.transpose_a}, {"transpose_b", p.transpose_b}, {"has_bias", p.has_bias},
                  {"has_residual", p.has_residual}, {"activation", activation_to(p.activation)}};
        } else if constexpr (std::is_same_v<P, ConvolutionParams>) {
          return {{"stride", p.stride},     {"padding", p.padding},   {"dilation", p.dilation},
                  {"output_padding", p.output_padding}, {"groups", p.groups}, {"transposed", p.transposed},
                  {"has_bias", p.has_bias}, {"has_residual", p.has_residual}, {"activation", activation_to(p.activation)},
                  {"channels_last", p.channels_last}};
        } else if constexpr (std::is_same_v<P, PoolingParams>) {
          return {{"type", enum_to(p.type)}, {"kernel", p.kernel}, {"stride", p.stride}, {"padding", p.padding},
                  {"dilation", p.dilation}, {"ceil_mode", p.ceil_mode}, {"count_include_pad", p.count_include_pad},
                  {"divisor_override", opt_to(p.divisor_override)}, {"adaptive_output", p.adaptive_output},
                  {"channels_last", p.channels_last}};
        } else if constexpr (std::is_same_v<P, ReduceParams>) {
          return {{"op", enum_to(p.op)}, {"axes", p.axes}, {"keep_dims", p.keep_dims}, {"correction", real_to(p.correction)}};
        } else if constexpr (std::is_same_v<P, SoftmaxParams>) {
          return {{"axis", p.axis}, {"log", p.log}};
        } else if constexpr (std::is_same_v<P, NormalizationParams>) {
          return {{"kind", enum_to(p.kind)}, {"first_axis", p.first_axis}, {"groups", p.groups},
                  {"epsilon", real_to(p.epsilon)}, {"has_scale", p.has_scale}, {"has_bias", p.has_bias}};
        } else if constexpr (std::is_same_v<P, ShuffleParams>) {
          return {{"first_perm", p.first_perm},
                  {"reshape", p.reshape ? shape_to_json(*p.reshape) : json(nullptr)},
                  {"second_perm", p.second_perm}};
        } else if constexpr (std::is_same_v<P, ConcatParams>) {
          return {{"axis", p.axis}};
        } else if constexpr (std::is_same_v<P, SliceParams>) {
          return {{"start", shape_to_json(p.start)}, {"size", shape_to_json(p.size)}, {"stride", shape_to_json(p.stride)}};
        } else if constexpr (std::is_same_v<P, GatherParams>) {
          return {{"mode", enum_to(p.mode)}, {"axis", p.axis}};
        } else if constexpr (std::is_same_v<P, ScatterParams>) {
          return {{"mode", enum_to(p.mode)}, {"axis", p.axis}, {"reduce", enum_to(p.reduce)}};
        } else if constexpr (std::is_same_v<P, SelectParams> || std::is_same_v<P, ShapeParams> ||
                             std::is_same_v<P, IdentityParams>) {
          return json::object();
        } else if constexpr (std::is_same_v<P, CastParams>) {
          return {{"to", enum_to(p.to)}};
        } else if constexpr (std::is_same_v<P, FillParams>) {
          return {{"op", enum_to(p.op)}, {"dims", shape_to_json(p.dims)}, {"dtype", enum_to(p.dtype)},
                  {"value", real_to(p.value)}, {"start", real_to(p.start)}, {"step", real_to(p.step)}};
        } else if constexpr (std::is_same_v<P, PadParams>) {
          return {{"pre", p.pre}, {"post", p.post}, {"mode", enum_to(p.mode)}, {"value", real_to(p.value)}};
        } else if constexpr (std::is_same_v<P, ResizeParams>) {
          return {{"mode", enum_to(p.mode)}, {"output_spatial", shape_to_json(p.output_spatial)},
                  {"scales", reals_to(p.scales)}, {"align_corners", p.align_corners}};
        } else if constexpr (std::is_same_v<P, CumSumParams>) {
          return {{"axis", p.axis}, {"exclusive", p.exclusive}, {"reverse", p.reverse}};
        } else if constexpr (std::is_same_v<P, TopKParams>) {
          return {{"axis", p.axis}, {"k", p.k}, {"largest", p.largest}, {"sorted", p.sorted}};
        } else if constexpr (std::is_same_v<P, NonZeroParams>) {
          return {{"count_symbol", p.count_symbol}};
        } else if constexpr (std::is_same_v<P, AttentionParams>) {
          json views = json::array();
          for (const auto& w : p.views)
            views.push_back(w ? json{{"offset", w->offset}, {"dims", w->dims}, {"strides", w->strides}} : json());
          return {{"causal", p.causal}, {"scale", opt_to(p.scale)}, {"has_mask", p.has_mask}, {"views", views},
                  {"output_perm", p.output_perm}};
        } else if constexpr (std::is_same_v<P, PluginParams>) {
          return {{"plugin", p.plugin}, {"attributes", p.attributes}};
        } else if constexpr (std::is_same_v<P, FusedPointwiseParams>) {
          json prog = json::array();
          for (const PointwiseInstr& i : p.program) prog.push_back(instr_to_json(i));
          json j = {{"program", prog}, {"outputs", p.outputs}};
          if (p.gather) j["gather"] = gather_to_json(*p.gather);
          if (p.row_length) j["row_length"] = p.row_length;
          return j;
        } else {
          static_assert(detail::kNoCaseFor<P>, "params_to_json: a layer kind without a case");
        }
      },
      params);
}

namespace {

template <size_t I = 0>
LayerParams default_params_for(const std::string& kind) {
  if constexpr (I < detail::kLayerKindCount) {
    if (kind == detail::layer_kind_name_at(I)) return LayerParams(std::in_place_index<I>);
    return default_params_for<I + 1>(kind);
  } else {
    throw PlanError("unknown layer kind '" + kind + "'");
  }
}

}  // namespace

LayerParams params_from_json(const std::string& kind, const json& j, const BlobReader& blob) {
  LayerParams params = default_params_for(kind);
  std::visit(
      [&](auto& p) {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, ConstantParams>) {
          p.weights = blob.get(j.at("weights"));
        } else if constexpr (std::is_same_v<P, ElementwiseParams>) {
          p.op = enum_from<BinaryOp>(j.at("op"), "binary op");
        } else if constexpr (std::is_same_v<P, UnaryParams>) {
          p.op = enum_from<UnaryOp>(j.at("op"), "unary op");
        } else if constexpr (std::is_same_v<P, ActivationParams>) {
          p = j.get<ActivationParams>();
        } else if constexpr (std::is_same_v<P, MatMulParams>) {
          p.transpose_a = j.at("transpose_a").get<bool>();
          p.transpose_b = j.at("transpose_b").get<bool>();
          p.has_bias = j.at("has_bias").get<bool>();
          p.has_residual = j.value("has_residual", false);
          p.activation = activation_from(j.at("activation"));
        } else if constexpr (std::is_same_v<P, ConvolutionParams>) {
          j.at("stride").get_to(p.stride);
          j.at("padding").get_to(p.padding);
          j.at("dilation").get_to(p.dilation);
          j.at("output_padding").get_to(p.output_padding);
          j.at("groups").get_to(p.groups);
          j.at("transposed").get_to(p.transposed);
          j.at("has_bias").get_to(p.has_bias);
          p.activation = activation_from(j.at("activation"));
          p.channels_last = j.value("channels_last", false);
          p.has_residual = j.value("has_residual", false);
        } else if constexpr (std::is_same_v<P, PoolingParams>) {
          p.type = enum_from<PoolType>(j.at("type"), "pool type");
          j.at("kernel").get_to(p.kernel);
          j.at("stride").get_to(p.stride);
          j.at("padding").get_to(p.padding);
          j.at("dilation").get_to(p.dilation);
          j.at("ceil_mode").get_to(p.ceil_mode);
          j.at("count_include_pad").get_to(p.count_include_pad);
          if (!j.at("divisor_override").is_null()) p.divisor_override = j.at("divisor_override").get<int64_t>();
          j.at("adaptive_output").get_to(p.adaptive_output);
          p.channels_last = j.value("channels_last", false);
        } else if constexpr (std::is_same_v<P, ReduceParams>) {
          p.op = enum_from<ReduceOp>(j.at("op"), "reduce op");
          j.at("axes").get_to(p.axes);
          j.at("keep_dims").get_to(p.keep_dims);
          p.correction = real_from(j.at("correction"));
        } else if constexpr (std::is_same_v<P, SoftmaxParams>) {
          j.at("axis").get_to(p.axis);
          j.at("log").get_to(p.log);
        } else if constexpr (std::is_same_v<P, NormalizationParams>) {
          p.kind = enum_from<NormKind>(j.at("kind"), "normalization kind");
          j.at("first_axis").get_to(p.first_axis);
          j.at("groups").get_to(p.groups);
          p.epsilon = real_from(j.at("epsilon"));
          j.at("has_scale").get_to(p.has_scale);
          j.at("has_bias").get_to(p.has_bias);
        } else if constexpr (std::is_same_v<P, ShuffleParams>) {
          j.at("first_perm").get_to(p.first_perm);
          if (!j.at("reshape").is_null()) p.reshape = shape_from_json(j.at("reshape"));
          j.at("second_perm").get_to(p.second_perm);
        } else if constexpr (std::is_same_v<P, ConcatParams>) {
          j.at("axis").get_to(p.axis);
        } else if constexpr (std::is_same_v<P, SliceParams>) {
          p.start = shape_from_json(j.at("start"));
          p.size = shape_from_json(j.at("size"));
          p.stride = shape_from_json(j.at("stride"));
        } else if constexpr (std::is_same_v<P, GatherParams>) {
          p.mode = enum_from<GatherMode>(j.at("mode"), "gather mode");
          j.at("axis").get_to(p.axis);
        } else if constexpr (std::is_same_v<P, ScatterParams>) {
          p.mode = enum_from<GatherMode>(j.at("mode"), "scatter mode");
          j.at("axis").get_to(p.axis);
          p.reduce = enum_from<ScatterReduce>(j.at("reduce"), "scatter reduce");
        } else if constexpr (std::is_same_v<P, CastParams>) {
          p.to = dtype_from(j.at("to"));
        } else if constexpr (std::is_same_v<P, FillParams>) {
          p.op = enum_from<FillOp>(j.at("op"), "fill op");
          p.dims = shape_from_json(j.at("dims"));
          p.dtype = dtype_from(j.at("dtype"));
          p.value = real_from(j.at("value"));
          p.start = real_from(j.at("start"));
          p.step = real_from(j.at("step"));
        } else if constexpr (std::is_same_v<P, PadParams>) {
          j.at("pre").get_to(p.pre);
          j.at("post").get_to(p.post);
          p.mode = enum_from<PadMode>(j.at("mode"), "pad mode");
          p.value = real_from(j.at("value"));
        } else if constexpr (std::is_same_v<P, ResizeParams>) {
          p.mode = enum_from<ResizeMode>(j.at("mode"), "resize mode");
          p.output_spatial = shape_from_json(j.at("output_spatial"));
          p.scales = reals_from(j.at("scales"));
          j.at("align_corners").get_to(p.align_corners);
        } else if constexpr (std::is_same_v<P, CumSumParams>) {
          j.at("axis").get_to(p.axis);
          j.at("exclusive").get_to(p.exclusive);
          j.at("reverse").get_to(p.reverse);
        } else if constexpr (std::is_same_v<P, TopKParams>) {
          j.at("axis").get_to(p.axis);
          j.at("k").get_to(p.k);
          j.at("largest").get_to(p.largest);
          j.at("sorted").get_to(p.sorted);
        } else if constexpr (std::is_same_v<P, NonZeroParams>) {
          j.at("count_symbol").get_to(p.count_symbol);
        } else if constexpr (std::is_same_v<P, AttentionParams>) {
          j.at("causal").get_to(p.causal);
          if (!j.at("scale").is_null()) p.scale = real_from(j.at("scale"));
          j.at("has_mask").get_to(p.has_mask);
          if (j.contains("views"))
            for (const json& w : j.at("views")) {
              if (w.is_null()) {
                p.views.emplace_back();
                continue;
              }
              StridedView sv;
              w.at("offset").get_to(sv.offset);
              w.at("dims").get_to(sv.dims);
              w.at("strides").get_to(sv.strides);
              p.views.emplace_back(std::move(sv));
            }
          if (j.contains("output_perm")) j.at("output_perm").get_to(p.output_perm);
        } else if constexpr (std::is_same_v<P, PluginParams>) {
          j.at("plugin").get_to(p.plugin);
          j.at("attributes").get_to(p.attributes);
        } else if constexpr (std::is_same_v<P, FusedPointwiseParams>) {
          for (const json& i : j.at("program")) p.program.push_back(instr_from_json(i));
          j.at("outputs").get_to(p.outputs);
          if (j.contains("gather")) p.gather = gather_from_json(j.at("gather"));
          if (j.contains("row_length")) j.at("row_length").get_to(p.row_length);
        } else if constexpr (std::is_same_v<P, SelectParams> || std::is_same_v<P, ShapeParams> ||
                             std::is_same_v<P, IdentityParams>) {
          // no parameters
        } else {
          static_assert(detail::kNoCaseFor<P>, "params_from_json: a layer kind without a case");
        }
      },
      params);
  return params;
}

}  // namespace plan_json
}  // namespace kiln::engine
