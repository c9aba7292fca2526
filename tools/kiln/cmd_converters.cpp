// `kiln converters [OP]`: the registry, op -> candidates in priority order.
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <iostream>
#include <memory>

#include "conversion/registry.h"
#include "program/load.h"

namespace {

void run_converters(const std::string& op_arg) {
  using namespace kiln;
  conversion::register_builtin_converters();
  auto& reg = conversion::ConverterRegistry::global();
  std::vector<std::string> targets = reg.targets();
  if (!op_arg.empty()) {
    std::string op = op_arg.rfind("torch.ops.", 0) == 0 ? op_arg.substr(10) : op_arg;
    if (reg.candidates(op).empty())
      throw program::InputError("no converter is registered for '" + op + "' (" + std::to_string(targets.size()) +
                                " ops have one; `kiln converters` lists them)");
    targets = {op};
  }
  for (const std::string& t : targets) {
    std::cout << t << "\n";
    for (const conversion::ConverterSpec* c : reg.candidates(t)) {
      std::cout << "  " << conversion::to_string(c->priority) << "  origin=" << c->origin
                << "  validator=" << (c->validator ? (c->validator_name.empty() ? "yes" : c->validator_name) : "none")
                << "  dynamic_shapes=" << (c->supports_dynamic_shapes ? "yes" : "no");
      if (c->requires_output_allocator) std::cout << "  requires_output_allocator";
      std::cout << "\n";
    }
  }
  if (op_arg.empty()) std::cout << targets.size() << " ops\n";
}

}  // namespace

void add_converters_command(CLI::App& app) {
  auto op = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("converters", "List the converter registry (or one op's candidates)");
  cmd->add_option("op", *op, "op overload, e.g. aten.gelu.default");
  cmd->callback([op] {
    run_converters(*op);
  });
}
