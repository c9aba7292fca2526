// Higher-order ops in .pt2 programs (issue 14): no_grad / autocast regions are inlined, control
// flow is refused with an error naming the op.
#include <gtest/gtest.h>

#include <algorithm>

#include "frontend/pt2.h"
#include "hop_archive.h"

namespace kiln {
namespace {

using testutil::Bytes;
using testutil::hop_json;

ir::ExportedProgram load(const Bytes& b) { return frontend::load_pt2_from_memory(b.data(), b.size(), "hop.pt2"); }

std::vector<std::string> call_targets(const ir::ExportedProgram& p) {
  std::vector<std::string> out;
  for (const ir::Node* n : p.graph.nodes())
    if (n->kind == ir::NodeKind::CallFunction) out.push_back(n->target);
  return out;
}

void expect_error(const Bytes& b, const std::string& needle) {
  try {
    load(b);
    ADD_FAILURE() << "loaded; expected an error with: " << needle;
  } catch (const frontend::Pt2Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
  }
}

const hop_json kNoGrad = hop_json::array({{{"as_bool", false}}});
hop_json autocast(bool enabled) {
  return hop_json::array({{{"as_string", "cpu"}}, {{"as_none", true}}, {{"as_bool", enabled}}, {{"as_none", true}}});
}

TEST(Hop, SetGradEnabledIsInlined) {
  const ir::ExportedProgram want = frontend::load_pt2(testutil::mlp_dyn_fixture());
  const ir::ExportedProgram got = load(testutil::mlp_dyn_with_hop("wrap_with_set_grad_enabled", kNoGrad));
  EXPECT_EQ(call_targets(got), call_targets(want));
  // layer_norm reads the inlined linear, which reads the inlined gelu of the first linear.
  const ir::Node* norm = nullptr;
  for (const ir::Node* n : got.graph.nodes())
    if (n->target == "aten.layer_norm.default") norm = n;
  ASSERT_NE(norm, nullptr);
  const ir::Node* lin = norm->args.at(0).node();
  EXPECT_EQ(lin->target, "aten.linear.default");
  EXPECT_EQ(lin->args.at(0).node()->target, "aten.gelu.default");
  EXPECT_EQ(lin->args.at(0).node()->args.at(0).node()->target, "aten.linear.default");
  EXPECT_EQ(lin->args.at(1).node()->kind, ir::NodeKind::GetAttr);  // the lifted weight, through the operand
  EXPECT_EQ(lin->meta.tensor.str(), norm->meta.tensor.str());
}

TEST(Hop, AutocastDisabledIsInlinedWithoutCasts) {
  // transformers' rotary embeddings: `with torch.autocast(device_type, enabled=False)`.
  const ir::ExportedProgram want = frontend::load_pt2(testutil::mlp_dyn_fixture());
  const ir::ExportedProgram got = load(testutil::mlp_dyn_with_hop("wrap_with_autocast", autocast(false)));
  EXPECT_EQ(call_targets(got), call_targets(want));
}

TEST(Hop, NestedRegionsAreInlined) {
  // no_grad around an autocast(enabled=False) region, as Llama's rotary embedding exports.
  Bytes b = testutil::mlp_dyn_with_hop("wrap_with_set_grad_enabled", kNoGrad, [](hop_json&, hop_json& hop) {
    hop_json& sub = hop["inputs"][1]["arg"]["as_graph"]["graph"];
    hop_json inner = {{"target", "torch.ops.higher_order.wrap_with_autocast"},
                      {"inputs", hop_json::array()},
                      {"outputs", {{{"as_tensor", {{"name", "getitem_1"}}}}}},
                      {"metadata", hop_json::object()},
                      {"name", "wrap_with_autocast"}};
    for (const auto& l : autocast(false)) inner["inputs"].push_back({{"name", ""}, {"arg", l}, {"kind", 1}});
    hop_json inner_graph = sub;  // the same computation, one level deeper
    inner["inputs"].push_back(
        {{"name", ""}, {"arg", {{"as_graph", {{"name", "submod_0"}, {"graph", inner_graph}}}}}, {"kind", 1}});
    for (const char* in : {"arg0_1", "arg1_1", "arg2_1"}) inner["inputs"].push_back(testutil::tensor_arg(in));
    sub["nodes"] = hop_json::array({inner});
    sub["tensor_values"]["getitem_1"] = sub["tensor_values"]["linear"];
    sub["outputs"][0]["as_tensor"]["name"] = "getitem_1";
  });
  const ir::ExportedProgram want = frontend::load_pt2(testutil::mlp_dyn_fixture());
  EXPECT_EQ(call_targets(load(b)), call_targets(want));
}

TEST(Hop, SingletonTensorListOutput) {
  // Older writers gave a one-tensor tuple result as `as_tensors`.
  Bytes b = testutil::mlp_dyn_with_hop("wrap_with_set_grad_enabled", kNoGrad, [](hop_json&, hop_json& hop) {
    hop["outputs"] = hop_json::array({{{"as_tensors", {{{"name", "getitem"}}}}}});
  });
  const ir::ExportedProgram want = frontend::load_pt2(testutil::mlp_dyn_fixture());
  EXPECT_EQ(call_targets(load(b)), call_targets(want));
}

TEST(Hop, EnabledAutocastMakesItsCastsExplicit) {
  // Inside an enabled bf16 autocast region the subgraph records bf16 results of fp32 inputs; the
  // reader inserts the casts autocast would make (gelu's input; linear's weight and bias).
  Bytes b = testutil::mlp_dyn_with_hop("wrap_with_autocast", autocast(true), [](hop_json& model, hop_json& hop) {
    hop_json& tv = hop["inputs"][4]["arg"]["as_graph"]["graph"]["tensor_values"];
    tv["gelu"]["dtype"] = 13;  // BFLOAT16
    tv["linear"]["dtype"] = 13;
    model["graph_module"]["graph"]["tensor_values"]["getitem"]["dtype"] = 13;
  });
  const ir::ExportedProgram p = load(b);
  int casts = 0;
  for (const ir::Node* n : p.graph.nodes()) {
    if (n->target != "aten._to_copy.default") continue;
    ++casts;
    EXPECT_EQ(n->meta.tensor.dtype, ir::ScalarType::BFloat16);
    ASSERT_EQ(n->kwargs.size(), 1u);
    EXPECT_EQ(n->kwargs[0].first, "dtype");
    EXPECT_EQ(n->kwargs[0].second.as<ir::ScalarType>(), ir::ScalarType::BFloat16);
    ASSERT_EQ(n->users().size(), 1u);
    const std::string user = n->users()[0]->target;
    EXPECT_TRUE(user == "aten.gelu.default" || user == "aten.linear.default") << user;
  }
  EXPECT_EQ(casts, 3);
}

TEST(Hop, ControlFlowIsRefusedByName) {
  expect_error(testutil::mlp_dyn_with_hop("cond", hop_json::array({{{"as_bool", true}}})),
               "higher-order op 'cond' is not supported (data-dependent control flow");
  expect_error(testutil::mlp_dyn_with_hop("while_loop", hop_json::array()), "higher-order op 'while_loop'");
  expect_error(testutil::mlp_dyn_with_hop("invoke_subgraph", hop_json::array()), "higher-order op 'invoke_subgraph'");
}

TEST(Hop, MalformedRegionsAreErrors) {
  expect_error(testutil::mlp_dyn_with_hop("wrap_with_set_grad_enabled", kNoGrad,
                                          [](hop_json&, hop_json& hop) { hop["inputs"].erase(4); }),
               "3 placeholders for 2 operands");
  expect_error(testutil::mlp_dyn_with_hop("wrap_with_set_grad_enabled", hop_json::array({{{"as_int", 0}}})),
               "expected the 'enabled' bool");
  expect_error(testutil::mlp_dyn_with_hop("wrap_with_set_grad_enabled", kNoGrad,
                                          [](hop_json&, hop_json& hop) {
                                            hop["outputs"].push_back({{"as_tensor", {{"name", "extra"}}}});
                                          }),
               "2 outputs for a subgraph returning 1");
  // A subgraph cannot see outer values except through its placeholders.
  expect_error(testutil::mlp_dyn_with_hop("wrap_with_set_grad_enabled", kNoGrad,
                                          [](hop_json&, hop_json& hop) {
                                            hop["inputs"][1]["arg"]["as_graph"]["graph"]["nodes"][0]["inputs"][0]
                                               ["arg"]["as_tensor"]["name"] = "x";
                                          }),
               "refers to 'x'");
}

}  // namespace
}  // namespace kiln
