// The user's source line of a node, from the stack trace torch.export records.
#include <gtest/gtest.h>

#include "ir/source_location.h"

namespace kiln::ir {
namespace {

Node node_with_trace(const std::string& trace) {
  Node n;
  n.target = "aten.relu.default";
  if (!trace.empty()) n.metadata["stack_trace"] = trace;
  return n;
}

TEST(SourceLocation, InnermostFrameOutsidePyTorch) {
  const Node n = node_with_trace(
      "  File \"/usr/lib/python3/dist-packages/torch/nn/modules/module.py\", line 1500, in _call_impl\n"
      "  File \"/home/me/project/blocks.py\", line 30, in forward\n"
      "  File \"/home/me/project/layers.py\", line 12, in forward\n"
      "  File \"/opt/venv/lib/python3.12/site-packages/torch/nn/functional.py\", line 1704, in relu\n");
  EXPECT_EQ(user_source_line(n), "layers.py:12");
  EXPECT_EQ(target_and_source(n), "aten.relu.default at layers.py:12");
}

TEST(SourceLocation, PyTorchFrameWhenThereIsNoOther) {
  const Node n = node_with_trace("  File \"/x/site-packages/torch/nn/functional.py\", line 1704, in relu\n");
  EXPECT_EQ(user_source_line(n), "functional.py:1704");
}

TEST(SourceLocation, NoTraceOrNoFrameGivesTheTargetAlone) {
  EXPECT_EQ(target_and_source(node_with_trace("")), "aten.relu.default");
  EXPECT_EQ(target_and_source(node_with_trace("no frames here")), "aten.relu.default");
  // Truncated or malformed frames are skipped, not misread.
  EXPECT_EQ(user_source_line(node_with_trace("File \"model.py\", line ")), "");
  EXPECT_EQ(user_source_line(node_with_trace("File \"model.py")), "");
}

}  // namespace
}  // namespace kiln::ir
