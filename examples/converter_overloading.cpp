// The seed tutorial (converter_overloading.rst) in C++: overload kiln's GeLU converter with a
// custom one for the tanh approximation only.
//
// The program is built by hand (one placeholder + one aten.gelu.default node, as torch.export
// writes it: `approximate` present only when not the default) and compiled with the same steps the
// program layer runs: convert_segment (registry lookup + converters), engine::build, execute.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "conversion/convert.h"
#include "conversion/impl/impl.h"
#include "conversion/registry.h"
#include "engine/builder.h"
#include "engine/runtime.h"

using namespace kiln;
using conversion::ConversionContext;
using conversion::Kwargs;
using conversion::SourceIR;
using conversion::Value;

namespace {

// class GeLU(torch.nn.Module): forward(x) = gelu(x, approximate=mode), exported for x: f32[2, 5].
ir::ExportedProgram gelu_program(const std::string& mode) {
  ir::ExportedProgram p;
  ir::TensorMeta m;
  m.dtype = ir::ScalarType::Float;
  m.sizes = {2, 5};
  ir::Node* x = p.graph.create(ir::NodeKind::Placeholder, "x", "x");
  x->meta = ir::ValueMeta::of_tensor(m);
  std::vector<std::pair<std::string, ir::Argument>> kwargs;
  if (mode != "none") kwargs.emplace_back("approximate", mode);  // defaults are omitted, as in .pt2
  ir::Node* g = p.graph.create(ir::NodeKind::CallFunction, "gelu", "aten.gelu.default", {x}, kwargs);
  g->meta = ir::ValueMeta::of_tensor(m);
  p.graph.create(ir::NodeKind::Output, "output", "output", {ir::Argument(ir::Argument::List{g})});
  return p;
}

struct Compiled {
  engine::Plan plan;
  std::string graph;      // the converted network, as `print(module.graph)` shows the graph
  std::string converter;  // which converter converted the gelu node
};

// kiln.compile(my_mod, arg_inputs=(ex_input,), min_block_size=1) for a one-op program.
Compiled compile(ir::ExportedProgram& p) {
  conversion::CompilationSettings settings;
  settings.min_block_size = 1;
  std::vector<const ir::Node*> nodes, inputs, outputs;
  for (const ir::Node* n : p.graph.nodes()) {
    if (n->kind == ir::NodeKind::Placeholder) inputs.push_back(n);
    if (n->kind == ir::NodeKind::CallFunction) nodes.push_back(n);
  }
  outputs.push_back(nodes.back());
  conversion::ConvertedSegment seg = conversion::convert_segment(p, nodes, inputs, outputs, settings);
  Compiled c{engine::Plan(), seg.network->str(),
             std::string(conversion::to_string(seg.used.at(0).second->priority)) + " " + seg.used.at(0).second->origin};
  c.plan = engine::build(std::move(*seg.network), engine::BuilderConfig{});
  return c;
}

std::vector<float> run(const Compiled& c, std::vector<float> input) {
  engine::ExecutionContext exec(c.plan);
  engine::TensorView v;
  v.data = input.data();
  v.dtype = engine::DataType::kFloat32;
  v.dims = {2, 5};
  exec.set_input("x", v);
  exec.execute();
  const engine::TensorView& out = exec.output(0);
  const float* d = out.as<float>();
  return std::vector<float>(d, d + out.numel());
}

void print(const std::string& title, const Compiled& c, const std::vector<float>& out) {
  std::cout << title << " (converted by the " << c.converter << " converter)\n" << c.graph;
  std::cout << "tensor([";
  for (size_t i = 0; i < out.size(); ++i) std::printf("%s%.4f", i ? (i % 5 ? ", " : ",\n        ") : "", out[i]);
  std::cout << "])\n\n";
}

// torch.allclose defaults: |a - b| <= atol + rtol * |b|
bool allclose(const std::vector<float>& a, const std::vector<float>& b, double rtol = 1e-5, double atol = 1e-8) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(std::fabs(a[i] - b[i]) <= atol + rtol * std::fabs(b[i]))) return false;
  return true;
}

// The tutorial's custom converter: GeLU-tanh from impl mul / add / tanh, with its constants.
Value aten_ops_gelu(ConversionContext& ctx, const std::string& target, const std::vector<Value>& args,
                    const Kwargs& kwargs, const std::string& name) {
  namespace impl = conversion::impl;
  // Cheap way to allow layer names to be unique
  int op_count = 0;
  auto get_op_count = [&] { return ++op_count; };
  auto mul = [&](const Value& x, const Value& y) -> Value {
    return impl::elementwise::mul(ctx, target, SourceIR::ATEN, "mul_" + std::to_string(get_op_count()), x, y);
  };
  auto add = [&](const Value& x, const Value& y) -> Value {
    return impl::elementwise::add(ctx, target, SourceIR::ATEN, "add_" + std::to_string(get_op_count()), x, y);
  };
  auto tanh = [&](const Value& x) -> Value {
    return impl::activation::tanh(ctx, target, SourceIR::ATEN, "tanh_" + std::to_string(get_op_count()), x.tensor());
  };

  // So we know that our custom converter is being run instead of the standard one
  std::cout << "\n\n---------------------------\n";
  std::cout << "Using custom GeLU converter\n";
  std::cout << "---------------------------\n\n\n";

  Value x_7 = mul(args[0], 0.5);
  Value x_8 = mul(args[0], 0.79788456080000003);
  Value x_9 = mul(args[0], 0.044714999999999998);
  Value x_10 = mul(x_9, args[0]);
  Value x_11 = add(x_10, 1.0);
  Value x_12 = mul(x_8, x_11);
  Value x_13 = tanh(x_12);
  Value x_14 = add(x_13, 1.0);
  Value x_15 = mul(x_7, x_14);
  return x_15;
}

}  // namespace

int main() {
  try {
    conversion::register_builtin_converters();

    std::mt19937 rng(0);
    std::normal_distribution<float> randn;
    std::vector<float> ex_input(10);
    for (float& v : ex_input) v = randn(rng);

    // As a baseline, the standard converter (in tanh approximation mode).
    ir::ExportedProgram my_mod = gelu_program("tanh");
    Compiled my_standard_gelu = compile(my_mod);
    std::vector<float> standard_out = run(my_standard_gelu, ex_input);
    print("my_standard_gelu", my_standard_gelu, standard_out);

    // Writing a custom converter: HIGH priority, only for approximate == "tanh".
    conversion::ConverterSpec spec;
    spec.target = "aten.gelu.default";
    spec.fn = aten_ops_gelu;
    spec.validator = [](const ir::Node& node, const conversion::CompilationSettings&) {
      const ir::Argument* a = node.kwarg("approximate");
      return a != nullptr && a->is<std::string>() && a->as<std::string>() == "tanh";
    };
    spec.validator_name = "approximate == 'tanh'";
    spec.supports_dynamic_shapes = true;
    spec.priority = conversion::ConverterPriority::HIGH;
    spec.requires_output_allocator = true;
    spec.origin = "c++:example.aten_ops_gelu";
    conversion::ConverterRegistry::global().add(spec);

    // Using our custom converter.
    Compiled my_custom_gelu = compile(my_mod);
    std::vector<float> custom_out = run(my_custom_gelu, ex_input);
    print("my_custom_gelu", my_custom_gelu, custom_out);

    const bool close = allclose(standard_out, custom_out);
    std::cout << "tanh approximations are close: " << (close ? "true" : "false") << "\n\n";

    // approximate='none': the custom validator rejects, the standard converter still converts.
    ir::ExportedProgram my_mod_erf = gelu_program("none");
    Compiled my_gelu_erf = compile(my_mod_erf);
    std::vector<float> erf_out = run(my_gelu_erf, ex_input);
    print("my_gelu_erf", my_gelu_erf, erf_out);
    const bool erf_standard = my_gelu_erf.converter.find("builtin") != std::string::npos;
    if (!close || !erf_standard) {
      std::cerr << "example_converter_overloading: "
                << (!close ? "custom and standard tanh GeLU disagree" : "erf GeLU not converted by the standard converter")
                << "\n";
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "example_converter_overloading: " << e.what() << "\n";
    return 1;
  }
}
