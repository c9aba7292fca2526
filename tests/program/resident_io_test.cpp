// RunOptions::device_resident_io (what `kiln bench` times on a GPU): inputs stay on the device
// between runs, outputs nobody reads stay there too, and ordinary runs afterwards are unaffected.
#include <gtest/gtest.h>

#include "engine/backend.h"
#include "program/load.h"
#include "program/npy.h"
#include "program/value.h"

namespace kiln::program {
namespace {

const std::string kData = KILN_TEST_DATA;

void check_resident_runs(engine::DeviceKind device) {
  CompileOptions o;
  o.settings.device = device;
  o.settings.min_block_size = 1;
  CompiledProgram prog = open_model(kData + "/mlp_dyn/core_aten.pt2", o);
  const HostTensor x = read_npy(kData + "/mlp_dyn/input_0.npy");
  const HostTensor want = read_npy(kData + "/mlp_dyn/output_0.npy");
  RunOptions plain;
  plain.device = device;
  RunOptions resident = plain;
  resident.device_resident_io = true;
  for (int i = 0; i < 3; ++i) {
    std::vector<HostTensor> outs = prog.run({x}, resident);
    ASSERT_EQ(outs.size(), 1u);
    EXPECT_EQ(outs[0].dims, want.dims);
  }
  std::vector<HostTensor> outs = prog.run({x}, plain);
  EXPECT_LT(relative_error(outs[0], want), 1e-4);
}

TEST(ResidentIO, CpuRunsAreUnchanged) { check_resident_runs(engine::DeviceKind::kCPU); }

TEST(ResidentIO, GpuBenchModeThenPlainRun) {
  if (!engine::cuda_available()) GTEST_SKIP() << "no CUDA device";
  check_resident_runs(engine::DeviceKind::kCUDA);
}

}  // namespace
}  // namespace kiln::program
