// ExecutionContext: binds inputs, resolves symbols from their dims, and runs the plan's layers on
// the backend over one activation arena. Per input shape it caches the resolved dims of every
// tensor, the arena offsets (planned by lifetimes) and workspace offsets. Layers with
// data-dependent output shapes (nonzero, some plugins) get their outputs through the
// OutputAllocator, which binds the new symbols; tensors depending on them are resolved lazily and
// allocated outside the arena.
#include "engine/runtime.h"

#include <algorithm>
#include <cstdlib>
#include <chrono>
#include <cstring>
#include <iostream>
#include <set>

#include "engine/layer_profile.h"
#include "engine/memory_planner.h"
#include "engine/network_internal.h"
#include "engine/plan_impl.h"

namespace kiln::engine {

namespace {

constexpr size_t kNoOffset = SIZE_MAX;

// Copies a strided host view into contiguous `dst`.
void gather_strided(const TensorView& v, uint8_t* dst) {
  size_t es = element_size(v.dtype);
  int64_t n = v.numel();
  size_t rank = v.dims.size();
  std::vector<int64_t> idx(rank, 0);
  const auto* src = static_cast<const uint8_t*>(v.data);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (size_t d = 0; d < rank; ++d) off += idx[d] * v.strides[d];
    std::memcpy(dst + i * es, src + off * static_cast<int64_t>(es), es);
    for (size_t d = rank; d-- > 0;) {
      if (++idx[d] < v.dims[d]) break;
      idx[d] = 0;
    }
  }
}

std::string dims_str(const std::vector<int64_t>& d) {
  std::string r = "[";
  for (size_t i = 0; i < d.size(); ++i) r += (i ? ", " : "") + std::to_string(d[i]);
  return r + "]";
}

struct ShapeState {
  SymbolValues symbols;
  std::vector<std::optional<std::vector<int64_t>>> dims;  // by tensor id; nullopt: data-dependent
  std::vector<size_t> offsets;                            // by tensor id; kNoOffset: not in the arena
  std::vector<size_t> ws_offsets, ws_bytes;               // by layer position
  size_t arena_bytes = 0;
  bool fully_static = true;  // no lazily resolved tensor: eligible for graph capture
};

// Sizes the kernels cannot check themselves because the builder let symbolic dims through.
void check_runtime_shapes(const Layer& l, const std::vector<std::vector<int64_t>>& ins,
                          const std::vector<int64_t>& out) {
  auto fail = [&](const std::string& m) {
    throw ShapeError(l.label() + ": " + m);
  };
  for (int64_t d : out)
    if (d < 0) fail("output shape " + dims_str(out) + " has a negative dim");
  const auto* fused = l.as<FusedPointwiseParams>();
  bool broadcasting = l.as<ElementwiseParams>() || l.as<SelectParams>() || (fused && !fused->gather);
  if (broadcasting) {
    // A row program's per-row output ([..., 1]): its inputs broadcast to the rows it reduced.
    std::vector<int64_t> target = out;
    if (fused && fused->row_length && !out.empty() && out.back() == 1) target.back() = fused->row_length;
    for (size_t i = 0; i < ins.size(); ++i) {
      const auto& s = ins[i];
      if (s.size() > target.size()) fail("input " + std::to_string(i) + " has more dims than the output");
      for (size_t k = 0; k < s.size(); ++k) {
        int64_t o = target[target.size() - s.size() + k];
        if (s[k] != 1 && s[k] != o)
          fail("input " + std::to_string(i) + " shape " + dims_str(s) + " does not broadcast to " + dims_str(target));
      }
    }
  } else if (auto* mm = l.as<MatMulParams>()) {
    const auto &a = ins[0], &b = ins[1];
    int64_t ka = mm->transpose_a ? a[a.size() - 2] : a.back();
    int64_t kb = mm->transpose_b ? b.back() : b[b.size() - 2];
    if (ka != kb) fail("inner dimensions differ: " + dims_str(a) + " @ " + dims_str(b));
  } else if (auto* sh = l.as<ShuffleParams>(); sh && sh->reshape) {
    int64_t n_in = 1, n_out = 1;
    for (int64_t d : ins[0]) n_in *= d;
    for (int64_t d : out) n_out *= d;
    if (n_in != n_out) fail("cannot reshape " + dims_str(ins[0]) + " to " + dims_str(out));
  }
}

}  // namespace

struct ExecutionContext::Impl {
  const Plan& plan;
  const Network& net;
  std::shared_ptr<Backend> backend;
  std::vector<Layer*> layers;
  std::vector<std::string> input_symbols;
  int id_bound = 0;

  struct Bound {
    TensorView view;              // what the user gave
    std::vector<uint8_t> host;    // contiguous copy of a strided host input
    void* device = nullptr;       // backend copy when the user's memory is elsewhere
    size_t device_bytes = 0;
    bool set = false;
  };
  std::vector<Bound> bound;
  std::map<int, void*> device_constants;  // non-CPU backends: weights uploaded once
  uint64_t constants_generation = 0;       // the plan's weights_generation they were uploaded at

  std::map<std::vector<int64_t>, ShapeState> cache;
  const ShapeState* state = nullptr;
  void* arena = nullptr;
  size_t arena_capacity = 0;
  std::vector<void*> dynamic;  // per-execute allocations (data-dependent tensors)
  std::vector<TensorView> views;
  // run_layers' per-layer buffers (see there).
  std::vector<TensorView> call_inputs, call_outputs;
  std::vector<char> call_pending;
  std::map<std::string, TensorView> user_outputs;
  std::map<std::string, int> capture_runs;
  std::unique_ptr<detail::LayerProfile> profile;  // KILN_PROFILE=1 only
  // The plan's buffer plan; or, for a plan run on another backend than it was built for, one made
  // again with that backend's in-place residuals (each backend's kernels allow their own).
  const std::map<int, Lifetime>* lifetimes = nullptr;
  const std::map<int, int>* aliases = nullptr;
  std::map<int, Lifetime> own_lifetimes;
  std::map<int, int> own_aliases;

  Impl(const Plan& p, std::shared_ptr<Backend> b) : plan(p), net(p.network()), backend(std::move(b)) {
    lifetimes = &p.impl().lifetimes;
    aliases = &p.impl().aliases;
    if (p.device() != backend->kind()) {
      compute_buffer_plan(net, backend->kind(), &own_lifetimes, &own_aliases);
      lifetimes = &own_lifetimes;
      aliases = &own_aliases;
    }
    constants_generation = p.weights_generation();
    layers = net.layers();
    input_symbols = net.input_symbols();
    id_bound = net.tensor_id_bound();
    bound.resize(net.inputs().size());
    views.resize(id_bound);
    if (detail::LayerProfile::enabled()) profile = std::make_unique<detail::LayerProfile>();
  }

  ~Impl() {
    if (profile && !profile->empty()) {
      // KILN_PROFILE_ROWS: how many of the slowest layers to list (default 25)
      const char* rows = std::getenv("KILN_PROFILE_ROWS");
      profile->print(std::cerr, std::string("plan on ") + to_string(backend->kind()),
                     rows && *rows ? size_t(std::max(1L, std::atol(rows))) : 25);
    }
    free_dynamic();
    if (arena) backend->deallocate(arena);
    for (auto& b : bound)
      if (b.device) backend->deallocate(b.device);
    for (auto& [id, p] : device_constants) backend->deallocate(p);
  }

  void free_dynamic() {
    for (void* p : dynamic) backend->deallocate(p);
    dynamic.clear();
  }

  void* allocate_dynamic(size_t bytes) {
    if (detail::debug_logging()) detail::log_debug("execute: " + std::to_string(bytes) + " bytes allocated outside the arena");
    void* p = backend->allocate(std::max<size_t>(bytes, 1));
    dynamic.push_back(p);
    return p;
  }

  size_t input_index(const std::string& name) const {
    const auto& ins = net.inputs();
    for (size_t i = 0; i < ins.size(); ++i)
      if (ins[i]->name() == name) return i;
    std::string names;
    for (Tensor* t : ins) names += (names.empty() ? "" : ", ") + t->name();
    throw ShapeError("no input named '" + name + "' (inputs: " + names + ")");
  }

  // Binds symbols from plain-symbol dims, then checks every input dim against its expression.
  SymbolValues resolve_symbols() const {
    SymbolValues sv;
    const auto& ins = net.inputs();
    for (size_t i = 0; i < ins.size(); ++i) {
      const Shape& s = ins[i]->shape();
      for (size_t d = 0; d < s.size(); ++d)
        if (s[d].op() == DimExpr::Op::Sym) sv.emplace(s[d].symbol_name(), bound[i].view.dims[d]);
    }
    for (size_t i = 0; i < ins.size(); ++i) {
      const Shape& s = ins[i]->shape();
      for (size_t d = 0; d < s.size(); ++d) {
        int64_t want;
        try {
          want = s[d].evaluate(sv);
        } catch (const ShapeError& e) {
          throw ShapeError("input '" + ins[i]->name() + "' dim " + std::to_string(d) + ": " + e.what());
        }
        if (want != bound[i].view.dims[d])
          throw ShapeError("input '" + ins[i]->name() + "' dim " + std::to_string(d) + " is " +
                           std::to_string(bound[i].view.dims[d]) + ", but its shape " + to_string(s) + " makes it " +
                           std::to_string(want) + " (from the other inputs)");
      }
    }
    return sv;
  }

  const ShapeState& state_for(const std::vector<int64_t>& key) {
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    ShapeState st;
    st.symbols = resolve_symbols();
    st.dims.resize(id_bound);
    st.offsets.assign(id_bound, kNoOffset);
    for (size_t i = 0; i < net.inputs().size(); ++i) st.dims[net.inputs()[i]->id()] = bound[i].view.dims;
    std::vector<BufferRequest> reqs;
    std::vector<int> req_tensor;  // >= 0: tensor id; < 0: -(layer position + 1) for a workspace
    const auto& lifetimes = *this->lifetimes;
    st.ws_offsets.assign(layers.size(), kNoOffset);
    st.ws_bytes.assign(layers.size(), 0);
    for (size_t li = 0; li < layers.size(); ++li) {
      const Layer* l = layers[li];
      for (const Tensor* t : l->outputs()) {
        bool resolvable = true;
        std::vector<std::string> syms;
        for (const DimExpr& d : t->shape()) d.collect_symbols(syms);
        for (const std::string& s : syms) resolvable = resolvable && st.symbols.count(s);
        if (!resolvable) {
          st.fully_static = false;
          continue;
        }
        st.dims[t->id()] = evaluate(t->shape(), st.symbols);
        auto lt = lifetimes.find(t->id());
        if (lt != lifetimes.end()) {
          int64_t n = 1;
          for (int64_t d : *st.dims[t->id()]) n *= std::max<int64_t>(d, 0);
          reqs.push_back({static_cast<size_t>(n) * element_size(t->dtype()), lt->second.first, lt->second.last});
          req_tensor.push_back(t->id());
        }
      }
      bool inputs_known = true;
      std::vector<std::vector<int64_t>> in_dims;
      std::vector<TensorView> in_views;
      for (const Tensor* t : l->inputs()) {
        if (!st.dims[t->id()]) {
          inputs_known = false;
          break;
        }
        in_dims.push_back(*st.dims[t->id()]);
        TensorView v;
        v.dtype = t->dtype();
        v.dims = *st.dims[t->id()];
        v.device = backend->kind();
        in_views.push_back(v);
      }
      if (!inputs_known || l->as<ConstantParams>()) continue;
      if (!l->outputs().empty() && st.dims[l->output()->id()])
        check_runtime_shapes(*l, in_dims, *st.dims[l->output()->id()]);
      size_t ws = backend->workspace_bytes(*l, in_views);
      if (ws) {
        st.ws_bytes[li] = ws;
        reqs.push_back({ws, static_cast<int>(li), static_cast<int>(li)});
        req_tensor.push_back(-static_cast<int>(li) - 1);
      }
    }
    ArenaPlan ap = plan_arena(reqs, arena_search_for(net));
    for (size_t r = 0; r < reqs.size(); ++r) {
      if (req_tensor[r] >= 0) st.offsets[req_tensor[r]] = ap.offsets[r];
      else st.ws_offsets[-req_tensor[r] - 1] = ap.offsets[r];
    }
    for (const auto& [id, root] : *aliases)
      if (st.dims[id] && st.offsets[root] != kNoOffset) st.offsets[id] = st.offsets[root];
    st.arena_bytes = ap.total_bytes;
    return cache.emplace(key, std::move(st)).first->second;
  }

  void upload_inputs() {
    const auto& ins = net.inputs();
    for (size_t i = 0; i < ins.size(); ++i) {
      Bound& b = bound[i];
      TensorView v = b.view;
      v.strides.clear();
      size_t bytes = v.nbytes();
      const void* src = b.view.data;
      if (!b.view.is_contiguous()) {  // host memory (checked at set_input)
        b.host.resize(bytes);
        gather_strided(b.view, b.host.data());
        src = b.host.data();
        v.data = b.host.data();
      }
      if (b.view.device != backend->kind() || (!b.view.is_contiguous() && backend->kind() != DeviceKind::kCPU)) {
        if (b.device_bytes < bytes || !b.device) {
          if (b.device) backend->deallocate(b.device);
          b.device = backend->allocate(std::max<size_t>(bytes, 1));
          b.device_bytes = bytes;
        }
        backend->copy(b.device, backend->kind(), src, b.view.is_contiguous() ? b.view.device : DeviceKind::kCPU, bytes);
        v.data = b.device;
      }
      v.device = backend->kind();
      views[ins[i]->id()] = v;
    }
  }

  // After Plan::refit: the new constants copied into the device buffers already uploaded, at the
  // same addresses, so recorded CUDA graphs (which read those addresses) stay valid.
  void refresh_device_constants() {
    if (constants_generation == plan.weights_generation()) return;
    for (const Layer* l : layers) {
      const auto* c = l->as<ConstantParams>();
      if (!c) continue;
      auto it = device_constants.find(l->output()->id());
      if (it != device_constants.end())
        backend->copy(it->second, backend->kind(), c->weights.data.get(), DeviceKind::kCPU, c->weights.nbytes());
    }
    backend->synchronize();
    constants_generation = plan.weights_generation();
  }

  TensorView constant_view(const Layer& l) {
    const Weights& w = l.as<ConstantParams>()->weights;
    TensorView v;
    v.dtype = w.dtype;
    v.dims = w.dims;
    v.device = backend->kind();
    if (backend->kind() == DeviceKind::kCPU) {
      v.data = const_cast<uint8_t*>(w.data.get());
    } else {
      void*& p = device_constants[l.output()->id()];
      if (!p) {
        p = backend->allocate(std::max<size_t>(w.nbytes(), 1));
        backend->copy(p, backend->kind(), w.data.get(), DeviceKind::kCPU, w.nbytes());
      }
      v.data = p;
    }
    return v;
  }

  // True when the layer's output was given its input's buffer (compute_buffer_plan), so running the
  // layer would only copy the bytes onto themselves.
  bool aliases_input(const Layer& l) const {
    const auto& aliases = *this->aliases;
    if (l.outputs().size() != 1 || l.inputs().empty() || !aliases.count(l.output()->id())) return false;
    return views[l.output()->id()].data == views[l.inputs()[0]->id()].data;
  }

  void run_layers(SymbolValues& symbols) {
    const ShapeState& st = *state;
    auto* base = static_cast<uint8_t*>(arena);
    for (size_t li = 0; li < layers.size(); ++li) {
      const Layer& l = *layers[li];
      if (l.as<ConstantParams>()) {
        views[l.output()->id()] = constant_view(l);
        continue;
      }
      // The call's views live in buffers kept across layers and executes: copying into them reuses
      // their dims' capacity, where fresh vectors cost several allocations a layer (a third of a
      // small layer's time on the CPU).
      std::vector<TensorView>& ins = call_inputs;
      std::vector<TensorView>& outs = call_outputs;
      std::vector<char>& pending = call_pending;
      ins.resize(l.inputs().size());
      for (size_t i = 0; i < ins.size(); ++i) ins[i] = views[l.inputs()[i]->id()];
      outs.resize(l.outputs().size());
      pending.assign(l.outputs().size(), 0);
      bool lazy = false, all_empty = true;
      for (size_t oi = 0; oi < l.outputs().size(); ++oi) {
        const Tensor* t = l.outputs()[oi];
        TensorView& v = outs[oi];
        v.dtype = t->dtype();
        v.device = backend->kind();
        v.strides.clear();
        v.data = nullptr;
        bool waiting = false;
        if (st.dims[t->id()]) {
          v.dims = *st.dims[t->id()];
          v.data = st.offsets[t->id()] != kNoOffset ? base + st.offsets[t->id()] : nullptr;
          if (!v.data) v.data = allocate_dynamic(v.nbytes());  // an output outside the lifetimes
        } else {
          // resolvable now if the data-dependent symbols it uses are bound
          std::vector<std::string> syms;
          for (const DimExpr& d : t->shape()) d.collect_symbols(syms);
          bool ready = std::all_of(syms.begin(), syms.end(), [&](const std::string& s) { return symbols.count(s); });
          if (ready) {
            v.dims = evaluate(t->shape(), symbols);
            v.data = allocate_dynamic(v.nbytes());
            lazy = true;
          } else {
            v.dims.clear();
            waiting = true;  // the kernel allocates it through allocate_output
          }
        }
        if (waiting || v.numel() > 0) all_empty = false;
        pending[oi] = waiting;
      }
      // Also where only an input is data-dependent: a size traced as a number (PyTorch 1.13 records
      // x[mask].reshape(-1, d) as a reshape to the traced count) must fail, not read past the rows.
      bool dependent_input = false;  // (none in a fully static state: no loop on its hot path)
      if (!st.fully_static)
        for (const Tensor* t : l.inputs()) dependent_input = dependent_input || !st.dims[t->id()];
      if ((lazy || dependent_input) && !pending.empty() && !pending[0]) {
        std::vector<std::vector<int64_t>> in_dims;
        for (const TensorView& v : ins) in_dims.push_back(v.dims);
        check_runtime_shapes(l, in_dims, outs[0].dims);
      }
      // One pointer captured: std::function keeps it without allocating.
      struct AllocationContext {
        Impl* self;
        const Layer& l;
        SymbolValues& symbols;
      } actx{this, l, symbols};
      OutputAllocator allocate = [ctx = &actx](size_t index, const std::vector<int64_t>& dims) -> TensorView {
        Impl& self = *ctx->self;
        const Layer& l = ctx->l;
        SymbolValues& symbols = ctx->symbols;
        if (index >= self.call_outputs.size())
          throw ShapeError("layer '" + l.name() + "': no output " + std::to_string(index));
        const Tensor* t = l.outputs()[index];
        if (dims.size() != t->rank())
          throw ShapeError("layer '" + l.name() + "': output " + std::to_string(index) + " allocated with rank " +
                           std::to_string(dims.size()) + ", expected " + std::to_string(t->rank()));
        for (size_t d = 0; d < dims.size(); ++d) {
          const DimExpr& e = t->shape()[d];
          if (e.op() == DimExpr::Op::Sym && !symbols.count(e.symbol_name())) {
            symbols[e.symbol_name()] = dims[d];
          } else if (e.evaluate(symbols) != dims[d]) {
            throw ShapeError("layer '" + l.name() + "': output " + std::to_string(index) + " dim " + std::to_string(d) +
                             " allocated as " + std::to_string(dims[d]) + ", expected " + e.str());
          }
        }
        TensorView v;
        v.dtype = t->dtype();
        v.dims = dims;
        v.device = self.backend->kind();
        v.data = self.allocate_dynamic(v.nbytes());
        self.call_outputs[index] = v;
        self.call_pending[index] = 0;
        return v;
      };
      for (size_t i = 0; i < outs.size(); ++i) views[l.outputs()[i]->id()] = outs[i];
      if (all_empty) continue;  // nothing to compute; kernels need not handle empty outputs
      if (aliases_input(l)) continue;  // a reshape/identity whose output already is its input's bytes
      void* ws = nullptr;
      size_t ws_bytes = 0;
      if (st.ws_offsets[li] != kNoOffset) {
        ws = base + st.ws_offsets[li];
        ws_bytes = st.ws_bytes[li];
      } else if (lazy || std::any_of(pending.begin(), pending.end(), [](char b) { return b != 0; }) ||
                 std::any_of(l.inputs().begin(), l.inputs().end(), [&](const Tensor* t) { return !st.dims[t->id()]; })) {
        ws_bytes = backend->workspace_bytes(l, ins);
        if (ws_bytes) ws = allocate_dynamic(ws_bytes);
      }
      LayerCall call{l, ins, outs, allocate, ws, ws_bytes, &symbols};
      if (profile) {
        backend->synchronize();  // time this layer alone, not the queue before it
        const auto t0 = std::chrono::steady_clock::now();
        backend->execute(call);
        backend->synchronize();
        profile->add(l.name(), l.kind(), l.origin(),
                     std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      } else {
        backend->execute(call);
      }
      for (size_t i = 0; i < outs.size(); ++i) {
        if (pending[i])
          throw ShapeError(l.label() + " did not allocate its data-dependent output " +
                           std::to_string(i));
        views[l.outputs()[i]->id()] = outs[i];
      }
    }
  }
};

ExecutionContext::ExecutionContext(const Plan& plan, std::shared_ptr<Backend> backend) {
  if (!backend) backend = plan.device() == DeviceKind::kCPU ? make_cpu_backend() : make_cuda_backend();
  if (backend->kind() == DeviceKind::kCUDA) {
    if (const std::string why = plan.gpu_mismatch(); !why.empty()) throw PlanError(why);
    register_device_code(plan.impl().device_code);  // (only once the plan is known to be for this GPU)
  }
  impl_ = std::make_unique<Impl>(plan, std::move(backend));
}

ExecutionContext::~ExecutionContext() = default;

void ExecutionContext::set_input(const std::string& name, const TensorView& view) {
  Impl& m = *impl_;
  size_t i = m.input_index(name);
  const Tensor* t = m.net.inputs()[i];
  if (view.dtype != t->dtype())
    throw ShapeError("input '" + name + "' has dtype " + to_string(view.dtype) + ", expected " + to_string(t->dtype()));
  if (view.dims.size() != t->rank())
    throw ShapeError("input '" + name + "' has rank " + std::to_string(view.dims.size()) + " " + dims_str(view.dims) +
                     ", expected rank " + std::to_string(t->rank()) + " " + to_string(t->shape()));
  if (!view.strides.empty() && view.strides.size() != view.dims.size())
    throw ShapeError("input '" + name + "' has " + std::to_string(view.strides.size()) + " strides for " +
                     std::to_string(view.dims.size()) + " dims");
  for (size_t d = 0; d < view.dims.size(); ++d) {
    const DimExpr& e = t->shape()[d];
    int64_t got = view.dims[d];
    if (got < 0) throw ShapeError("input '" + name + "' dim " + std::to_string(d) + " is negative");
    if (auto c = e.constant(); c && *c != got)
      throw ShapeError("input '" + name + "' dim " + std::to_string(d) + " is " + std::to_string(got) + ", expected " +
                       std::to_string(*c) + " (shape " + to_string(t->shape()) + ")");
    if (e.op() == DimExpr::Op::Sym) {
      auto it = m.plan.impl().profile.find(e.symbol_name());
      if (it != m.plan.impl().profile.end() && (got < it->second.min || got > it->second.max))
        throw ShapeError("input '" + name + "' dim " + std::to_string(d) + " is " + std::to_string(got) +
                         ", outside the profile range [" + std::to_string(it->second.min) + ", " +
                         std::to_string(it->second.max) + "] of symbol '" + e.symbol_name() + "'");
    }
  }
  if (view.numel() > 0 && !view.data) throw ShapeError("input '" + name + "' has no data");
  if (!view.is_contiguous() && view.device != DeviceKind::kCPU)
    throw ShapeError("input '" + name + "' is a strided device view; give a contiguous one");
  if (view.device != m.backend->kind() && view.device != DeviceKind::kCPU)
    throw ShapeError("input '" + name + "' lives on " + to_string(view.device) + " but the context runs on " +
                     to_string(m.backend->kind()));
  m.bound[i].view = view;
  m.bound[i].set = true;
}

void ExecutionContext::execute() { run(/*wait=*/true); }
void ExecutionContext::enqueue() { run(/*wait=*/false); }

void ExecutionContext::run(bool wait) {
  Impl& m = *impl_;
  std::vector<int64_t> key;
  for (size_t i = 0; i < m.bound.size(); ++i) {
    if (!m.bound[i].set) throw ShapeError("input '" + m.net.inputs()[i]->name() + "' was not set");
    key.push_back(static_cast<int64_t>(m.bound[i].view.dims.size()));
    key.insert(key.end(), m.bound[i].view.dims.begin(), m.bound[i].view.dims.end());
  }
  m.state = &m.state_for(key);
  m.backend->set_workspace_limit(m.plan.workspace_limit());  // a backend may run several plans
  if (m.arena_capacity < m.state->arena_bytes || !m.arena) {
    if (m.arena) m.backend->deallocate(m.arena);
    m.arena = nullptr;
    m.arena = m.backend->allocate(std::max<size_t>(m.state->arena_bytes, 64));
    m.arena_capacity = m.state->arena_bytes;
  }
  m.free_dynamic();
  m.refresh_device_constants();
  m.upload_inputs();
  if (m.profile) m.profile->count_execute();
  SymbolValues symbols = m.state->symbols;

  // Static shapes on a backend that records: run once, record the second run, replay afterwards.
  // KILN_CUDA_GRAPHS=0 runs layer by layer always (to tell a graph's effect apart).
  static const bool graphs_enabled = detail::env_flag("KILN_CUDA_GRAPHS", true);
  bool capture = graphs_enabled && m.backend->supports_capture() && m.state->fully_static && !m.profile;
  std::string ckey;
  if (capture) {
    ckey = "arena=" + std::to_string(reinterpret_cast<uintptr_t>(m.arena));
    for (int64_t k : key) ckey += "," + std::to_string(k);
    for (auto& b : m.bound)
      ckey += ";" + std::to_string(reinterpret_cast<uintptr_t>(b.device ? b.device : b.view.data));
    // new input addresses every call would record a graph per call: stop recording then
    capture = m.capture_runs.count(ckey) || m.capture_runs.size() < 64;
  }
  int run = capture ? ++m.capture_runs[ckey] : 0;
  if (detail::debug_logging()) {
    const char* mode = !capture ? "layer by layer" : run == 2 ? "recording a graph" : run >= 3 ? "graph replay" : "first run";
    detail::log_debug(std::string("execute: ") + mode + (m.state->fully_static ? "" : " (shapes not all static)") +
                      ", " + std::to_string(m.capture_runs.size()) + " recorded key(s)");
  }
  if (run >= 3 && m.backend->replay(ckey)) {
    // the views of the recorded run still hold: same shapes, same addresses
  } else if (run == 2) {
    m.backend->begin_capture();
    try {
      m.run_layers(symbols);
    } catch (...) {
      m.backend->end_capture(ckey + "#failed");
      throw;
    }
    m.backend->end_capture(ckey);
    m.backend->replay(ckey);
  } else {
    m.run_layers(symbols);
  }

  for (auto& [name, dst] : m.user_outputs) {
    const TensorView& src = output(name);
    if (src.dims != dst.dims || src.dtype != dst.dtype)
      throw ShapeError("output buffer for '" + name + "' is " + to_string(dst.dtype) + dims_str(dst.dims) +
                       ", the output is " + to_string(src.dtype) + dims_str(src.dims));
    m.backend->copy(dst.data, dst.device, src.data, src.device, src.nbytes());
  }
  if (wait) m.backend->synchronize();
  else m.backend->flush_timing_cache();
}

const TensorView& ExecutionContext::output(const std::string& name) const {
  const auto& outs = impl_->net.outputs();
  for (size_t i = 0; i < outs.size(); ++i)
    if (outs[i].first == name) return output(i);
  throw ShapeError("no output named '" + name + "'");
}

const TensorView& ExecutionContext::output(size_t index) const {
  const auto& outs = impl_->net.outputs();
  if (index >= outs.size()) throw ShapeError("output index " + std::to_string(index) + " is out of range");
  if (!impl_->state) throw ShapeError("outputs are available after execute()");
  return impl_->views[outs[index].second->id()];
}

void ExecutionContext::set_output_buffer(const std::string& name, const TensorView& view) {
  bool found = false;
  for (auto& [n, t] : impl_->net.outputs()) found = found || n == name;
  if (!found) throw ShapeError("no output named '" + name + "'");
  if (!view.is_contiguous()) throw ShapeError("output buffer for '" + name + "' must be contiguous");
  impl_->user_outputs[name] = view;
}

Backend& ExecutionContext::backend() { return *impl_->backend; }

size_t ExecutionContext::arena_bytes() const { return impl_->state ? impl_->state->arena_bytes : 0; }

}  // namespace kiln::engine
