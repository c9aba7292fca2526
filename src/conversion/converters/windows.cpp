// Sliding windows as one gather with a constant index: Tensor.unfold (frames of a signal, local
// windows), F.unfold (im2col) and its inverse F.fold (col2im, a scatter-add of the same index).
// The index is computed here from static sizes, so no window is ever a separate copy. Also the
// window functions signal code multiplies frames by (hann, hamming, blackman, bartlett), as
// constants.
#include <algorithm>
#include <cmath>
#include <limits>

#include "conversion/converters/common.h"

namespace kiln::conversion::converters {

namespace {
namespace sh = impl::shuffle;

Tensor* index_constant(ConversionContext& ctx, const std::string& name, const std::vector<int64_t>& index) {
  return positions_constant(ctx, name + "/index", index);
}

// im2col / col2im's geometry: [N, C, H, W] padded to [Hp, Wp], windows of kh x kw taps.
struct Windows2d {
  int64_t kh, kw, dh, dw, ph, pw, sh, sw, height, width;
  int64_t padded_h() const { return height + 2 * ph; }
  int64_t padded_w() const { return width + 2 * pw; }
  int64_t out_h() const { return (padded_h() - dh * (kh - 1) - 1) / sh + 1; }
  int64_t out_w() const { return (padded_w() - dw * (kw - 1) - 1) / sw + 1; }
  bool valid() const {
    return kh > 0 && kw > 0 && dh > 0 && dw > 0 && ph >= 0 && pw >= 0 && sh > 0 && sw > 0 &&
           padded_h() >= dh * (kh - 1) + 1 && padded_w() >= dw * (kw - 1) + 1 &&
           kh * kw * out_h() * out_w() <= kMaxConstantPositions;
  }
  // For column (tap t = i*kw + j, window l = y*out_w + x), in PyTorch's [C*K, L] order: the flat
  // position of its element in the padded [Hp*Wp] plane.
  std::vector<int64_t> positions() const {
    std::vector<int64_t> at;
    at.reserve(size_t(kh * kw * out_h() * out_w()));
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j)
        for (int64_t y = 0; y < out_h(); ++y)
          for (int64_t x = 0; x < out_w(); ++x) at.push_back((y * sh + i * dh) * padded_w() + x * sw + j * dw);
    return at;
  }
};

std::optional<std::vector<int64_t>> pair_arg(const ir::Node& n, const std::string& name) {
  return ints_arg(node_arg(n, name), 2);
}

std::optional<Windows2d> windows_of(const ir::Node& n, int64_t height, int64_t width) {
  const auto k = pair_arg(n, "kernel_size"), d = pair_arg(n, "dilation"), p = pair_arg(n, "padding"),
             s = pair_arg(n, "stride");
  if (!k || !d || !p || !s) return std::nullopt;
  Windows2d w{(*k)[0], (*k)[1], (*d)[0], (*d)[1], (*p)[0], (*p)[1], (*s)[0], (*s)[1], height, width};
  if (!w.valid()) return std::nullopt;
  return w;
}

Windows2d windows_from(const Args& a, int64_t height, int64_t width) {
  const auto k = a.ints("kernel_size"), d = a.ints("dilation"), p = a.ints("padding"), s = a.ints("stride");
  return {k[0], k[1], d[0], d[1], p[0], p[1], s[0], s[1], height, width};
}

// torch.*_window(n, periodic): the symmetric window of n + 1 points without its last when
// periodic (the default), in double, as a constant of the node's dtype.
Tensor* window_function(ConversionContext& ctx, const std::string& target, const std::string& name, const Args& a,
                        const std::string& kind) {
  const int64_t n = a.i("window_length");
  const bool periodic = a["periodic"].is_none() || a.b("periodic");
  const double span = double(periodic ? n : n - 1);  // the symmetric window's length - 1
  constexpr double kTwoPi = 6.283185307179586476925;
  const double alpha = a["alpha"].is_none() ? 0.54 : a.d("alpha"), beta = a["beta"].is_none() ? 0.46 : a.d("beta");
  std::vector<float> w(size_t(n), 1.0f);
  for (int64_t i = 0; i < n && n > 1; ++i) {  // one point: [1], periodic or not, as PyTorch gives
    const double phase = kTwoPi * double(i) / span;
    const double v = kind == "hann"       ? 0.5 - 0.5 * std::cos(phase)
                     : kind == "hamming"  ? alpha - beta * std::cos(phase)
                     : kind == "blackman" ? 0.42 - 0.5 * std::cos(phase) + 0.08 * std::cos(2 * phase)
                                          : 1.0 - std::abs(2.0 * double(i) / span - 1.0);  // bartlett
    w[size_t(i)] = float(v);
  }
  Tensor* values = ctx.constant(engine::Weights::copy_of(DataType::kFloat32, {n}, w.data()), name + "/values");
  return impl::cast::to_dtype(ctx, target, kAten, name, values, node_dtype(ctx));
}

// Where each window of a 2-d max pool found its maximum, as PyTorch's indices: the flat position
// h * W + w in the input plane. The windows' taps are gathered from a plane padded with -inf (and
// on the far sides as ceil_mode needs), the first largest tap found by argmax, and its position
// read from a constant table of every (tap, window).
Tensor* max_pool2d_positions(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* x,
                             const Windows2d& w, int64_t out_h, int64_t out_w) {
  const int64_t extra_h = std::max<int64_t>(0, (out_h - 1) * w.sh + w.dh * (w.kh - 1) + 1 - w.padded_h());
  const int64_t extra_w = std::max<int64_t>(0, (out_w - 1) * w.sw + w.dw * (w.kw - 1) + 1 - w.padded_w());
  const int64_t plane_w = w.padded_w() + extra_w, plane = (w.padded_h() + extra_h) * plane_w;
  Tensor* padded = impl::pad::pad(ctx, target, kAten, name + "/pad", x, {w.pw, w.pw + extra_w, w.ph, w.ph + extra_h},
                                  engine::PadMode::kConstant, -std::numeric_limits<double>::infinity());
  const DimExpr batch = x->shape()[0], channels = x->shape()[1];
  Tensor* planes = sh::reshape(ctx, target, kAten, name + "/planes", padded, {batch, channels, DimExpr(plane)});
  std::vector<int64_t> taken, position;
  const int64_t taps = w.kh * w.kw, count = out_h * out_w;
  for (int64_t i = 0; i < w.kh; ++i)
    for (int64_t j = 0; j < w.kw; ++j)
      for (int64_t y = 0; y < out_h; ++y)
        for (int64_t xo = 0; xo < out_w; ++xo) {
          const int64_t row = y * w.sh + i * w.dh, col = xo * w.sw + j * w.dw;  // in the padded plane
          taken.push_back(row * plane_w + col);
          position.push_back((row - w.ph) * w.width + (col - w.pw));
        }
  Tensor* values = sh::reshape(ctx, target, kAten, name + "/taps",
                               impl::select::index_select(ctx, target, kAten, name + "/taken", planes, 2, index_constant(ctx, name, taken)),
                               {batch, channels, DimExpr(taps), DimExpr(count)});
  Tensor* best = impl::reduce::arg(ctx, target, kAten, name + "/best", engine::ReduceOp::kArgMax, values, 2, true);
  Tensor* table = ctx.constant(engine::Weights::copy_of(DataType::kInt64, {1, 1, taps, count}, position.data()), name + "/positions");
  table = sh::expand(ctx, target, kAten, name + "/positions_expand", table, {batch, channels, DimExpr(taps), DimExpr(count)});
  Tensor* at = sh::reshape(ctx, target, kAten, name + "/at_flat", impl::select::gather(ctx, target, kAten, name + "/at", table, 2, best),
                           {batch, channels, DimExpr(count)});
  // A window whose every input is -inf ties with its padding, and argmax may pick a padding tap:
  // PyTorch then gives the window's first position inside the input.
  std::vector<int64_t> first(static_cast<size_t>(count), -1);
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t l = 0; l < count; ++l) {
      const int64_t row = (l / out_w) * w.sh + (t / w.kw) * w.dh - w.ph, col = (l % out_w) * w.sw + (t % w.kw) * w.dw - w.pw;
      if (first[size_t(l)] < 0 && row >= 0 && row < w.height && col >= 0 && col < w.width) first[size_t(l)] = row * w.width + col;
    }
  Tensor* lowest = impl::reduce::reduce(ctx, target, kAten, name + "/peak", engine::ReduceOp::kMax, values, {2}, false);
  Tensor* all_inf = impl::elementwise::eq(ctx, target, kAten, name + "/all_inf", lowest, -std::numeric_limits<double>::infinity());
  at = impl::select::where(ctx, target, kAten, name + "/first_inside", all_inf,
                           ctx.constant(engine::Weights::copy_of(DataType::kInt64, {1, 1, count}, first.data()), name + "/first"), at);
  return sh::reshape(ctx, target, kAten, name, at, {batch, channels, DimExpr(out_h), DimExpr(out_w)});
}

}  // namespace

Tensor* max_pool2d_indices(ConversionContext& ctx, const std::string& target, const std::string& name, Tensor* x,
                           const std::vector<int64_t>& kernel, std::vector<int64_t> stride,
                           const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation, Tensor* pooled) {
  const std::vector<int64_t> k = impl::per_dim(kernel, 2, 1, "kernel_size"),
                             s = stride.empty() ? k : impl::per_dim(stride, 2, 1, "stride"),
                             p = impl::per_dim(padding, 2, 0, "padding"), d = impl::per_dim(dilation, 2, 1, "dilation");
  const bool batched = x->rank() == 4;
  if (!batched) x = sh::unsqueeze(ctx, target, kAten, name + "/batch", x, 0);
  const size_t r = pooled->rank();
  const Windows2d w{k[0], k[1], d[0], d[1], p[0], p[1], s[0], s[1], known_extent(x, 2, "max_pool2d indices"), known_extent(x, 3, "max_pool2d indices")};
  Tensor* at = max_pool2d_positions(ctx, target, batched ? name : name + "/batched", x, w, known_extent(pooled, int64_t(r) - 2, "max_pool2d indices"),
                                    known_extent(pooled, int64_t(r) - 1, "max_pool2d indices"));
  return batched ? at : sh::squeeze(ctx, target, kAten, name, at, {0});
}

void register_windows() {
  for (const std::string kind : {"hann", "hamming", "blackman", "bartlett"}) {
    std::vector<std::string> targets{"aten." + kind + "_window.default", "aten." + kind + "_window.periodic"};
    if (kind == "hamming") targets.insert(targets.end(), {"aten.hamming_window.periodic_alpha", "aten.hamming_window.periodic_alpha_beta"});
    add(targets, [kind](ConversionContext& ctx, const std::string& target, const std::vector<Value>& args,
                        const Kwargs& kwargs, const std::string& name) -> Value {
      return window_function(ctx, target, name, Args(target, args, kwargs), kind);
    }, {[](const ir::Node& n, const CompilationSettings&) {
          const ir::Argument length = node_arg(n, "window_length");
          return length.is<int64_t>() && length.as<int64_t>() >= 1 && n.meta.is_tensor() && ir::is_floating(n.meta.tensor.dtype);
        }, "a static length >= 1, a floating dtype"});
  }
  // Tensor.unfold(dim, size, step): windows of `size` every `step` along dim, as a new last dim.
  add({"aten.unfold.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    if (x->rank() == 0) return sh::unsqueeze(ctx, target, kAten, name, x, 0);  // PyTorch: a 0-d tensor is one window
    const int64_t d = impl::normalize_axis(a.i("dimension"), x->rank());
    const int64_t size = a.i("size"), step = a.i("step");
    const DimExpr n = x->shape()[size_t(d)];
    const DimExpr count = floor_div(n - DimExpr(size), DimExpr(step)) + DimExpr(int64_t{1});
    Tensor* index = nullptr;
    if (auto windows = count.constant()) {  // a static length: the positions as a constant
      std::vector<int64_t> at;
      for (int64_t l = 0; l < *windows; ++l)
        for (int64_t j = 0; j < size; ++j) at.push_back(l * step + j);
      index = index_constant(ctx, name, at);
    } else {  // a dynamic length (a signal of any duration): window starts plus offsets, per call
      namespace ew = impl::elementwise;
      auto iota = [&](const DimExpr& end, const std::string& what) {
        return impl::creation::arange(ctx, target, kAten, name + what, int64_t{0}, end, int64_t{1}, DataType::kInt64);
      };
      Tensor* starts = sh::reshape(ctx, target, kAten, name + "/starts", ew::mul(ctx, target, kAten, name + "/stride", iota(count, "/windows"), step),
                                   {count, DimExpr(int64_t{1})});
      Tensor* offsets = sh::reshape(ctx, target, kAten, name + "/offsets", iota(DimExpr(size), "/taps"), {DimExpr(int64_t{1}), DimExpr(size)});
      index = sh::reshape(ctx, target, kAten, name + "/index", ew::add(ctx, target, kAten, name + "/at", starts, offsets),
                          {count * DimExpr(size)});
    }
    Tensor* taken = impl::select::index_select(ctx, target, kAten, name + "/taken", x, d, index);
    std::vector<DimExpr> split = taken->shape();
    split[size_t(d)] = DimExpr(size);
    split.insert(split.begin() + d, count);  // [.., count, size, ..]
    Tensor* y = sh::reshape(ctx, target, kAten, d + 1 == int64_t(x->rank()) ? name : name + "/split", taken, split);
    if (d + 1 == int64_t(x->rank())) return y;
    std::vector<int64_t> perm;
    for (int64_t i = 0; i < int64_t(split.size()); ++i)
      if (i != d + 1) perm.push_back(i);
    perm.push_back(d + 1);
    return sh::permute(ctx, target, kAten, name, y, perm);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::TensorMeta* m = arg_meta(n, "self");
        const ir::Argument dim = node_arg(n, "dimension"), size = node_arg(n, "size"), step = node_arg(n, "step");
        if (!m || !dim.is<int64_t>() || !size.is<int64_t>() || !step.is<int64_t>() || step.as<int64_t>() <= 0) return false;
        if (m->rank() == 0) return size.as<int64_t>() == 1;  // one window of the value (size 0: an empty result)
        const int64_t r = int64_t(m->rank()), d = dim.as<int64_t>() < 0 ? dim.as<int64_t>() + r : dim.as<int64_t>();
        if (d < 0 || d >= r || size.as<int64_t>() < 1) return false;
        const auto n_along = static_size(n, "self", d);
        if (!n_along) return true;  // dynamic: positions computed per call (the caller's length must hold a window)
        return size.as<int64_t>() <= *n_along &&
               ((*n_along - size.as<int64_t>()) / step.as<int64_t>() + 1) * size.as<int64_t>() <= kMaxConstantPositions;
      }, "1 <= size <= the dim's size, step > 0"});
  // F.unfold (im2col): [N, C, H, W] -> [N, C*kh*kw, L], the padded planes gathered at each tap
  // of each window in one index_select.
  add({"aten.im2col.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const bool batched = x->rank() == 4;
    if (!batched) x = sh::unsqueeze(ctx, target, kAten, name + "/batch", x, 0);
    const Windows2d w = windows_from(a, known_extent(x, 2, "unfold"), known_extent(x, 3, "unfold"));
    if (w.ph || w.pw) x = impl::pad::pad(ctx, target, kAten, name + "/pad", x, {w.pw, w.pw, w.ph, w.ph}, engine::PadMode::kConstant, 0);
    const DimExpr batch = x->shape()[0], channels = x->shape()[1];
    Tensor* planes = sh::reshape(ctx, target, kAten, name + "/planes", x, {batch, channels, DimExpr(w.padded_h() * w.padded_w())});
    Tensor* taken = impl::select::index_select(ctx, target, kAten, name + "/taken", planes, 2, index_constant(ctx, name, w.positions()));
    const int64_t taps = w.kh * w.kw, count = w.out_h() * w.out_w();
    std::vector<DimExpr> out{batch, channels * DimExpr(taps), DimExpr(count)};
    if (!batched) out.erase(out.begin());
    return sh::reshape(ctx, target, kAten, name, taken, out);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::TensorMeta* m = arg_meta(n, "self");
        if (!m || (m->rank() != 3 && m->rank() != 4)) return false;
        const auto h = static_size(n, "self", -2), w = static_size(n, "self", -1);
        return h && w && windows_of(n, *h, *w).has_value();
      }, "static height and width, valid window sizes"});
  // F.fold (col2im): each column's taps added back into the padded planes at the positions
  // im2col takes them from (overlapping windows sum), then the padding cut off.
  add({"aten.col2im.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* cols = a.tensor("self");
    const bool batched = cols->rank() == 3;
    if (!batched) cols = sh::unsqueeze(ctx, target, kAten, name + "/batch", cols, 0);
    const std::vector<int64_t> size = a.ints("output_size");
    const Windows2d w = windows_from(a, size[0], size[1]);
    const int64_t taps = w.kh * w.kw, plane = w.padded_h() * w.padded_w();
    const DimExpr batch = cols->shape()[0], channels = floor_div(cols->shape()[1], DimExpr(taps));
    Tensor* source = sh::reshape(ctx, target, kAten, name + "/taps", cols, {batch, channels, DimExpr(taps * w.out_h() * w.out_w())});
    const std::vector<int64_t> positions = w.positions();
    std::vector<DimExpr> along{DimExpr(int64_t{1}), DimExpr(int64_t{1}), DimExpr(int64_t(positions.size()))};
    Tensor* index = sh::expand(ctx, target, kAten, name + "/index_expand",
                               sh::reshape(ctx, target, kAten, name + "/index_along", index_constant(ctx, name, positions), along),
                               source->shape());
    Tensor* zeros = impl::creation::full(ctx, target, kAten, name + "/zeros", {batch, channels, DimExpr(plane)}, 0.0, source->dtype());
    Tensor* planes = impl::select::scatter(ctx, target, kAten, name + "/add", zeros, 2, index, Value(source),
                                           engine::ScatterReduce::kAdd);
    Tensor* y = sh::reshape(ctx, target, kAten, name + "/unflat", planes,
                            {batch, channels, DimExpr(w.padded_h()), DimExpr(w.padded_w())});
    if (w.ph || w.pw) {
      y = impl::slice::slice_op(ctx, target, kAten, name + "/rows", y, 2, w.ph, w.ph + w.height, 1);
      y = impl::slice::slice_op(ctx, target, kAten, batched ? name : name + "/cols", y, 3, w.pw, w.pw + w.width, 1);
    }
    if (!batched) y = sh::squeeze(ctx, target, kAten, name, y, {0});
    return y;
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::TensorMeta* m = arg_meta(n, "self");
        const auto size = pair_arg(n, "output_size");
        if (!m || (m->rank() != 2 && m->rank() != 3) || !size) return false;
        const auto w = windows_of(n, (*size)[0], (*size)[1]);
        const auto rows = static_size(n, "self", -2), count = static_size(n, "self", -1);
        return w && rows && count && *rows % (w->kh * w->kw) == 0 && *count == w->out_h() * w->out_w();
      }, "static sizes that match the windows"});
  // F.max_unpool2d: each value written at the input-plane position its max pool took it from,
  // zeros elsewhere.
  add({"aten.max_unpool2d.default"}, KILN_CONVERTER {
    Args a(target, args, kwargs);
    Tensor* x = a.tensor("self");
    const bool batched = x->rank() == 4;
    if (!batched) x = sh::unsqueeze(ctx, target, kAten, name + "/batch", x, 0);
    Tensor* at = a.tensor("indices");
    if (!batched) at = sh::unsqueeze(ctx, target, kAten, name + "/batch_indices", at, 0);
    const std::vector<int64_t> size = a.ints("output_size");
    const DimExpr batch = x->shape()[0], channels = x->shape()[1];
    const DimExpr count = x->shape()[2] * x->shape()[3];
    Tensor* values = sh::reshape(ctx, target, kAten, name + "/values", x, {batch, channels, count});
    at = sh::reshape(ctx, target, kAten, name + "/at", impl::cast::to_dtype(ctx, target, kAten, name + "/at_i64", at, DataType::kInt64),
                     {batch, channels, count});
    Tensor* zeros = impl::creation::full(ctx, target, kAten, name + "/zeros", {batch, channels, DimExpr(size[0] * size[1])}, 0.0,
                                         x->dtype());
    Tensor* planes = impl::select::scatter(ctx, target, kAten, name + "/placed", zeros, 2, at, Value(values),
                                           engine::ScatterReduce::kNone);
    std::vector<DimExpr> out{batch, channels, DimExpr(size[0]), DimExpr(size[1])};
    if (!batched) out.erase(out.begin());
    return sh::reshape(ctx, target, kAten, name, planes, out);
  }, {[](const ir::Node& n, const CompilationSettings&) {
        const ir::TensorMeta* m = arg_meta(n, "self");
        const auto size = pair_arg(n, "output_size");
        return m && (m->rank() == 3 || m->rank() == 4) && size && (*size)[0] > 0 && (*size)[1] > 0;
      }, "2-d (batched or not), a static output size"});
}

}  // namespace kiln::conversion::converters
