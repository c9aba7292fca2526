// Where fallback ops run in a compiled program: on the CPU, in host memory; in a program run on
// the GPU, on PyTorch's CUDA kernels with their inputs already in device memory (the segment before
// them leaves its output there) when this libtorch has CUDA, else on its CPU kernels with the
// inputs brought over. The result matches PyTorch's either way.
#include <gtest/gtest.h>

#include "engine/backend.h"
#include "program/fallback.h"
#include "program/load.h"
#include "program/npy.h"
#include "torch_bridge/torch_bridge.h"

namespace kiln::program {
namespace {

const std::string kData = KILN_TEST_DATA;

// The libtorch executor, noting the device of every tensor a fallback op gets and returns.
class DeviceSpy final : public FallbackExecutor {
 public:
  explicit DeviceSpy(std::shared_ptr<FallbackExecutor> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return "spy on " + inner_->name(); }
  bool has_op(const std::string& target) const override { return inner_->has_op(target); }
  bool runs_on(engine::DeviceKind d) const override { return inner_->runs_on(d); }
  RtValue run(const ir::Node& node, const std::vector<RtValue>& inputs, engine::DeviceKind device) override {
    for (const RtValue& v : inputs)
      if (v.is_tensor()) seen_inputs.push_back(v.tensor().device);
    requested.push_back(device);
    RtValue r = inner_->run(node, inputs, device);
    if (r.is_tensor()) seen_outputs.push_back(r.tensor().device);
    return r;
  }
  std::vector<engine::DeviceKind> seen_inputs, seen_outputs, requested;

 private:
  std::shared_ptr<FallbackExecutor> inner_;
};

void check_fallback_between_segments(engine::DeviceKind device) {
  auto spy = std::make_shared<DeviceSpy>(torch_bridge::make_executor());
  set_fallback_executor(spy);
  CompileOptions o;
  o.settings.device = device;
  o.settings.min_block_size = 1;
  o.settings.torch_executed_ops = {"aten.gelu.default"};  // linear -> [gelu by PyTorch] -> linear ...
  CompiledProgram prog = open_model(kData + "/mlp_dyn/core_aten.pt2", o);
  ASSERT_EQ(prog.fallback_ops(), std::vector<std::string>{"aten.gelu.default"});
  ASSERT_GE(prog.segments().size(), 2u);
  const HostTensor x = read_npy(kData + "/mlp_dyn/input_0.npy");
  const HostTensor want = read_npy(kData + "/mlp_dyn/output_0.npy");
  RunOptions run;
  run.device = device;
  for (int i = 0; i < 2; ++i) {  // the second run reuses the contexts and cached uploads
    std::vector<HostTensor> outs = prog.run({x}, run);
    ASSERT_EQ(outs.size(), 1u);
    EXPECT_EQ(outs[0].device, engine::DeviceKind::kCPU);  // what a run returns is in host memory
    EXPECT_LT(relative_error(outs[0], want), 1e-4);
  }
  const engine::DeviceKind expected =
      device == engine::DeviceKind::kCUDA && spy->runs_on(engine::DeviceKind::kCUDA) ? device : engine::DeviceKind::kCPU;
  ASSERT_FALSE(spy->seen_inputs.empty());
  for (engine::DeviceKind d : spy->requested) EXPECT_EQ(d, expected);
  for (engine::DeviceKind d : spy->seen_inputs) EXPECT_EQ(d, expected) << "a fallback input came from the other side";
  for (engine::DeviceKind d : spy->seen_outputs) EXPECT_EQ(d, expected);
  torch_bridge::install();
  set_fallback_executor(torch_bridge::make_executor());
}

TEST(FallbackDevice, CpuProgramsRunFallbackOnHostTensors) {
  check_fallback_between_segments(engine::DeviceKind::kCPU);
}

TEST(FallbackDevice, GpuProgramsKeepValuesOnTheGpu) {
  if (!engine::cuda_available()) GTEST_SKIP() << "no CUDA device";
  check_fallback_between_segments(engine::DeviceKind::kCUDA);
}

}  // namespace
}  // namespace kiln::program
