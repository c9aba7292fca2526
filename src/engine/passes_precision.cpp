// fp16/bf16 precision: float inputs are cast to the low type at entry, float constants, fills and
// casts to f32 become the low type, every layer is re-inferred in order, and outputs declared f32
// are cast back. Kernels accumulate reductions/softmax/normalization/attention in fp32 regardless.
// Layers that require fp32 (Network::Fp32Scope) keep their types: they read the network's f32
// inputs as given, and a cast is put wherever their f32 values and the low ones meet.
#include "engine/builder.h"
#include "engine/network_internal.h"

namespace kiln::engine::passes {

size_t apply_precision(Network& net, Precision p) {
  if (p == Precision::kFP32) return 0;
  const DataType low = p == Precision::kFP16 ? DataType::kFloat16 : DataType::kBFloat16;
  size_t changes = 0;
  std::map<std::string, DataType> declared;
  for (auto& [n, t] : net.outputs()) declared[n] = t->dtype();

  for (Tensor* in : std::vector<Tensor*>(net.inputs())) {
    if (in->dtype() != DataType::kFloat32) continue;
    Layer* c = net.add_cast(in->name() + "_to_" + to_string(low), in, low);
    net.replace_all_uses(in, c->output());
    for (Layer* user : net.consumers(c->output()))  // fp32 layers read the input itself, unrounded
      if (user->requires_fp32())
        for (size_t i = 0; i < user->inputs().size(); ++i)
          if (user->inputs()[i] == c->output()) net.replace_input(user, i, in);
    ++changes;
  }
  net.topological_sort();

  for (Layer* l : net.layers()) {
    // Where fp32 and low-precision layers meet, the reader casts what it reads to its own type.
    const DataType wanted = l->requires_fp32() ? DataType::kFloat32 : low;
    if (!l->as<CastParams>()) {
      for (size_t i = 0; i < l->inputs().size(); ++i) {
        Tensor* in = l->inputs()[i];
        if ((in->dtype() == DataType::kFloat32 || in->dtype() == low) && in->dtype() != wanted) {
          net.replace_input(l, i, net.add_cast(l->name() + "_in" + std::to_string(i) + "_" + to_string(wanted), in,
                                               wanted)->output());
          ++changes;
        }
      }
    }
    if (l->requires_fp32()) {
      try {
        net.set_layer_params(l, l->params());  // re-inferred: its inputs may have changed type
      } catch (const NetworkError& e) {
        throw NetworkError(std::string("precision ") + to_string(p) + ": " + e.what());
      }
      continue;
    }
    LayerParams params = l->params();
    if (auto* c = std::get_if<ConstantParams>(&params); c && c->weights.dtype == DataType::kFloat32) {
      const Weights& w = c->weights;
      std::vector<uint8_t> buf(static_cast<size_t>(w.numel()) * 2 + 1);
      detail::convert_elements(w.data.get(), w.dtype, buf.data(), low, w.numel());
      c->weights = Weights::copy_of(low, w.dims, buf.data());
      ++changes;
    } else if (auto* cast = std::get_if<CastParams>(&params); cast && cast->to == DataType::kFloat32) {
      if (l->inputs()[0]->dtype() == low && net.consumers(l->output()).empty()) {
        // a cast of an output back to f32 (the pass ran before); keep
      } else {
        cast->to = low;
        ++changes;
      }
    } else if (auto* f = std::get_if<FillParams>(&params); f && f->dtype == DataType::kFloat32) {
      f->dtype = low;
      ++changes;
    } else if (auto* fp = std::get_if<FusedPointwiseParams>(&params)) {
      for (PointwiseInstr& ins : fp->program)
        if (ins.dtype == DataType::kFloat32) ins.dtype = low;
    }
    try {
      net.set_layer_params(l, std::move(params));
    } catch (const NetworkError& e) {
      throw NetworkError(std::string("precision ") + to_string(p) + ": " + e.what());
    }
  }

  net.topological_sort();  // the casts added before readers
  for (auto& [name, t] : std::vector<std::pair<std::string, Tensor*>>(net.outputs())) {
    if (declared[name] == DataType::kFloat32 && t->dtype() == low) {
      Layer* c = net.add_cast(name + "_to_f32", t, DataType::kFloat32);
      net.replace_output(name, c->output());
      ++changes;
    }
  }
  detail::log_debug(std::string("apply_precision: ") + to_string(p) + ", " + std::to_string(changes) + " changes");
  return changes;
}

}  // namespace kiln::engine::passes
