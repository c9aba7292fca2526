// complex_as_real: complex values as real tensors with a trailing dim of 2 (real, imaginary), the
// layout torch.view_as_real gives, so that rotary embeddings written with complex numbers (Meta's
// Llama and its descendants: view_as_complex, polar, a complex multiply, view_as_real) convert
// like any real code. The engine has no complex dtype.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "ir/schema.h"
#include "lowering/passes.h"

namespace kiln::lowering {

namespace {

bool is_complex(ir::ScalarType t) { return t == ir::ScalarType::ComplexFloat || t == ir::ScalarType::ComplexDouble; }
bool is_complex(const ir::ValueMeta& m) { return m.is_tensor() && is_complex(m.tensor.dtype); }
bool reads_complex(const ir::Node& n) {
  for (const ir::Node* in : n.inputs())
    if (is_complex(in->meta)) return true;
  return false;
}
ir::ScalarType real_of(ir::ScalarType t) {
  return t == ir::ScalarType::ComplexDouble ? ir::ScalarType::Double : ir::ScalarType::Float;
}

// The real layout of a complex tensor's metadata: [..., 2] of the real dtype, element strides doubled.
ir::TensorMeta as_real(ir::TensorMeta m) {
  m.dtype = real_of(m.dtype);
  bool known = m.storage_offset.is_constant();
  for (const ir::SymInt& s : m.strides) known &= s.is_constant();
  if (known && !m.strides.empty()) {
    for (ir::SymInt& s : m.strides) s = ir::SymInt(s.value * 2);
    m.strides.push_back(ir::SymInt(1));
    m.storage_offset = ir::SymInt(m.storage_offset.value * 2);
  } else {
    m.strides.clear();  // unknown, as metadata may leave them
  }
  m.sizes.push_back(ir::SymInt(2));
  return m;
}

// Ops whose complex result is the same op on the real layout, once dims and sizes are adjusted.
const std::set<std::string>& layout_ops() {
  static const std::set<std::string> ops = {
      "aten.view.default",     "aten.reshape.default",   "aten._unsafe_view.default", "aten.slice.Tensor",
      "aten.select.int",       "aten.unsqueeze.default", "aten.squeeze.dim",          "aten.expand.default",
      "aten.permute.default",  "aten.transpose.int",     "aten.t.default",            "aten.clone.default",
      "aten.alias.default",    "aten.detach.default",    "aten.lift_fresh_copy.default", "aten.cat.default",
      "aten.add.Tensor",       "aten.sub.Tensor",        "aten._to_copy.default",     "aten.resolve_conj.default",
      "aten.contiguous.default"};
  return ops;
}

// Ops that make complex values from real ones or combine them arithmetically (rewritten).
const std::set<std::string>& complex_ops() {
  static const std::set<std::string> ops = {"aten.view_as_complex.default", "aten.polar.default", "aten.complex.default",
                                            "aten.mul.Tensor", "aten._conj.default", "aten.conj_physical.default"};
  return ops;
}

// Ops that read a complex value and give a real one.
const std::set<std::string>& to_real_ops() {
  static const std::set<std::string> ops = {"aten.view_as_real.default", "aten.real.default", "aten.imag.default",
                                            "aten.abs.default", "aten.angle.default"};
  return ops;
}

bool is_fft(const std::string& target) {
  return target == "aten._fft_r2c.default" || target == "aten._fft_c2r.default" || target == "aten._fft_c2c.default";
}

// The transform's length N along its one dim (the real side's size: r2c's input, c2r's output),
// when that dim is a single static one and the normalization is PyTorch's 0, 1 or 2.
std::optional<int64_t> fft_length(const ir::Node& n) {
  const ir::OpSchema* schema = ir::find_schema(n.target);
  if (!schema || n.inputs().empty() || !n.meta.is_tensor()) return std::nullopt;
  const ir::BoundArgs a(n, *schema);
  const ir::Argument& dims = a["dim"];
  const ir::Argument& norm = a["normalization"];
  if (!dims.is_list() || dims.list().size() != 1 || !dims.list()[0].is<int64_t>() || !norm.is<int64_t>() ||
      norm.as<int64_t>() < 0 || norm.as<int64_t>() > 2)
    return std::nullopt;
  const ir::TensorMeta& real = n.target == "aten._fft_c2r.default" ? n.meta.tensor : n.inputs()[0]->meta.tensor;
  const ir::TensorMeta& complex = n.target == "aten._fft_c2r.default" ? n.inputs()[0]->meta.tensor : n.meta.tensor;
  int64_t d = dims.list()[0].as<int64_t>();
  if (d < 0) d += int64_t(real.rank());
  if (d < 0 || d >= int64_t(real.rank()) || !real.sizes[size_t(d)].is_constant() ||
      !complex.sizes[size_t(d)].is_constant() || real.sizes[size_t(d)].value < 1)
    return std::nullopt;
  int64_t symbolic = 0;  // the views around the multiply name at most one size by -1
  for (const ir::SymInt& s : real.sizes) symbolic += !s.is_constant();
  if (symbolic > 1) return std::nullopt;
  // The DFT matrix has (2N)^2 entries at most (c2c): past 16 Mi (64 MiB in f32; a complex length
  // of 2048, a real one of 2895: librosa's default 2048-point frames fit) the transform stays an FFT
  // in PyTorch rather than a large constant and an N^2 multiply.
  const int64_t n_real = real.sizes[size_t(d)].value, n_complex = complex.sizes[size_t(d)].value;
  if (2 * n_real * 2 * n_complex > (int64_t{1} << 24)) return std::nullopt;
  return n_real;
}

// Whether every complex value can take the real layout: made by the ops above (or a complex
// weight), read only by them, never a user input or a program output, and every op left as is
// (layout ops) with only complex tensor inputs apart from its non-tensor arguments.
std::optional<std::string> unrewritable(const ir::ExportedProgram& program) {
  for (ir::Node* n : program.graph.nodes()) {
    const bool makes = is_complex(n->meta);
    const bool reads = reads_complex(*n);
    if (!makes && !reads) continue;
    if (n->kind == ir::NodeKind::Placeholder) return "%" + n->name + " is a complex program input";
    if (n->kind == ir::NodeKind::Output) return "the program returns a complex value";
    if (n->kind == ir::NodeKind::GetAttr) {
      const auto w = program.weights.find(n->target);
      if (w == program.weights.end() || !w->second.meta.is_static()) return "complex weight " + n->target + " has no static shape";
      continue;
    }
    const std::string uncovered = n->target + " on complex values is not covered";
    if (!ir::find_schema(n->target)) return uncovered;
    if (is_fft(n->target) && !fft_length(*n))
      return "%" + n->name + " is an FFT over several dims, of a dynamic length, or past 16 Mi DFT entries";
    if (makes && !reads) {
      if (n->target != "aten.view_as_complex.default" && n->target != "aten.polar.default" &&
          n->target != "aten.complex.default" && n->target != "aten._fft_r2c.default")
        return uncovered;
      if (n->target == "aten.complex.default") {  // stacked into pairs: the parts of one shape
        const auto parts = n->inputs();
        if (parts.size() != 2 || !parts[0]->meta.is_tensor() || !parts[1]->meta.is_tensor() ||
            parts[0]->meta.tensor.sizes != parts[1]->meta.tensor.sizes)
          return "torch.complex of parts of different shapes is not covered";
      }
    } else if (!makes) {
      if (!to_real_ops().count(n->target) && n->target != "aten._fft_c2r.default") return uncovered;
    } else if (layout_ops().count(n->target)) {
      for (const ir::Node* in : n->inputs())
        if (in->meta.is_tensor() && !is_complex(in->meta)) return n->target + " of a complex and a real tensor is not covered";
      if (n->target == "aten._to_copy.default" && n->inputs().at(0)->meta.tensor.dtype != n->meta.tensor.dtype)
        return "a complex dtype conversion is not covered";
      if (n->target == "aten.add.Tensor" || n->target == "aten.sub.Tensor") {
        if (n->kwarg("alpha")) return n->target + " with alpha on complex values is not covered";
        // z + 1 adds to the real part alone; the layout op would add to both.
        if (n->args.size() < 2 || !n->args[1].is_node()) return n->target + " of a complex value and a number is not covered";
      }
    } else if (!complex_ops().count(n->target) && n->target != "aten._fft_c2c.default") {
      return uncovered;
    }
  }
  return std::nullopt;
}

// Every node that makes or reads a complex value, told why they stay in PyTorch (the registry
// adds it to the node's fallback reason).
void mark_unconverted(ir::ExportedProgram& program, const std::string& why) {
  for (ir::Node* n : program.graph.nodes()) {
    if ((is_complex(n->meta) || reads_complex(*n)) && n->kind == ir::NodeKind::CallFunction)
      n->metadata[ir::kUnconvertedReason] = "complex values stay in PyTorch: " + why;
  }
}

struct Rewriter {
  ir::ExportedProgram& program;
  ir::Graph& g;

  ir::Node* op(ir::Node* before, const std::string& name, const std::string& target, std::vector<ir::Argument> args,
               ir::TensorMeta meta) {
    ir::Node* n = g.create(ir::NodeKind::CallFunction, name, target, std::move(args), {}, before);
    n->meta = ir::ValueMeta::of_tensor(std::move(meta));
    n->metadata = before->metadata;
    return n;
  }
  static ir::TensorMeta without_last(ir::TensorMeta m) {
    m.sizes.pop_back();
    if (!m.strides.empty()) m.strides.pop_back();
    return m;
  }
  static ir::TensorMeta broadcast(const ir::TensorMeta& a, const ir::TensorMeta& b) {
    ir::TensorMeta m = a.rank() >= b.rank() ? a : b;
    const ir::TensorMeta& other = a.rank() >= b.rank() ? b : a;
    const size_t shift = m.rank() - other.rank();
    for (size_t d = 0; d < other.rank(); ++d)
      if (m.sizes[shift + d].is_constant() && m.sizes[shift + d].value == 1) m.sizes[shift + d] = other.sizes[d];
    m.strides.clear();
    return m;
  }
  ir::Node* part(ir::Node* before, ir::Node* z, int64_t which) {  // real (0) or imaginary (1) part of a real layout
    return op(before, before->name + (which ? "_imag" : "_real"), "aten.select.int", {z, int64_t{-1}, which},
              without_last(z->meta.tensor));
  }
  ir::Node* binary(ir::Node* before, const std::string& suffix, const std::string& target, ir::Node* a, ir::Node* b) {
    return op(before, before->name + suffix, target, {a, b}, broadcast(a->meta.tensor, b->meta.tensor));
  }
  ir::Node* pair(ir::Node* before, ir::Node* re, ir::Node* im) {  // [..., 2] from two real tensors
    ir::TensorMeta m = broadcast(re->meta.tensor, im->meta.tensor);
    m.sizes.push_back(ir::SymInt(2));
    return op(before, before->name + "_pair", "aten.stack.default", {ir::Argument::List{re, im}, int64_t{-1}}, m);
  }
  // The real layout itself under a new name, where an op only reinterprets (view_as_complex,
  // view_as_real): a node of its own keeps which values are complex in the real layout apart from
  // the real tensors they view (remove_noops drops the alias afterwards).
  ir::Node* alias(ir::Node* n, ir::Node* of, ir::TensorMeta meta) {
    return op(n, n->name + "_layout", "aten.alias.default", {of}, std::move(meta));
  }

  // A new program weight of `values` (as `dtype`, Float or Double) and the get_attr that reads it.
  ir::Node* constant(ir::Node* before, const std::string& what, ir::ScalarType dtype, std::vector<int64_t> sizes,
                     const std::vector<double>& values) {
    if (dtype != ir::ScalarType::Double) dtype = ir::ScalarType::Float;
    auto bytes = std::make_shared<std::vector<uint8_t>>(values.size() * ir::element_size(dtype));
    for (size_t i = 0; i < values.size(); ++i) {
      if (dtype == ir::ScalarType::Double) std::memcpy(bytes->data() + i * 8, &values[i], 8);
      else {
        const float f = float(values[i]);
        std::memcpy(bytes->data() + i * 4, &f, 4);
      }
    }
    auto storage = std::make_shared<ir::Storage>();
    storage->data = bytes->data();
    storage->size = bytes->size();
    storage->owner = bytes;
    ir::Weight w;
    w.name = before->name + "_" + what;
    while (program.weights.count(w.name)) w.name += "_";
    w.kind = ir::Weight::Kind::Constant;
    w.meta.dtype = dtype;
    int64_t stride = 1;
    for (size_t d = sizes.size(); d-- > 0;) {
      w.meta.strides.insert(w.meta.strides.begin(), ir::SymInt(stride));
      stride *= sizes[d];
    }
    for (int64_t s : sizes) w.meta.sizes.push_back(ir::SymInt(s));
    w.storage = storage;
    program.weights[w.name] = w;
    ir::Node* n = g.create(ir::NodeKind::GetAttr, w.name, w.name, {}, {}, before);
    n->meta = ir::ValueMeta::of_tensor(w.meta);
    return n;
  }
  // x with dims a and b swapped (nothing when they are the same).
  ir::Node* swap(ir::Node* before, ir::Node* x, int64_t a, int64_t b, const std::string& what) {
    if (a == b) return x;
    ir::TensorMeta m = x->meta.tensor;
    std::swap(m.sizes[size_t(a)], m.sizes[size_t(b)]);
    m.strides.clear();
    return op(before, before->name + what, "aten.transpose.int", {x, a, b}, m);
  }
  ir::Node* reshaped(ir::Node* before, ir::Node* x, std::vector<ir::SymInt> sizes, const std::string& what) {
    ir::TensorMeta m = x->meta.tensor;
    m.sizes = sizes;
    m.strides.clear();
    ir::Argument::List l;
    for (const ir::SymInt& s : sizes) l.push_back(s.is_constant() ? ir::Argument(s.value) : ir::Argument(int64_t{-1}));
    return op(before, before->name + what, "aten.reshape.default", {x, l}, m);
  }
  ir::Node* times(ir::Node* before, ir::Node* x, ir::Node* w, const std::string& what) {
    ir::TensorMeta m = x->meta.tensor;
    m.sizes.back() = w->meta.tensor.sizes.back();
    m.strides.clear();
    return op(before, before->name + what, "aten.matmul.default", {x, w}, m);
  }

  // The discrete Fourier transforms as matrix multiplies by their constant matrices (O(N^2) per
  // transform: spectrogram frames and short signals, not long FFTs), on the real layout:
  //   r2c: x [.., N] @ [N, 2K] -> [.., K, 2], X_k = s * sum_n x_n e^{-2 pi i kn/N}, K = N/2 + 1 (onesided) or N;
  //   c2r: [.., K, 2] -> [.., 2K] @ [2K, N], x_n = s * sum_k w_k Re(X_k e^{2 pi i kn/N}), the onesided
  //        spectrum's Hermitian half counted twice (w_k = 2 but for k = 0 and N/2) and entries past
  //        N/2 + 1 ignored, as PyTorch's irfft does;
  //   c2c: [.., N, 2] -> [.., 2N] @ [2N, 2N], forward or inverse.
  // s is 1, 1/sqrt(N) or 1/N (normalization 0, 1, 2). The transformed dim moves last and back.
  ir::Node* rewrite_fft(ir::Node* n, const ir::BoundArgs& a) {
    constexpr double kTwoPi = 6.283185307179586476925;
    ir::Node* x = a["self"].node();
    const std::string& t = n->target;
    const bool from_real = t == "aten._fft_r2c.default";
    const int64_t rank = int64_t(x->meta.tensor.rank()) - (from_real ? 0 : 1);  // of the logical (complex or real) value
    int64_t d = a["dim"].list()[0].as<int64_t>();
    if (d < 0) d += rank;
    // N, the real side's length: r2c's input; c2r's output; c2c's either (n's own meta, still complex).
    const int64_t N = from_real ? x->meta.tensor.sizes[size_t(d)].value : n->meta.tensor.sizes[size_t(d)].value;
    const int64_t norm = a["normalization"].as<int64_t>();
    const double scale = norm == 0 ? 1.0 : norm == 1 ? 1.0 / std::sqrt(double(N)) : 1.0 / double(N);
    ir::Node* last = swap(n, x, d, rank - 1, "_dim_last");
    std::vector<ir::SymInt> sizes = last->meta.tensor.sizes;
    const ir::ScalarType real = x->meta.tensor.dtype;  // the real input's, or the real layout's
    std::vector<double> w;
    ir::Node* y = nullptr;
    if (from_real) {
      const int64_t K = a["onesided"].as<bool>() ? N / 2 + 1 : N;
      for (int64_t i = 0; i < N; ++i)
        for (int64_t k = 0; k < K; ++k) {
          const double phase = kTwoPi * double((i * k) % N) / double(N);
          w.push_back(scale * std::cos(phase));
          w.push_back(-scale * std::sin(phase));
        }
      y = times(n, last, constant(n, "dft", real, {N, 2 * K}, w), "_dft");
      sizes.back() = ir::SymInt(K);
      sizes.push_back(ir::SymInt(2));
      y = reshaped(n, y, sizes, "_pairs");
      return swap(n, y, d, rank - 1, "_dim_back");
    }
    const int64_t K = last->meta.tensor.sizes[size_t(rank - 1)].value;  // static: fft_length checked it
    std::vector<ir::SymInt> flat(sizes.begin(), sizes.end() - 2);
    flat.push_back(ir::SymInt(2 * K));
    ir::Node* pairs = reshaped(n, last, flat, "_flat");
    if (t == "aten._fft_c2r.default") {
      for (int64_t k = 0; k < K; ++k) {
        const double weight = k > N / 2 ? 0.0 : (k == 0 || 2 * k == N) ? 1.0 : 2.0;
        for (const bool imaginary : {false, true})
          for (int64_t i = 0; i < N; ++i) {
            const double phase = kTwoPi * double((i * k) % N) / double(N);
            w.push_back(scale * weight * (imaginary ? -std::sin(phase) : std::cos(phase)));
          }
      }
      y = times(n, pairs, constant(n, "idft", real, {2 * K, N}, w), "_idft");
      return swap(n, y, d, rank - 1, "_dim_back");
    }
    const double sign = a["forward"].as<bool>() ? -1.0 : 1.0;
    w.assign(size_t(4 * N * N), 0.0);
    for (int64_t i = 0; i < N; ++i)
      for (int64_t k = 0; k < N; ++k) {
        const double phase = kTwoPi * double((i * k) % N) / double(N);
        const double c = scale * std::cos(phase), s = scale * sign * std::sin(phase);
        w[size_t((2 * i) * 2 * N + 2 * k)] = c, w[size_t((2 * i + 1) * 2 * N + 2 * k)] = -s;
        w[size_t((2 * i) * 2 * N + 2 * k + 1)] = s, w[size_t((2 * i + 1) * 2 * N + 2 * k + 1)] = c;
      }
    y = times(n, pairs, constant(n, "dft", real, {2 * N, 2 * N}, w), "_dft");
    y = reshaped(n, y, sizes, "_pairs");
    return swap(n, y, d, rank - 1, "_dim_back");
  }

  // A complex op rewritten on real layouts; its inputs are rewritten already.
  ir::Node* rewrite_complex(ir::Node* n, const ir::BoundArgs& a) {
    const std::string& t = n->target;
    if (t == "aten.view_as_complex.default") return alias(n, a["self"].node(), as_real(n->meta.tensor));
    if (t == "aten.polar.default" || t == "aten.complex.default") {
      ir::Node* re = t == "aten.complex.default" ? a["real"].node() : nullptr;
      ir::Node* im = t == "aten.complex.default" ? a["imag"].node() : nullptr;
      if (!re) {
        ir::Node* r = a["abs"].node();
        ir::Node* angle = a["angle"].node();
        ir::Node* cos = op(n, n->name + "_cos", "aten.cos.default", {angle}, angle->meta.tensor);
        ir::Node* sin = op(n, n->name + "_sin", "aten.sin.default", {angle}, angle->meta.tensor);
        re = binary(n, "_re", "aten.mul.Tensor", r, cos);
        im = binary(n, "_im", "aten.mul.Tensor", r, sin);
      }
      return pair(n, re, im);
    }
    if (t == "aten._conj.default" || t == "aten.conj_physical.default") {
      ir::Node* z = a["self"].node();
      ir::Node* neg = op(n, n->name + "_neg_imag", "aten.neg.default", {part(n, z, 1)}, without_last(z->meta.tensor));
      return pair(n, part(n, z, 0), neg);
    }
    // mul.Tensor: (a + bi)(c + di) = (ac - bd) + (ad + bc)i; by a real tensor, each part scaled;
    // by a real number, the layout scaled as it is.
    ir::Node* x = a["self"].node();
    const ir::Argument& other = a["other"];
    if (!other.is_node()) {
      n->meta = ir::ValueMeta::of_tensor(as_real(n->meta.tensor));
      return n;
    }
    ir::Node* y = other.node();
    if (!real_layout.count(x) || !real_layout.count(y)) {  // one side real: scale both parts by it
      ir::Node* z = real_layout.count(x) ? x : y;
      ir::Node* r = real_layout.count(x) ? y : x;
      ir::TensorMeta um = r->meta.tensor;
      um.sizes.push_back(ir::SymInt(1));
      um.strides.clear();
      ir::Node* scale = op(n, n->name + "_scale", "aten.unsqueeze.default", {r, int64_t{-1}}, um);
      return binary(n, "_scaled", "aten.mul.Tensor", z, scale);
    }
    ir::Node *ar = part(n, x, 0), *ai = part(n, x, 1), *br = part(n, y, 0), *bi = part(n, y, 1);
    ir::Node* re = binary(n, "_re", "aten.sub.Tensor", binary(n, "_rr", "aten.mul.Tensor", ar, br),
                          binary(n, "_ii", "aten.mul.Tensor", ai, bi));
    ir::Node* im = binary(n, "_im", "aten.add.Tensor", binary(n, "_ri", "aten.mul.Tensor", ar, bi),
                          binary(n, "_ir", "aten.mul.Tensor", ai, br));
    return pair(n, re, im);
  }

  // A complex -> real op on a real layout.
  ir::Node* rewrite_to_real(ir::Node* n, const ir::BoundArgs& a) {
    ir::Node* z = a["self"].node();
    const std::string& t = n->target;
    if (t == "aten.view_as_real.default") return alias(n, z, n->meta.tensor);
    if (t == "aten.real.default") return part(n, z, 0);
    if (t == "aten.imag.default") return part(n, z, 1);
    if (t == "aten.abs.default")
      return op(n, n->name + "_norm", "aten.linalg_vector_norm.default", {z, 2.0, ir::Argument::List{int64_t{-1}}, false},
                n->meta.tensor);
    return op(n, n->name + "_atan2", "aten.atan2.default", {part(n, z, 1), part(n, z, 0)}, n->meta.tensor);  // angle
  }

  // A layout op's dims and sizes moved to the real layout (one more dim, last), in place.
  void rewrite_layout(ir::Node* n, const ir::BoundArgs& a) {
    const int64_t rank = int64_t(n->inputs().at(0)->meta.tensor.rank()) - 1;  // the complex input's rank
    const int64_t out_rank = int64_t(n->meta.tensor.rank());
    auto dim_in = [&](int64_t d) { return d < 0 ? d + rank : d; };
    std::vector<ir::Argument> args = a.positional();
    const ir::OpSchema& s = a.schema();
    auto set = [&](const char* name, ir::Argument v) { args[size_t(s.index_of(name))] = std::move(v); };
    auto grown = [](const ir::Argument& sizes) {
      ir::Argument::List l = sizes.list();
      l.push_back(int64_t{2});
      return ir::Argument(l);
    };
    const std::string& t = n->target;
    if (t == "aten.view.default" || t == "aten.reshape.default" || t == "aten._unsafe_view.default" ||
        t == "aten.expand.default")
      set("size", grown(a["size"]));
    else if (t == "aten.slice.Tensor" || t == "aten.select.int" || t == "aten.squeeze.dim" || t == "aten.cat.default")
      set("dim", dim_in(a["dim"].as<int64_t>()));
    else if (t == "aten.unsqueeze.default")
      set("dim", a["dim"].as<int64_t>() < 0 ? a["dim"].as<int64_t>() + out_rank : a["dim"].as<int64_t>());
    else if (t == "aten.transpose.int")
      set("dim0", dim_in(a["dim0"].as<int64_t>())), set("dim1", dim_in(a["dim1"].as<int64_t>()));
    else if (t == "aten.permute.default") {
      ir::Argument::List dims;
      for (const ir::Argument& d : a["dims"].list()) dims.push_back(dim_in(d.as<int64_t>()));
      dims.push_back(rank);
      set("dims", dims);
    } else if (t == "aten.t.default") {
      n->target = "aten.transpose.int";
      args = {args[0], int64_t{0}, int64_t{rank - 1}};
    } else if (t == "aten._to_copy.default") {
      std::vector<std::pair<std::string, ir::Argument>> kw;
      for (auto [k, v] : a.keyword())
        if (k == "dtype" && v.is<ir::ScalarType>()) kw.emplace_back(k, ir::Argument(real_of(v.as<ir::ScalarType>())));
        else kw.emplace_back(k, v);
      g.set_kwargs(n, kw);
      g.set_args(n, args);
      n->meta = ir::ValueMeta::of_tensor(as_real(n->meta.tensor));
      return;
    }
    g.set_args(n, args);
    g.set_kwargs(n, a.keyword());
    n->meta = ir::ValueMeta::of_tensor(as_real(n->meta.tensor));
  }

  std::set<ir::Node*> real_layout;  // complex values, now in the real layout
};

}  // namespace

size_t complex_as_real(ir::ExportedProgram& program) {
  bool any = false;
  for (const ir::Node* n : program.graph.nodes()) any |= is_complex(n->meta);
  if (!any) return 0;
  if (const auto why = unrewritable(program)) {
    mark_unconverted(program, *why);
    return 0;
  }
  size_t changed = 0;
  for (auto& [name, w] : program.weights) {  // the same bytes, read as pairs of reals
    if (!is_complex(w.meta.dtype)) continue;
    w.meta = as_real(w.meta);
    w.storage_offset *= 2;
    ++changed;
  }
  Rewriter r{program, program.graph, {}};
  for (ir::Node* n : program.graph.nodes()) {
    const bool makes = is_complex(n->meta);
    if (n->kind == ir::NodeKind::GetAttr) {
      if (makes) n->meta = ir::ValueMeta::of_tensor(as_real(n->meta.tensor)), r.real_layout.insert(n), ++changed;
      continue;
    }
    bool reads = false;
    for (ir::Node* in : n->inputs()) reads |= r.real_layout.count(in) > 0;
    if (n->kind != ir::NodeKind::CallFunction || (!makes && !reads)) continue;
    const ir::BoundArgs a(*n, *ir::find_schema(n->target));
    ++changed;
    ir::Node* result = n;
    if (is_fft(n->target)) result = r.rewrite_fft(n, a);
    else if (!makes) result = r.rewrite_to_real(n, a);
    else if (layout_ops().count(n->target)) r.rewrite_layout(n, a);
    else result = r.rewrite_complex(n, a);
    if (result != n) {
      program.graph.replace_all_uses_with(n, result);
      program.graph.erase(n);
    }
    if (makes) r.real_layout.insert(result);
  }
  return changed;
}

}  // namespace kiln::lowering
