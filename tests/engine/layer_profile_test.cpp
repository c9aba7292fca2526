// The KILN_PROFILE report: the first execute (one-time setup) apart, then per-layer totals averaged
// over the executes after it, slowest first, then per kind.
#include <gtest/gtest.h>

#include <sstream>

#include "engine/layer_profile.h"

namespace kiln::engine::detail {
namespace {

TEST(LayerProfile, ReportsSlowestLayersFirstAndTotalsPerKind) {
  LayerProfile p;
  p.count_execute();  // the first execute: an algorithm search makes "mm" slow once
  p.add("mm", "MatMul", "aten.mm.default at model.py:7", 100.0);
  p.add("relu", "Activation", "", 1.0);
  p.add("mm2", "MatMul", "", 5.0);
  for (int run = 0; run < 2; ++run) {
    p.count_execute();
    p.add("mm", "MatMul", "aten.mm.default at model.py:7", 3.0);
    p.add("relu", "Activation", "", 1.0);
    p.add("mm2", "MatMul", "", 5.0);
  }
  std::ostringstream os;
  p.print(os, "test");
  const std::string s = os.str();
  EXPECT_NE(s.find("first execute 106.000 ms (one-time setup included; slowest: mm 100.000 mm2 5.000 relu 1.000)"),
            std::string::npos) << s;
  EXPECT_NE(s.find("2 executes after it, 9.000 ms per execute in 3 layers"), std::string::npos) << s;
  const size_t steady = s.find("executes after it");
  const size_t mm2 = s.find("mm2", steady), relu = s.find("relu", steady);
  const size_t mm = s.find(" mm  (aten.mm.default at model.py:7)\n", steady);  // named with its origin
  ASSERT_NE(mm2, std::string::npos);
  ASSERT_NE(mm, std::string::npos);
  EXPECT_LT(mm2, mm);   // 5 ms before 3 ms
  EXPECT_LT(mm, relu);  // 3 ms before 1 ms
  EXPECT_NE(s.find("8.000   88.9%  MatMul (2 per execute)"), std::string::npos) << s;
}

}  // namespace
}  // namespace kiln::engine::detail
