// The CUDA test harness (see cuda_test_util.h).
#include "cuda_test_util.h"

namespace kiln::engine::cputest {

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
