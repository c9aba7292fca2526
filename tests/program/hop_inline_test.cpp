// A .pt2 whose no_grad / autocast(enabled=False) region is a higher-order op compiles into one
// segment and gives the fixture's stored PyTorch output (issue 14).
#include <gtest/gtest.h>

#include <cstdio>
#include <unistd.h>

#include "../frontend/hop_archive.h"
#include "program/load.h"
#include "program/npy.h"
#include "program/value.h"

namespace kiln::program {
namespace {

const std::string kData = KILN_TEST_DATA;

void check(const std::string& op, const testutil::hop_json& leading) {
  SCOPED_TRACE(op);
  const std::string path = ::testing::TempDir() + "/kiln_hop_" + op + "_" + std::to_string(::getpid()) + ".pt2";
  testutil::write_file(path, testutil::mlp_dyn_with_hop(op, leading));
  CompileOptions o;
  o.settings.min_block_size = 1;
  CompiledProgram prog = open_model(path, o);
  std::remove(path.c_str());
  EXPECT_TRUE(prog.fallback_ops().empty());
  const HostTensor x = read_npy(kData + "/mlp_dyn/input_0.npy");
  const HostTensor want = read_npy(kData + "/mlp_dyn/output_0.npy");
  std::vector<HostTensor> outs = prog.run({x});
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_EQ(outs[0].dims, want.dims);
  EXPECT_LT(relative_error(outs[0], want), 1e-4);
}

TEST(HopInline, NoGradRegionRunsLikeTheOriginal) {
  check("wrap_with_set_grad_enabled", testutil::hop_json::array({{{"as_bool", false}}}));
}

TEST(HopInline, DisabledAutocastRegionRunsLikeTheOriginal) {
  check("wrap_with_autocast", testutil::hop_json::array({{{"as_string", "cpu"}}, {{"as_none", true}},
                                                         {{"as_bool", false}}, {{"as_none", true}}}));
}

}  // namespace
}  // namespace kiln::program
