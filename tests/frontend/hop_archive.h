// Test helper: the mlp_dyn fixture (linear -> gelu -> linear -> layer_norm -> softmax) with its
// gelu and second linear moved into a higher-order op's subgraph, serialized as PyTorch 2.11's
// torch.export writes one (positional args named "", the subgraph under `as_graph`, its own
// names and tensor_values; the op's outputs named by the getitem users). Inner names repeat outer
// ones on purpose: a subgraph is its own namespace.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <string>

#include "archive_util.h"

namespace testutil {

using hop_json = nlohmann::json;

inline std::string mlp_dyn_fixture() { return std::string(KILN_TEST_DATA) + "/mlp_dyn/export.pt2"; }

inline hop_json tensor_arg(const std::string& name) {
  return {{"name", ""}, {"arg", {{"as_tensor", {{"name", name}}}}}, {"kind", 1}};
}

// The subgraph computing linear(gelu(arg0_1), w, b) with inner value names gelu / linear.
inline hop_json mlp_subgraph(const hop_json& outer_nodes, const hop_json& tv) {
  hop_json gelu = outer_nodes[1], lin = outer_nodes[2];
  gelu["inputs"][0]["arg"]["as_tensor"]["name"] = "arg0_1";
  lin["inputs"][0]["arg"]["as_tensor"]["name"] = "gelu";
  lin["inputs"][1]["arg"]["as_tensor"]["name"] = "arg1_1";
  lin["inputs"][2]["arg"]["as_tensor"]["name"] = "arg2_1";
  lin["outputs"][0]["as_tensor"]["name"] = "linear";  // the outer operand's name, reused inside
  lin["name"] = "linear";
  hop_json sub = {{"inputs", hop_json::array()}, {"outputs", hop_json::array()}, {"nodes", {gelu, lin}},
                  {"tensor_values", hop_json::object()}, {"sym_int_values", hop_json::object()},
                  {"sym_bool_values", hop_json::object()}, {"sym_float_values", hop_json::object()},
                  {"custom_obj_values", hop_json::object()}, {"is_single_tensor_return", false}};
  const char* outer_in[] = {"linear", "p_b_weight", "p_b_bias"};
  for (int i = 0; i < 3; ++i) {
    const std::string n = "arg" + std::to_string(i) + "_1";
    sub["inputs"].push_back({{"as_tensor", {{"name", n}}}});
    sub["tensor_values"][n] = tv[outer_in[i]];
  }
  sub["tensor_values"]["gelu"] = tv["gelu"];
  sub["tensor_values"]["linear"] = tv["linear_1"];
  sub["outputs"].push_back({{"as_tensor", {{"name", "linear"}}}});
  return sub;
}

// `leading`: the op's arguments before the subgraph. `edit_sub` may change the subgraph.
inline Bytes mlp_dyn_with_hop(const std::string& op, const hop_json& leading,
                              const std::function<void(hop_json& model, hop_json& hop)>& edit = {}) {
  Archive a = Archive::read(read_file(mlp_dyn_fixture()));
  std::string* text = a.find("models/model.json");
  hop_json model = hop_json::parse(*text);
  hop_json& graph = model["graph_module"]["graph"];
  hop_json& nodes = graph["nodes"];
  hop_json& tv = graph["tensor_values"];
  hop_json hop = {{"target", "torch.ops.higher_order." + op}, {"inputs", hop_json::array()},
                  {"outputs", {{{"as_tensor", {{"name", "getitem"}}}}}}, {"metadata", hop_json::object()},
                  {"is_hop_single_tensor_return", false}, {"name", op}};
  for (const auto& l : leading) hop["inputs"].push_back({{"name", ""}, {"arg", l}, {"kind", 1}});
  hop["inputs"].push_back(
      {{"name", ""}, {"arg", {{"as_graph", {{"name", "submod_1"}, {"graph", mlp_subgraph(nodes, tv)}}}}}, {"kind", 1}});
  for (const char* in : {"linear", "p_b_weight", "p_b_bias"}) hop["inputs"].push_back(tensor_arg(in));
  tv["getitem"] = tv["linear_1"];
  tv.erase("gelu");
  tv.erase("linear_1");
  nodes[3]["inputs"][0]["arg"]["as_tensor"]["name"] = "getitem";  // layer_norm reads the op's result
  if (edit) edit(model, hop);
  nodes.erase(1);
  nodes[1] = hop;  // [linear, hop, layer_norm, softmax]
  *text = model.dump();
  return a.write();
}

}  // namespace testutil
