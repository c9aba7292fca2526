// torchvision.ops.roi_align (torchvision.roi_align.default), the pooling of detection heads
// (Faster/Mask R-CNN's MultiScaleRoIAlign), as gathers: for each region of interest its
// sampling_ratio x sampling_ratio points per output bin are placed on the region's grid, each
// point is the bilinear interpolation of its 4 neighbouring pixels (gathered as rows of the input
// laid out [N*H*W, C], so no image is copied per region), and each bin averages its points.
// torchvision's edge rules: a point more than one pixel outside the image counts 0, a point
// inside is clamped to the image. An adaptive sampling_ratio (<= 0: points per bin follow each
// region's size, a data-dependent count) is declined and runs in PyTorch.
#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace {
namespace ew = impl::elementwise;
namespace sh = impl::shuffle;

bool roi_align_supported(const ir::Node& n) {
  const ir::Argument in = node_arg(n, "input"), rois = node_arg(n, "rois"), ratio = node_arg(n, "sampling_ratio");
  if (!in.is_node() || !in.node()->meta.is_tensor() || !rois.is_node() || !rois.node()->meta.is_tensor() ||
      !ratio.is<int64_t>() || ratio.as<int64_t>() <= 0)
    return false;
  const auto& m = in.node()->meta.tensor;
  const auto& r = rois.node()->meta.tensor;
  return m.rank() == 4 && m.sizes[1].is_constant() && m.sizes[2].is_constant() && m.sizes[3].is_constant() &&
         ir::is_floating(m.dtype) && ir::is_floating(r.dtype) && r.rank() == 2 && r.sizes[1].is_constant() &&
         r.sizes[1].value == 5;
}

}  // namespace

void register_roi_align() {
  add({"torchvision.roi_align.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("input");
    Tensor* rois = a.tensor("rois");
    const double scale = a.d("spatial_scale");
    const int64_t ph = a.i("pooled_height"), pw = a.i("pooled_width"), ratio = a.i("sampling_ratio");
    const bool aligned = a.b("aligned");
    if (ph <= 0 || pw <= 0) throw ConversionError("roi_align: pooled sizes must be positive");
    const std::vector<int64_t> dims = impl::static_dims(x, "roi_align input");
    const int64_t C = dims[1], H = dims[2], W = dims[3];
    auto nm = [&](const std::string& what) { return name + "/" + what; };
    auto f = [&](auto op, const std::string& what, const Value& u, const Value& v) {
      return op(ctx, target, kAten, nm(what), u, v);
    };
    const std::vector<DimExpr> rshape = rois->shape();
    const DimExpr R = rshape[0];
    const int64_t sy = ph * ratio, sx = pw * ratio;
    // The positions, neighbour indices and weights of every sample point: in fp32 whatever the
    // build's precision (engine::Network::Fp32Scope), as pixel positions past 256 are not whole
    // numbers in bf16 and a gather would read the wrong pixel.
    struct Tap {
      Tensor* index;   // [R, SY, SX] i64 rows of the [N*H*W, C] table
      Tensor* weight;  // [R, SY, SX, 1]
    };
    std::vector<Tap> taps;
    {
      engine::Network::Fp32Scope fp32(ctx.net);
      Tensor* r = impl::cast::to_dtype(ctx, target, kAten, nm("rois_f32"), rois, DataType::kFloat32);
      auto column = [&](int64_t i, const std::string& what) {  // [R, 1]
        return impl::slice::slice_op(ctx, target, kAten, nm(what), r, 1, i, i + 1, 1);
      };
      const double offset = aligned ? 0.5 : 0.0;
      Tensor* batch = column(0, "batch");
      Tensor* x0 = f(ew::sub, "x_start", f(ew::mul, "x1_scaled", column(1, "x1"), scale), offset);
      Tensor* y0 = f(ew::sub, "y_start", f(ew::mul, "y1_scaled", column(2, "y1"), scale), offset);
      Tensor* width = f(ew::sub, "width", f(ew::sub, "x_end", f(ew::mul, "x2_scaled", column(3, "x2"), scale), offset), x0);
      Tensor* height = f(ew::sub, "height", f(ew::sub, "y_end", f(ew::mul, "y2_scaled", column(4, "y2"), scale), offset), y0);
      if (!aligned) {  // torchvision's legacy rule: regions at least one pixel wide
        width = f(ew::maximum, "width_min", width, 1.0);
        height = f(ew::maximum, "height_min", height, 1.0);
      }
      // Point j of an axis with `bins` bins: bin j / ratio, sub-point j % ratio, at a fraction of
      // the region's extent ((bin + (sub + 0.5) / ratio) / bins), a constant per point.
      auto fractions = [&](int64_t bins, const std::string& what) {
        std::vector<float> v(size_t(bins * ratio));
        for (int64_t j = 0; j < bins * ratio; ++j)
          v[size_t(j)] = float((double(j / ratio) + (double(j % ratio) + 0.5) / double(ratio)) / double(bins));
        return ctx.constant(engine::Weights::copy_of(DataType::kFloat32, {1, bins * ratio}, v.data()), nm(what));
      };
      Tensor* ys = f(ew::add, "ys", y0, f(ew::mul, "ys_extent", height, fractions(ph, "y_fractions")));
      Tensor* xs = f(ew::add, "xs", x0, f(ew::mul, "xs_extent", width, fractions(pw, "x_fractions")));
      ys = sh::reshape(ctx, target, kAten, nm("ys_col"), ys, {R, DimExpr(sy), DimExpr(int64_t{1})});
      xs = sh::reshape(ctx, target, kAten, nm("xs_row"), xs, {R, DimExpr(int64_t{1}), DimExpr(sx)});
      // Points more than a pixel outside count 0; the rest are clamped into the image.
      Tensor* inside = f(ew::logical_and, "inside",
                         f(ew::logical_and, "inside_y", f(ew::ge, "y_lo", ys, -1.0), f(ew::le, "y_hi", ys, double(H))),
                         f(ew::logical_and, "inside_x", f(ew::ge, "x_lo", xs, -1.0), f(ew::le, "x_hi", xs, double(W))));
      Tensor* yc = impl::activation::clamp(ctx, target, kAten, nm("y_clamped"), ys, 0.0, double(H - 1));
      Tensor* xc = impl::activation::clamp(ctx, target, kAten, nm("x_clamped"), xs, 0.0, double(W - 1));
      Tensor* ylo = impl::unary::unary(ctx, target, kAten, nm("y_low"), engine::UnaryOp::kFloor, yc);
      Tensor* xlo = impl::unary::unary(ctx, target, kAten, nm("x_low"), engine::UnaryOp::kFloor, xc);
      Tensor* yhi = f(ew::minimum, "y_high", f(ew::add, "y_next", ylo, 1.0), double(H - 1));
      Tensor* xhi = f(ew::minimum, "x_high", f(ew::add, "x_next", xlo, 1.0), double(W - 1));
      Tensor* ly = f(ew::sub, "ly", yc, ylo);
      Tensor* lx = f(ew::sub, "lx", xc, xlo);
      Tensor* hy = f(ew::sub, "hy", 1.0, ly);
      Tensor* hx = f(ew::sub, "hx", 1.0, lx);
      Tensor* base = f(ew::mul, "image_base", sh::reshape(ctx, target, kAten, nm("batch_col"), batch,
                                                          {R, DimExpr(int64_t{1}), DimExpr(int64_t{1})}),
                       double(H * W));
      Tensor* mask = impl::cast::to_dtype(ctx, target, kAten, nm("inside_f32"), inside, DataType::kFloat32);
      const struct { Tensor *yi, *xi, *wy, *wx; const char* tag; } corners[] = {
          {ylo, xlo, hy, hx, "ll"}, {ylo, xhi, hy, lx, "lh"}, {yhi, xlo, ly, hx, "hl"}, {yhi, xhi, ly, lx, "hh"}};
      for (const auto& c : corners) {
        const std::string tag = c.tag;
        Tensor* linear = f(ew::add, tag + "_linear", f(ew::add, tag + "_row", base, f(ew::mul, tag + "_y", c.yi, double(W))), c.xi);
        Tensor* index = impl::cast::to_dtype(ctx, target, kAten, nm(tag + "_index"), linear, DataType::kInt64);
        Tensor* weight = f(ew::mul, tag + "_weight", f(ew::mul, tag + "_wyx", c.wy, c.wx), mask);  // [R, SY, SX]
        taps.push_back({index, sh::reshape(ctx, target, kAten, nm(tag + "_weight_col"), weight,
                                           {R, DimExpr(sy), DimExpr(sx), DimExpr(int64_t{1})})});
      }
    }
    // The input as rows [N*H*W, C]: each sample gathers whole channel rows, weighted, summed.
    const std::vector<DimExpr> in = x->shape();
    Tensor* table = sh::permute(ctx, target, kAten, nm("nhwc"), x, {0, 2, 3, 1});
    table = sh::reshape(ctx, target, kAten, nm("rows"), table, {in[0] * in[2] * in[3], DimExpr(C)});
    Tensor* sum = nullptr;
    for (size_t i = 0; i < taps.size(); ++i) {
      const std::string tag = "tap" + std::to_string(i);
      Tensor* rows = impl::embedding::embedding(ctx, target, kAten, nm(tag + "_gather"), taps[i].index, table);
      Tensor* term = f(ew::mul, tag + "_weighted", rows, taps[i].weight);  // [R, SY, SX, C]
      sum = sum ? f(ew::add, tag + "_sum", sum, term) : term;
    }
    // [R, PH, ratio, PW, ratio, C] -> the mean of each bin's points -> [R, C, PH, PW].
    Tensor* bins = sh::reshape(ctx, target, kAten, nm("bins"), sum,
                               {R, DimExpr(ph), DimExpr(ratio), DimExpr(pw), DimExpr(ratio), DimExpr(C)});
    Tensor* y = impl::reduce::reduce(ctx, target, kAten, nm("bin_mean"), engine::ReduceOp::kMean, bins, {2, 4}, false);
    y = sh::permute(ctx, target, kAten, nm("nchw"), y, {0, 3, 1, 2});
    if (y->dtype() != x->dtype()) y = impl::cast::to_dtype(ctx, target, kAten, nm("cast"), y, x->dtype());
    return impl::shuffle::reshape(ctx, target, kAten, name, y, {R, DimExpr(C), DimExpr(ph), DimExpr(pw)});
  }, {[](const ir::Node& n, const CompilationSettings&) { return roi_align_supported(n); },
      "float input with static C, H, W; rois [R, 5]; sampling_ratio > 0 (adaptive sampling runs in PyTorch)"});
}

}  // namespace kiln::conversion::converters
