// `kiln inspect MODEL.pt2|MODEL.kiln`: a program summary (inputs with shapes and symbol ranges,
// outputs, weights, op histogram), then the graph in torch.fx's style.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <set>
#include <string>

#include "commands.h"
#include "frontend/pt2.h"
#include "ir/graph.h"
#include "program/program.h"

namespace {

using namespace kiln;

std::string human_bytes(size_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

std::string value_str(const ir::Node* n) {
  switch (n->meta.kind) {
    case ir::ValueMeta::Kind::Tensor: return n->meta.tensor.str();
    case ir::ValueMeta::Kind::SymInt: return "SymInt " + n->meta.sym.str();
    case ir::ValueMeta::Kind::SymFloat: return "SymFloat";
    case ir::ValueMeta::Kind::SymBool: return "SymBool";
    case ir::ValueMeta::Kind::Tuple:
    case ir::ValueMeta::Kind::TensorList: {
      std::string s = n->meta.kind == ir::ValueMeta::Kind::Tuple ? "(" : "[";
      for (size_t i = 0; i < n->meta.tuple.size(); ++i)
        s += (i ? ", " : "") + (n->meta.tuple[i] ? n->meta.tuple[i]->str() : std::string("None"));
      return s + (n->meta.kind == ir::ValueMeta::Kind::Tuple ? ")" : "]");
    }
    case ir::ValueMeta::Kind::None: return "None";
  }
  return "?";
}

std::string range_str(const ir::SymRange& r) {
  std::string lo = r.min == INT64_MIN ? "-inf" : std::to_string(r.min);
  return lo + ".." + (r.max ? std::to_string(*r.max) : "inf");
}

void print_pt2(const std::string& path, std::ostream& os) {
  ir::ExportedProgram p = frontend::load_pt2(path);
  os << "program " << path << "\n";
  os << "  torch " << (p.torch_version.empty() ? "?" : p.torch_version) << ", schema " << p.schema_version.first
     << "." << p.schema_version.second << ", verifier " << p.verifier << "\n";

  const auto inputs = p.inputs();
  os << "inputs (" << inputs.size() << "):\n";
  std::vector<std::string> symbols;
  for (const ir::Node* n : inputs) {
    os << "  " << n->name << ": " << value_str(n) << "\n";
    if (n->meta.is_tensor())
      for (const auto& s : n->meta.tensor.sizes)
        if (s.expr) s.expr->collect_symbols(symbols);
    if (n->meta.kind == ir::ValueMeta::Kind::SymInt && n->meta.sym.expr) n->meta.sym.expr->collect_symbols(symbols);
  }
  for (const auto& [sym, r] : p.ranges)
    if (std::find(symbols.begin(), symbols.end(), sym) == symbols.end()) symbols.push_back(sym);
  if (!symbols.empty()) {
    os << "symbols (" << symbols.size() << "):\n";
    for (const auto& s : symbols) {
      auto it = p.ranges.find(s);
      os << "  " << s << ": " << (it == p.ranges.end() ? std::string("unconstrained") : range_str(it->second)) << "\n";
    }
  }

  const auto outs = p.graph.output_values();
  os << "outputs (" << outs.size() << "):\n";
  for (const auto& a : outs) os << "  " << a.str() << (a.is_node() ? ": " + value_str(a.node()) : "") << "\n";

  size_t params = 0, buffers = 0, constants = 0;
  for (const auto& [name, w] : p.weights) {
    if (w.kind == ir::Weight::Kind::Parameter) ++params;
    else if (w.kind == ir::Weight::Kind::Buffer) ++buffers;
    else ++constants;
  }
  os << "weights: " << p.weights.size() << " (" << params << " parameters, " << buffers << " buffers, " << constants
     << " constants), " << p.weight_bytes() << " bytes (" << human_bytes(p.weight_bytes()) << ")\n";

  std::map<std::string, size_t> histogram;
  size_t calls = 0;
  for (const ir::Node* n : p.graph.nodes())
    if (n->kind == ir::NodeKind::CallFunction) {
      ++histogram[n->target];
      ++calls;
    }
  std::vector<std::pair<std::string, size_t>> ops(histogram.begin(), histogram.end());
  std::stable_sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  os << "ops (" << calls << " calls, " << ops.size() << " distinct):\n";
  for (const auto& [op, count] : ops) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%6zu  ", count);
    os << "  " << buf << op << "\n";
  }
  os << "\n" << p.graph.str();
}

void print_kiln(const std::string& path, std::ostream& os) {
  auto p = program::CompiledProgram::load(path);
  os << "program " << path << "\n" << p.summary() << "\n" << p.str();
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "print a program's summary (inputs, symbols, outputs, weights, ops) "
                                            "and its graph");
  auto path = std::make_shared<std::string>();
  cmd->add_option("MODEL", *path, "a torch.export archive (.pt2) or a compiled program (.kiln)")->required();
  cmd->callback([path] {
    const std::string& p = *path;
    if (p.size() > 5 && p.compare(p.size() - 5, 5, ".kiln") == 0) print_kiln(p, std::cout);
    else print_pt2(p, std::cout);
    std::cout.flush();
  });
}
