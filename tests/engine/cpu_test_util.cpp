// The direct executor of the CPU kernel tests (see cpu_test_util.h).
#include "cpu_test_util.h"

namespace kiln::engine::cputest {

// Set by cpu_pipeline_test.cpp when it is linked in: runs a network through build + runtime.
std::function<std::vector<Host>(Network&&, const std::vector<Host>&,
                                const std::map<std::string, std::array<int64_t, 3>>&)>&
pipeline_hook() {
  static std::function<std::vector<Host>(Network&&, const std::vector<Host>&,
                                         const std::map<std::string, std::array<int64_t, 3>>&)>
      hook;
  return hook;
}

static void bind_symbols(const Shape& shape, const std::vector<int64_t>& dims, SymbolValues& syms) {
  for (size_t i = 0; i < shape.size() && i < dims.size(); ++i)
    if (shape[i].op() == DimExpr::Op::Sym) syms[shape[i].symbol_name()] = dims[i];
}

std::vector<Host> run_direct(Network& net, const std::vector<Host>& inputs) {
  std::map<const Tensor*, std::shared_ptr<Host>> values;
  SymbolValues syms;
  if (inputs.size() != net.inputs().size()) throw std::runtime_error("run_direct: wrong input count");
  for (size_t i = 0; i < inputs.size(); ++i) {
    values[net.inputs()[i]] = std::make_shared<Host>(inputs[i]);
    bind_symbols(net.inputs()[i]->shape(), inputs[i].dims, syms);
  }
  for (Layer* layer : net.layers()) {
    std::vector<TensorView> in;
    for (Tensor* t : layer->inputs()) in.push_back(values.at(t)->view());
    std::vector<TensorView> out;
    std::vector<std::shared_ptr<Host>> out_hosts;
    for (Tensor* t : layer->outputs()) {
      std::shared_ptr<Host> h;
      TensorView v;
      v.dtype = t->dtype();
      try {
        h = std::make_shared<Host>(t->dtype(), evaluate(t->shape(), syms));
        v = h->view();
      } catch (const ShapeError&) {  // data-dependent: the kernel allocates it
      }
      out_hosts.push_back(h);
      out.push_back(v);
    }
    OutputAllocator alloc = [&](size_t i, const std::vector<int64_t>& dims) {
      out_hosts[i] = std::make_shared<Host>(layer->output(i)->dtype(), dims);
      return out_hosts[i]->view();
    };
    size_t ws = cpu::workspace_bytes(*layer, in);
    std::vector<uint8_t> workspace(ws);
    LayerCall call{*layer, in, out, alloc, workspace.data(), ws, &syms};
    cpu::execute(call);
    for (size_t i = 0; i < out_hosts.size(); ++i) {
      if (!out_hosts[i]) throw std::runtime_error("run_direct: output never allocated");
      bind_symbols(layer->output(i)->shape(), out_hosts[i]->dims, syms);
      values[layer->output(i)] = out_hosts[i];
    }
  }
  std::vector<Host> r;
  for (auto& [name, t] : net.outputs()) r.push_back(*values.at(t));
  return r;
}

std::vector<Host> run_pipeline(Network&& net, const std::vector<Host>& inputs,
                               const std::map<std::string, std::array<int64_t, 3>>& profile) {
  if (!pipeline_hook()) throw std::runtime_error("pipeline not linked");
  return pipeline_hook()(std::move(net), inputs, profile);
}

std::vector<Host> run_both(const std::function<void(Network&)>& make, const std::vector<Host>& inputs,
                           const std::map<std::string, std::array<int64_t, 3>>& profile) {
  Network direct;
  make(direct);
  std::vector<Host> a = run_direct(direct, inputs);
  if (pipeline_hook()) {
    Network built;
    make(built);
    std::vector<Host> b = run_pipeline(std::move(built), inputs, profile);
    EXPECT_EQ(a.size(), b.size());
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
      EXPECT_EQ(a[i].dims, b[i].dims) << "output " << i;
      EXPECT_EQ(a[i].dtype, b[i].dtype) << "output " << i;
      if (a[i].dims == b[i].dims && a[i].dtype == b[i].dtype) {
        // The builder may fuse or reorder float math: compare loosely, integers exactly.
        double tol = is_floating(a[i].dtype) ? 4 * tolerance(a[i].dtype) + 1e-5 : 0;
        expect_close(b[i], a[i].values(), tol, tol, "pipeline vs direct, output " + std::to_string(i));
      }
    }
  }
  return a;
}

}  // namespace kiln::engine::cputest
