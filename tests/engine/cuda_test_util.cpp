// The CUDA test harness (see cuda_test_util.h).
#include "cuda_test_util.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <utility>

namespace kiln::engine::cputest {

bool listing_backend_cases() {
  static const bool listing = std::getenv("KILN_LIST_BACKEND_CASES") != nullptr;
  return listing;
}

namespace {

// What the coverage gate counts: a layer kind ("Reduce") and, for kinds with an operation enum,
// each operation ("Reduce.argmax"). Every value of those enums is expected, so a value added to an
// enum needs a CUDA-vs-CPU case (or a reason) before the gate passes again.
template <class E>
std::string op_key(const char* kind, E e) {
  return std::string(kind) + "." + enum_name(e);
}

std::vector<std::string> coverage_keys(const Layer& layer) {
  std::vector<std::string> keys{layer.kind()};
  const char* kind = layer.kind();
  std::visit(
      [&](const auto& p) {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, ElementwiseParams> || std::is_same_v<P, UnaryParams> ||
                      std::is_same_v<P, ActivationParams> || std::is_same_v<P, ReduceParams>)
          keys.push_back(op_key(kind, p.op));
        else if constexpr (std::is_same_v<P, PoolingParams>)
          keys.push_back(op_key(kind, p.type));
        else if constexpr (std::is_same_v<P, NormalizationParams>)
          keys.push_back(op_key(kind, p.kind));
        else if constexpr (std::is_same_v<P, GatherParams>)
          keys.push_back(op_key(kind, p.mode));
        else if constexpr (std::is_same_v<P, ScatterParams>) {
          keys.push_back(op_key(kind, p.mode));
          keys.push_back(op_key(kind, p.reduce));
        } else if constexpr (std::is_same_v<P, FillParams>)
          keys.push_back(op_key(kind, p.op));
        else if constexpr (std::is_same_v<P, PadParams> || std::is_same_v<P, ResizeParams>)
          keys.push_back(op_key(kind, p.mode));
        else if constexpr (std::is_same_v<P, FusedPointwiseParams>)
          for (const PointwiseInstr& in : p.program) keys.push_back(op_key(kind, in.kind));
      },
      layer.params());
  return keys;
}

template <class E>
void expect_every(std::set<std::string>& want, const char* kind) {
  for (int i = 0; i < enum_count<E>(); ++i) want.insert(op_key(kind, E(i)));
}

template <size_t... I>
std::set<std::string> every_key(std::index_sequence<I...>) {
  std::set<std::string> want;
  auto kind = [](auto params) { return layer_kind_name(LayerParams(std::move(params))); };
  (want.insert(kind(std::variant_alternative_t<I, LayerParams>())), ...);
  expect_every<BinaryOp>(want, kind(ElementwiseParams()));
  expect_every<UnaryOp>(want, kind(UnaryParams()));
  expect_every<ActivationOp>(want, kind(ActivationParams()));
  expect_every<ReduceOp>(want, kind(ReduceParams()));
  expect_every<PoolType>(want, kind(PoolingParams()));
  expect_every<NormKind>(want, kind(NormalizationParams()));
  expect_every<GatherMode>(want, kind(GatherParams()));
  expect_every<GatherMode>(want, kind(ScatterParams()));
  expect_every<ScatterReduce>(want, kind(ScatterParams()));
  expect_every<FillOp>(want, kind(FillParams()));
  expect_every<PadMode>(want, kind(PadParams()));
  expect_every<ResizeMode>(want, kind(ResizeParams()));
  expect_every<PointwiseInstr::Kind>(want, kind(FusedPointwiseParams()));
  return want;
}

struct Coverage {
  std::map<std::string, int> cases;                    // key -> CUDA-vs-CPU cases holding it
  std::map<std::string, std::set<std::string>> dtypes;  // key -> output dtypes seen
};
Coverage& coverage() {
  static Coverage c;
  return c;
}

void record(const Network& net) {
  std::set<std::string> seen;
  for (const Layer* layer : net.layers())
    for (const std::string& key : coverage_keys(*layer)) {
      if (seen.insert(key).second) ++coverage().cases[key];
      if (!layer->outputs().empty()) coverage().dtypes[key].insert(to_string(layer->output()->dtype()));
    }
}

// Lines "Key  reason" (# comments): keys with no CUDA-vs-CPU case, each with why none can be written.
std::map<std::string, std::string> reasoned_gaps() {
  std::map<std::string, std::string> gaps;
  std::ifstream list(std::string(KILN_TEST_DATA) + "/../engine/cuda_uncovered.txt");
  EXPECT_TRUE(list) << "tests/engine/cuda_uncovered.txt is missing";
  std::string line;
  while (std::getline(list, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    std::string key, reason;
    in >> key;
    std::getline(in >> std::ws, reason);
    EXPECT_FALSE(reason.empty()) << key << ": listed in cuda_uncovered.txt without a reason";
    gaps[key] = reason;
  }
  return gaps;
}

class BackendCoverageGate : public ::testing::Environment {
 public:
  void TearDown() override {
    if (!listing_backend_cases()) return;
    const std::set<std::string> want = every_key(std::make_index_sequence<std::variant_size_v<LayerParams>>());
    const std::map<std::string, std::string> gaps = reasoned_gaps();
    std::cout << "CUDA-vs-CPU cases per layer kind and operation (output dtypes):\n";
    int covered = 0;
    for (const std::string& key : want) {
      auto it = coverage().cases.find(key);
      if (it == coverage().cases.end()) {
        std::cout << "  " << key << ": none" << (gaps.count(key) ? " (reasoned)" : "") << "\n";
        EXPECT_TRUE(gaps.count(key)) << key << ": no CUDA-vs-CPU case and no reason in tests/engine/cuda_uncovered.txt";
        continue;
      }
      ++covered;
      std::cout << "  " << key << ": " << it->second << " cases (";
      const char* sep = "";
      for (const std::string& t : coverage().dtypes[key]) std::cout << std::exchange(sep, " ") << t;
      std::cout << ")\n";
      EXPECT_FALSE(gaps.count(key)) << key << ": has a case now; remove it from tests/engine/cuda_uncovered.txt";
    }
    for (const auto& [key, reason] : gaps)
      EXPECT_TRUE(want.count(key)) << key << ": listed in cuda_uncovered.txt but no such layer kind or operation";
    std::cout << covered << " of " << want.size() << " layer kinds and operations have a CUDA-vs-CPU case\n";
  }
};
[[maybe_unused]] ::testing::Environment* const kBackendCoverageGate =
    ::testing::AddGlobalTestEnvironment(new BackendCoverageGate);

}  // namespace

Backend& gpu() {
  static std::shared_ptr<Backend> b = make_cuda_backend();
  return *b;
}

static void bind(const Shape& shape, const std::vector<int64_t>& dims, SymbolValues& syms) {
  for (size_t i = 0; i < shape.size() && i < dims.size(); ++i)
    if (shape[i].op() == DimExpr::Op::Sym) syms[shape[i].symbol_name()] = dims[i];
}

// Every layer of `net` on the CUDA backend, in order.
std::vector<Host> run_cuda(Network& net, const std::vector<Host>& inputs) {
  Backend& be = gpu();
  std::map<const Tensor*, TensorView> values;
  std::vector<void*> allocs;
  auto alloc_view = [&](DataType t, const std::vector<int64_t>& dims) {
    TensorView v;
    v.dtype = t;
    v.dims = dims;
    v.device = DeviceKind::kCUDA;
    v.data = be.allocate(std::max<size_t>(v.nbytes(), 8));
    allocs.push_back(v.data);
    return v;
  };
  SymbolValues syms;
  for (size_t i = 0; i < inputs.size(); ++i) {
    TensorView v = alloc_view(inputs[i].dtype, inputs[i].dims);
    be.copy(v.data, DeviceKind::kCUDA, inputs[i].bytes.data(), DeviceKind::kCPU, v.nbytes());
    values[net.inputs()[i]] = v;
    bind(net.inputs()[i]->shape(), inputs[i].dims, syms);
  }
  for (Layer* layer : net.layers()) {
    std::vector<TensorView> in;
    for (Tensor* t : layer->inputs()) in.push_back(values.at(t));
    std::vector<TensorView> out;
    for (Tensor* t : layer->outputs()) {
      TensorView v;
      v.dtype = t->dtype();
      v.device = DeviceKind::kCUDA;
      try {
        v = alloc_view(t->dtype(), evaluate(t->shape(), syms));
      } catch (const ShapeError&) {
      }
      out.push_back(v);
    }
    OutputAllocator allocator = [&](size_t i, const std::vector<int64_t>& dims) {
      out[i] = alloc_view(layer->output(i)->dtype(), dims);
      return out[i];
    };
    size_t ws = be.workspace_bytes(*layer, in);
    void* wsp = ws ? be.allocate(ws) : nullptr;
    if (wsp) allocs.push_back(wsp);
    LayerCall call{*layer, in, out, allocator, wsp, ws, &syms};
    be.execute(call);
    for (size_t i = 0; i < out.size(); ++i) {
      bind(layer->output(i)->shape(), out[i].dims, syms);
      values[layer->output(i)] = out[i];
    }
  }
  std::vector<Host> r;
  for (auto& [name, t] : net.outputs()) {
    const TensorView& v = values.at(t);
    Host h(v.dtype, v.dims);
    be.copy(h.bytes.data(), DeviceKind::kCPU, v.data, DeviceKind::kCUDA, v.nbytes());
    r.push_back(std::move(h));
  }
  be.synchronize();
  for (void* p : allocs) be.deallocate(p);
  return r;
}

double gpu_tolerance(DataType t) {
  switch (t) {
    case DataType::kFloat32: return 1e-4;
    case DataType::kFloat16: return 1e-2;
    case DataType::kBFloat16: return 4e-2;
    default: return 0;
  }
}

// Runs `make` on both backends and compares every output. `scale` widens the float tolerance.
void check(const std::string& what, const std::function<void(Network&)>& make, const std::vector<Host>& inputs,
           double scale) {
  SCOPED_TRACE(what);
  Network a;
  make(a);
  if (listing_backend_cases()) {
    record(a);
    return;
  }
  std::vector<Host> want = run_direct(a, inputs);
  Network b;
  make(b);
  std::vector<Host> got;
  try {
    got = run_cuda(b, inputs);
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": CUDA threw: " << e.what();
    return;
  }
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(want[i].dims, got[i].dims) << what << " output " << i;
    EXPECT_EQ(want[i].dtype, got[i].dtype) << what << " output " << i;
    if (want[i].dims != got[i].dims) continue;
    double tol = gpu_tolerance(got[i].dtype) * scale;
    expect_close(got[i], want[i].values(), tol, tol, what + " output " + std::to_string(i));
  }
}



}  // namespace kiln::engine::cputest
