// F.grid_sample (aten.grid_sampler_2d, and aten.grid_sampler on 4-d inputs) as gathers: the grid's
// normalized coordinates become pixel coordinates (padding modes applied to the coordinates, as
// PyTorch does), and each of the 1 (nearest) or 4 (bilinear) neighbouring pixels is gathered
// from the input flattened over H*W and weighted (bicubic: 16 neighbours), a neighbour outside the
// image weighing 0.
// Spatial transformers, optical-flow warps and deformable sampling run this way in one segment.
// Also F.affine_grid, and antialiased resizing (torchvision's Resize) as separable taps.
#include <algorithm>
#include <cmath>
#include <optional>

#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace {
namespace ew = impl::elementwise;
namespace sh = impl::shuffle;

enum class Interpolation : int64_t { kBilinear = 0, kNearest = 1, kBicubic = 2 };
enum class Padding : int64_t { kZeros = 0, kBorder = 1, kReflection = 2 };

struct Sampler {
  ConversionContext& ctx;
  const std::string& target;
  const std::string& name;
  bool align_corners;
  Padding padding;

  Tensor* f(Tensor* (*op)(ConversionContext&, const Target&, SourceIR, const std::string&, const Value&, const Value&),
            const std::string& what, const Value& a, const Value& b) {
    return op(ctx, target, kAten, name + "/" + what, a, b);
  }
  Tensor* unary(engine::UnaryOp op, const std::string& what, Tensor* x) {
    return impl::unary::unary(ctx, target, kAten, name + "/" + what, op, x);
  }
  Tensor* clip(const std::string& what, Tensor* x, double hi) {
    return impl::activation::clamp(ctx, target, kAten, name + "/" + what, x, 0.0, hi);
  }

  // Reflects x into [lo2/2, hi2/2] (bounds given doubled, as PyTorch's reflect_coordinates takes them).
  Tensor* reflect(const std::string& axis, Tensor* x, int64_t lo2, int64_t hi2) {
    if (lo2 == hi2) return f(ew::mul, axis + "_reflect_zero", x, 0.0);
    const double lo = lo2 / 2.0, span = (hi2 - lo2) / 2.0;
    Tensor* d = unary(engine::UnaryOp::kAbs, axis + "_reflect_abs", f(ew::sub, axis + "_reflect_shift", x, lo));
    Tensor* extra = f(ew::fmod, axis + "_reflect_extra", d, span);
    Tensor* flips = unary(engine::UnaryOp::kFloor, axis + "_reflect_flips", f(ew::div, axis + "_reflect_div", d, span));
    Tensor* even = f(ew::eq, axis + "_reflect_even", f(ew::fmod, axis + "_reflect_parity", flips, 2.0), 0.0);
    Tensor* up = f(ew::add, axis + "_reflect_up", extra, lo);
    Tensor* down = f(ew::sub, axis + "_reflect_down", span + lo, extra);
    return impl::select::where(ctx, target, kAten, name + "/" + axis + "_reflect", even, up, down);
  }

  // Normalized [-1, 1] grid coordinates to pixel coordinates along an axis of `size` pixels.
  Tensor* unnormalized(const std::string& axis, Tensor* g, int64_t size) {
    return align_corners ? f(ew::mul, axis + "_scale", f(ew::add, axis + "_shift", g, 1.0), (size - 1) / 2.0)
                         : f(ew::div, axis + "_scale",
                             f(ew::sub, axis + "_px", f(ew::mul, axis + "_size",
                                                       f(ew::add, axis + "_shift", g, 1.0), double(size)), 1.0),
                             2.0);
  }
  Tensor* source_coordinate(const std::string& axis, Tensor* g, int64_t size) {
    return padded(axis, unnormalized(axis, g, size), size);
  }
  // A pixel coordinate moved by the padding mode (border: clipped; reflection: reflected, then
  // clipped); zeros padding leaves it, and taps outside then weigh 0.
  Tensor* padded(const std::string& axis, Tensor* x, int64_t size) {
    if (padding == Padding::kBorder) return clip(axis + "_border", x, double(size - 1));
    if (padding == Padding::kReflection) {
      x = align_corners ? reflect(axis, x, 0, 2 * (size - 1)) : reflect(axis, x, -1, 2 * size - 1);
      return clip(axis + "_reflect_clip", x, double(size - 1));
    }
    return x;
  }

  // The gather index ([N, C, Ho*Wo] into an input flattened to [N, C, H*W]) and weight ([N, 1,
  // Ho*Wo]; 0 outside the image) of the pixel at integer-valued coordinates (cx, cy) ([N, Ho, Wo]).
  struct Tap {
    Tensor* index;
    Tensor* weight;
  };
  Tap tap(const std::string& tag, const std::vector<DimExpr>& in, Tensor* cx, Tensor* cy, const Value& weight,
          int64_t h, int64_t w) {
    const std::vector<DimExpr> out = cx->shape();  // [N, Ho, Wo]
    const DimExpr points = out[1] * out[2];
    Tensor* inside = f(ew::logical_and, tag + "_in",
                       f(ew::logical_and, tag + "_in_x", f(ew::ge, tag + "_x0", cx, 0.0), f(ew::le, tag + "_x1", cx, double(w - 1))),
                       f(ew::logical_and, tag + "_in_y", f(ew::ge, tag + "_y0", cy, 0.0), f(ew::le, tag + "_y1", cy, double(h - 1))));
    Tensor* linear = f(ew::add, tag + "_linear", f(ew::mul, tag + "_row", clip(tag + "_cy", cy, double(h - 1)), double(w)),
                       clip(tag + "_cx", cx, double(w - 1)));
    Tensor* index = impl::cast::to_dtype(ctx, target, kAten, name + "/" + tag + "_index", linear, DataType::kInt64);
    index = sh::reshape(ctx, target, kAten, name + "/" + tag + "_index_row", index, {out[0], DimExpr(int64_t{1}), points});
    index = sh::expand(ctx, target, kAten, name + "/" + tag + "_index_all", index, {out[0], in[1], points});
    Tensor* wt = impl::select::where(ctx, target, kAten, name + "/" + tag + "_weight", inside, weight, 0.0);
    wt = sh::reshape(ctx, target, kAten, name + "/" + tag + "_weight_row", wt, {out[0], DimExpr(int64_t{1}), points});
    return {index, wt};
  }
};

bool sampler_supported(const ir::Node& n) {
  const ir::Argument in = node_arg(n, "input"), mode = node_arg(n, "interpolation_mode"), pad = node_arg(n, "padding_mode");
  if (!in.is_node() || !in.node()->meta.is_tensor() || !mode.is<int64_t>() || !pad.is<int64_t>()) return false;
  const auto& m = in.node()->meta.tensor;
  const int64_t interpolation = mode.as<int64_t>(), padding = pad.as<int64_t>();
  return m.rank() == 4 && m.sizes[2].is_constant() && m.sizes[3].is_constant() && ir::is_floating(m.dtype) &&
         interpolation >= int64_t(Interpolation::kBilinear) && interpolation <= int64_t(Interpolation::kBicubic) &&
         padding >= 0 && padding <= int64_t(Padding::kReflection);
}

// The taps of an antialiased resize along one dim (PyTorch's separable filter: each output pixel
// averages the inputs under a triangle (bilinear) or cubic (bicubic, a = -0.5) filter stretched by
// the scale when shrinking, the weights normalized to 1): index[k][o] and weight[k][o] for as many
// taps as the widest output needs, the narrower ones padded with weight 0.
struct AntialiasTaps {
  std::vector<std::vector<int64_t>> index;
  std::vector<std::vector<float>> weight;
};
AntialiasTaps antialias_taps(int64_t in, int64_t out, bool align_corners, std::optional<double> scale_factor,
                             bool bicubic) {
  double scale = align_corners ? (out > 1 ? double(in - 1) / double(out - 1) : 0.0)
                               : (scale_factor ? 1.0 / *scale_factor : double(in) / double(out));
  const double taps = bicubic ? 4.0 : 2.0;
  const double support = scale >= 1.0 ? taps * 0.5 * scale : taps * 0.5;
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  auto filter = [bicubic](double x) {
    x = std::abs(x);
    if (!bicubic) return std::max(0.0, 1.0 - x);
    constexpr double a = -0.5;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
  };
  std::vector<int64_t> firsts(static_cast<size_t>(out));
  std::vector<std::vector<double>> rows(static_cast<size_t>(out));
  size_t widest = 1;
  for (int64_t i = 0; i < out; ++i) {
    const double center = scale * (double(i) + 0.5);
    const int64_t first = std::max<int64_t>(int64_t(center - support + 0.5), 0);
    const int64_t count = std::min<int64_t>(int64_t(center + support + 0.5), in) - first;
    std::vector<double>& w = rows[size_t(i)];
    double total = 0;
    for (int64_t j = 0; j < count; ++j) total += w.emplace_back(filter((double(j + first) - center + 0.5) * invscale));
    if (total != 0)
      for (double& v : w) v /= total;
    firsts[size_t(i)] = first;
    widest = std::max(widest, w.size());
  }
  AntialiasTaps t{std::vector<std::vector<int64_t>>(widest, std::vector<int64_t>(size_t(out))),
                  std::vector<std::vector<float>>(widest, std::vector<float>(size_t(out), 0.0f))};
  for (int64_t i = 0; i < out; ++i)
    for (size_t k = 0; k < widest; ++k) {
      t.index[k][size_t(i)] = std::min<int64_t>(firsts[size_t(i)] + int64_t(k), in - 1);
      if (k < rows[size_t(i)].size()) t.weight[k][size_t(i)] = float(rows[size_t(i)][k]);
    }
  return t;
}

}  // namespace

void register_grid_sample() {
  add({"aten.grid_sampler_2d.default", "aten.grid_sampler.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("input");
    Tensor* grid = a.tensor("grid");
    const std::vector<int64_t> hw = impl::static_dims(x, "grid_sampler input");
    const int64_t h = hw[2], w = hw[3];
    if (grid->rank() != 4) throw ConversionError("grid_sampler: grid must be [N, H_out, W_out, 2]");
    Sampler s{ctx, target, name, a.b("align_corners"), Padding(a.i("padding_mode"))};
    const std::vector<DimExpr> in = x->shape();
    std::vector<DimExpr> out;
    std::vector<Sampler::Tap> taps;
    {
      // Pixel coordinates, indices and weights in fp32 whatever the build's precision: positions
      // past 256 are not whole numbers in bf16, and a gather would read the wrong pixel.
      engine::Network::Fp32Scope fp32(ctx.net);
      Tensor* g = impl::cast::to_dtype(ctx, target, kAten, name + "/grid_f32", grid, DataType::kFloat32);
      Tensor* gx = impl::select::select(ctx, target, kAten, name + "/gx", g, 3, int64_t{0});
      Tensor* gy = impl::select::select(ctx, target, kAten, name + "/gy", g, 3, int64_t{1});
      out = gx->shape();
      const Interpolation mode = Interpolation(a.i("interpolation_mode"));
      if (mode == Interpolation::kBicubic) {
        // 4 x 4 taps around floor(x, y), each weighted by cubic convolution (a = -0.75) of its
        // distance, each tap's coordinates moved by the padding mode on their own (PyTorch's
        // get_value_bounded).
        Tensor* ix = s.unnormalized("x", gx, w);
        Tensor* iy = s.unnormalized("y", gy, h);
        Tensor* x0 = s.unary(engine::UnaryOp::kFloor, "x0", ix);
        Tensor* y0 = s.unary(engine::UnaryOp::kFloor, "y0", iy);
        auto cubic_weights = [&](Tensor* t, const std::string& axis) {  // for offsets -1, 0, 1, 2
          constexpr double A = -0.75;
          auto near = [&](Tensor* d, const std::string& what) {  // ((A + 2) d - (A + 3)) d^2 + 1, |d| <= 1
            Tensor* d2 = s.f(ew::mul, what + "_d2", d, d);
            return s.f(ew::add, what, s.f(ew::mul, what + "_poly", s.f(ew::sub, what + "_lin", s.f(ew::mul, what + "_a", d, A + 2), A + 3), d2), 1.0);
          };
          auto far = [&](Tensor* d, const std::string& what) {  // ((A d - 5A) d + 8A) d - 4A, 1 <= |d| <= 2
            Tensor* q = s.f(ew::sub, what + "_q", s.f(ew::mul, what + "_ad", d, A), 5 * A);
            Tensor* c = s.f(ew::add, what + "_c", s.f(ew::mul, what + "_qd", q, d), 8 * A);
            return s.f(ew::sub, what, s.f(ew::mul, what + "_cd", c, d), 4 * A);
          };
          Tensor* rest = s.f(ew::sub, axis + "_rest", 1.0, t);
          return std::vector<Tensor*>{far(s.f(ew::add, axis + "_t1", t, 1.0), axis + "_w0"), near(t, axis + "_w1"),
                                      near(rest, axis + "_w2"), far(s.f(ew::add, axis + "_r1", rest, 1.0), axis + "_w3")};
        };
        const std::vector<Tensor*> wx = cubic_weights(s.f(ew::sub, "tx", ix, x0), "cx");
        const std::vector<Tensor*> wy = cubic_weights(s.f(ew::sub, "ty", iy, y0), "cy");
        for (int i = 0; i < 4; ++i) {
          Tensor* cy = s.padded("ty" + std::to_string(i), s.f(ew::add, "ty_at" + std::to_string(i), y0, double(i - 1)), h);
          for (int j = 0; j < 4; ++j) {
            const std::string tag = "c" + std::to_string(i) + std::to_string(j);
            Tensor* cx = s.padded("tx" + tag, s.f(ew::add, "tx_at" + tag, x0, double(j - 1)), w);
            taps.push_back(s.tap(tag, in, cx, cy, s.f(ew::mul, tag + "_w", wx[size_t(j)], wy[size_t(i)]), h, w));
          }
        }
      } else {
        Tensor* ix = s.source_coordinate("x", gx, w);
        Tensor* iy = s.source_coordinate("y", gy, h);
        if (mode == Interpolation::kNearest) {
          taps.push_back(s.tap("nearest", in, s.unary(engine::UnaryOp::kRound, "rx", ix),
                               s.unary(engine::UnaryOp::kRound, "ry", iy), 1.0, h, w));
        } else {
          Tensor* x0 = s.unary(engine::UnaryOp::kFloor, "x0", ix);
          Tensor* y0 = s.unary(engine::UnaryOp::kFloor, "y0", iy);
          Tensor* x1 = s.f(ew::add, "x1", x0, 1.0);
          Tensor* y1 = s.f(ew::add, "y1", y0, 1.0);
          Tensor* fx = s.f(ew::sub, "fx", ix, x0);  // weight of the right column
          Tensor* fy = s.f(ew::sub, "fy", iy, y0);
          Tensor* gx0 = s.f(ew::sub, "fx_left", 1.0, fx);
          Tensor* gy0 = s.f(ew::sub, "fy_top", 1.0, fy);
          taps.push_back(s.tap("nw", in, x0, y0, s.f(ew::mul, "w_nw", gx0, gy0), h, w));
          taps.push_back(s.tap("ne", in, x1, y0, s.f(ew::mul, "w_ne", fx, gy0), h, w));
          taps.push_back(s.tap("sw", in, x0, y1, s.f(ew::mul, "w_sw", gx0, fy), h, w));
          taps.push_back(s.tap("se", in, x1, y1, s.f(ew::mul, "w_se", fx, fy), h, w));
        }
      }
    }
    Tensor* flat = sh::reshape(ctx, target, kAten, name + "/flat", x, {in[0], in[1], in[2] * in[3]});
    Tensor* y = nullptr;
    for (size_t i = 0; i < taps.size(); ++i) {
      const std::string tag = "tap" + std::to_string(i);
      Tensor* value = impl::select::gather(ctx, target, kAten, name + "/" + tag + "_gather", flat, 2, taps[i].index);
      Tensor* term = s.f(ew::mul, tag + "_weighted", value, taps[i].weight);
      y = y ? s.f(ew::add, tag + "_sum", y, term) : term;
    }
    if (y->dtype() != x->dtype()) y = impl::cast::to_dtype(ctx, target, kAten, name + "/cast", y, x->dtype());
    return sh::reshape(ctx, target, kAten, name, y, {in[0], in[1], out[1], out[2]});
  }, {[](const ir::Node& n, const CompilationSettings&) { return sampler_supported(n); },
      "4-d float input with static H and W"});
  // F.affine_grid (4-d): the output's normalized pixel centres [x, y, 1] (the corners with
  // align_corners) times each theta, [N, H, W, 2].
  add({"aten.affine_grid_generator.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* theta = a.tensor("theta");
    const std::vector<int64_t> size = a.ints("size");
    const int64_t h = size[2], w = size[3];
    const bool corners = a.b("align_corners");
    auto coordinate = [corners](int64_t i, int64_t n) {
      if (n <= 1) return 0.0f;
      return corners ? -1.0f + 2.0f * float(i) / float(n - 1) : (2.0f * float(i) + 1.0f) / float(n) - 1.0f;
    };
    std::vector<float> base;
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) base.insert(base.end(), {coordinate(x, w), coordinate(y, h), 1.0f});
    Tensor* points = ctx.constant(engine::Weights::copy_of(DataType::kFloat32, {1, h * w, 3}, base.data()), name + "/base");
    points = impl::cast::to_dtype(ctx, target, kAten, name + "/base_cast", points, theta->dtype());
    Tensor* grid = impl::matmul::matrix_multiply(ctx, target, kAten, name + "/grid", points, theta, false, true);  // [N, H*W, 2]
    return impl::shuffle::reshape(ctx, target, kAten, name, grid, {theta->shape()[0], DimExpr(h), DimExpr(w), DimExpr(int64_t{2})});
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::Argument size = node_arg(n, "size");
        const ir::TensorMeta* theta = arg_meta(n, "theta");
        if (!theta || theta->rank() != 3 || !ir::is_floating(theta->dtype) || !size.is<ir::Argument::List>()) return false;
        const auto& l = size.as<ir::Argument::List>();
        return l.size() == 4 && l[2].is<int64_t>() && l[3].is<int64_t>();
      }, "4-d size with static height and width"});
  // Antialiased bilinear / bicubic resizing (torchvision's Resize(antialias=True) on tensors): the
  // rows and then the columns resampled by their taps (as many as the filter's support covers:
  // memory-bound gathers, not a dense matrix of mostly zeros).
  add({"aten._upsample_bilinear2d_aa.vec", "aten._upsample_bilinear2d_aa.default", "aten._upsample_bicubic2d_aa.vec",
       "aten._upsample_bicubic2d_aa.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    const bool vec = target.find(".vec") != std::string::npos, bicubic = target.find("bicubic") != std::string::npos;
    Tensor* x = vec ? a.tensor("input") : a.tensor("self");
    const std::vector<DimExpr> out = node_shape(ctx);
    const int64_t h = known_extent(x, 2, "antialiased resize"), w = known_extent(x, 3, "antialiased resize");
    const int64_t oh = known_extent(out[2], "antialiased resize"), ow = known_extent(out[3], "antialiased resize");
    std::optional<double> sh_, sw_;  // scale factors given, which PyTorch uses instead of the size ratio
    if (vec && !a.none("scale_factors")) {
      std::vector<double> f;
      for (const Value& v : a["scale_factors"].list()) f.push_back(v.to_double());
      sh_ = f.at(0), sw_ = f.at(f.size() > 1 ? 1 : 0);
    } else if (!vec) {
      if (!a.none("scales_h")) sh_ = a.d("scales_h");
      if (!a.none("scales_w")) sw_ = a.d("scales_w");
    }
    const bool corners = a.b("align_corners");
    const AntialiasTaps rows = antialias_taps(h, oh, corners, sh_, bicubic), cols = antialias_taps(w, ow, corners, sw_, bicubic);
    Tensor* y = weighted_taps(ctx, target, name + "/rows", x, 2, rows.index, rows.weight);
    return weighted_taps(ctx, target, name, y, 3, cols.index, cols.weight);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const bool vec = n.target.find(".vec") != std::string::npos;
        const ir::TensorMeta* m = arg_meta(n, vec ? "input" : "self");
        return m && m->rank() == 4 && ir::is_floating(m->dtype) && static_size(n, vec ? "input" : "self", 2) &&
               static_size(n, vec ? "input" : "self", 3) && n.meta.is_tensor() && n.meta.tensor.is_static() &&
               n.meta.tensor.static_numel().value_or(0) > 0;
      }, "4-d floats of static height and width"});
}

}  // namespace kiln::conversion::converters
