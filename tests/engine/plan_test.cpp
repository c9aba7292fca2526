// Plan serialization: round trip gives identical results; corrupted plans are refused with a
// PlanError naming the problem.
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <limits>
#include <set>

#include "engine/checksum.h"
#include "engine/plan_impl.h"
#include "runtime_test_util.h"

namespace kiln::engine {
namespace {

using namespace kiln::engine::testing;

Plan small_plan() {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {DimExpr::symbol("b"), 3, 8, 8});
  Tensor* w = net.add_constant("w", weights({4, 3, 3, 3}, random_floats(108, 1)))->output();
  Tensor* bias = net.add_constant("bias", weights({4}, random_floats(4, 2)))->output();
  ConvolutionParams cp;
  cp.padding = {1};
  Tensor* y = net.add_convolution("conv", x, w, bias, cp)->output();
  y = net.add_activation("relu", y, ActivationOp::kRelu)->output();
  PoolingParams pp;
  pp.kernel = {2};
  pp.ceil_mode = true;
  y = net.add_pooling("pool", y, pp)->output();
  ShuffleParams sp;
  sp.reshape = Shape{DimExpr::symbol("b"), -1};
  y = net.add_shuffle("flat", y, sp)->output();
  Tensor* fc = net.add_constant("fc", weights({64, 5}, random_floats(320, 3)))->output();
  y = net.add_matmul("mm", y, fc)->output();
  Tensor* e = net.add_unary("exp", y, UnaryOp::kExp)->output();
  e = net.add_elementwise("mul", e, y, BinaryOp::kMul)->output();
  net.mark_output(net.add_softmax("sm", e, 1)->output(), "probs");
  net.mark_output(y, "logits");
  BuilderConfig cfg;
  cfg.profile["b"] = {1, 2, 8};
  return build(std::move(net), cfg);
}

TEST(PlanFormat, RoundTripGivesIdenticalResults) {
  Plan plan = small_plan();
  std::vector<uint8_t> bytes = plan.serialize();
  ASSERT_EQ(std::string(bytes.begin(), bytes.begin() + 8), "KILNPLAN");
  Plan loaded = Plan::deserialize(bytes.data(), bytes.size());
  EXPECT_EQ(loaded.network().layers().size(), plan.network().layers().size());
  EXPECT_EQ(loaded.output_names(), plan.output_names());
  EXPECT_EQ(loaded.memory().peak_activation_bytes, plan.memory().peak_activation_bytes);
  EXPECT_EQ(loaded.network().str(), plan.network().str());
  // ids are renumbered on load; from then on the bytes are stable
  std::vector<uint8_t> again = loaded.serialize();
  EXPECT_EQ(Plan::deserialize(again.data(), again.size()).serialize(), again);
  HostTensor x{{3, 3, 8, 8}, random_floats(3 * 192, 4)};
  auto a = run_plan(plan, {{"x", x}});
  auto b = run_plan(loaded, {{"x", x}});
  ASSERT_EQ(a.size(), 2u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].dims, b[i].dims);
    EXPECT_EQ(a[i].data, b[i].data);  // bit-identical
  }
}

std::string load_error(const std::vector<uint8_t>& bytes) {
  try {
    Plan::deserialize(bytes.data(), bytes.size());
  } catch (const PlanError& e) {
    return e.what();
  }
  return "";
}

// masked_fill(-inf) and friends put non-finite constants into fused programs; JSON has no such
// numbers, so the plan must carry them another way and load them back exactly.
// The workspace limit a plan was built with is what its algorithms are chosen under wherever it runs.
TEST(PlanFormat, WorkspaceLimitSurvivesRoundTrip) {
  EXPECT_EQ(small_plan().workspace_limit(), kDefaultWorkspaceLimit);
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {2, 3});
  net.mark_output(net.add_unary("neg", x, UnaryOp::kNeg)->output(), "y");
  BuilderConfig cfg;
  cfg.workspace_limit = 12345;
  Plan plan = build(std::move(net), cfg);
  EXPECT_EQ(plan.workspace_limit(), 12345u);
  const std::vector<uint8_t> bytes = plan.serialize();
  EXPECT_EQ(Plan::deserialize(bytes.data(), bytes.size()).workspace_limit(), 12345u);
}

TEST(PlanFormat, NonFiniteConstantsSurviveRoundTrip) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {4});
  const float inf = std::numeric_limits<float>::infinity();
  Tensor* lo = net.add_constant("lo", weights({1}, {-inf}))->output();
  Tensor* hi = net.add_constant("hi", weights({1}, {inf}))->output();
  Tensor* y = net.add_elementwise("max", x, lo, BinaryOp::kMax)->output();
  y = net.add_elementwise("min", y, hi, BinaryOp::kMin)->output();
  net.mark_output(net.add_activation("relu", y, ActivationOp::kRelu)->output(), "y");
  Plan plan = build(std::move(net), BuilderConfig{});
  std::vector<uint8_t> bytes = plan.serialize();
  Plan loaded = Plan::deserialize(bytes.data(), bytes.size());
  HostTensor in{{4}, {-1.5f, 0.f, 2.f, 7.f}};
  auto a = run_plan(plan, {{"x", in}});
  auto b = run_plan(loaded, {{"x", in}});
  EXPECT_EQ(a[0].data, b[0].data);
  EXPECT_EQ(b[0].data, (std::vector<float>{0.f, 0.f, 2.f, 7.f}));
}

// The version 2 checksum changes with every single-bit flip of a buffer (in whole words and in the
// byte tail), with truncation and with trailing zeros, and differs between flips; a plan written
// now is version 2, and one rewritten as version 1 with FNV-1a loads too.
TEST(PlanFormat, Checksum64SeesEveryBitAndVersionOneStillLoads) {
  std::vector<uint8_t> buf(77);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = uint8_t(i * 37 + 11);
  const uint64_t base = checksum64(buf.data(), buf.size());
  std::set<uint64_t> seen{base};
  for (size_t bit = 0; bit < buf.size() * 8; ++bit) {
    buf[bit / 8] ^= uint8_t(1u << (bit % 8));
    EXPECT_TRUE(seen.insert(checksum64(buf.data(), buf.size())).second) << "bit " << bit << " collides";
    buf[bit / 8] ^= uint8_t(1u << (bit % 8));
  }
  EXPECT_NE(checksum64(buf.data(), buf.size() - 1), base);
  std::vector<uint8_t> longer = buf;
  longer.push_back(0);
  EXPECT_NE(checksum64(longer.data(), longer.size()), base);
  EXPECT_NE(checksum64(nullptr, 0), checksum64(longer.data(), 1));

  std::vector<uint8_t> plan = small_plan().serialize();
  uint32_t version;
  std::memcpy(&version, plan.data() + 8, 4);
  EXPECT_EQ(version, 2u);
  uint64_t sum;
  std::memcpy(&sum, plan.data() + plan.size() - 8, 8);
  EXPECT_EQ(sum, checksum64(plan.data(), plan.size() - 8));
  version = 1;
  std::memcpy(plan.data() + 8, &version, 4);
  EXPECT_NE(load_error(plan).find("checksum"), std::string::npos) << "a version 1 plan with a version 2 checksum";
  sum = fnv1a64(plan.data(), plan.size() - 8, 0xcbf29ce484222325ull);
  std::memcpy(plan.data() + plan.size() - 8, &sum, 8);
  EXPECT_EQ(load_error(plan), "");
}

TEST(PlanFormat, CorruptedPlansAreRefused) {
  std::vector<uint8_t> good = small_plan().serialize();
  // every byte flipped in the middle region, a sample of positions
  for (size_t pos = 8; pos < good.size(); pos += good.size() / 97 + 1) {
    std::vector<uint8_t> bad = good;
    bad[pos] ^= 0x5a;
    EXPECT_NE(load_error(bad), "") << "flipped byte " << pos << " was accepted";
  }
  std::vector<uint8_t> mid = good;
  mid[mid.size() / 2] ^= 0xff;
  EXPECT_NE(load_error(mid).find("checksum"), std::string::npos) << load_error(mid);

  std::vector<uint8_t> truncated(good.begin(), good.begin() + good.size() - 100);
  EXPECT_NE(load_error(truncated).find("truncated"), std::string::npos) << load_error(truncated);
  std::vector<uint8_t> tiny(good.begin(), good.begin() + 20);
  EXPECT_NE(load_error(tiny).find("truncated"), std::string::npos);
  EXPECT_NE(load_error({}), "");

  std::vector<uint8_t> magic = good;
  magic[0] = 'X';
  EXPECT_NE(load_error(magic).find("magic"), std::string::npos) << load_error(magic);
  std::vector<uint8_t> version = good;
  version[8] = 99;
  EXPECT_NE(load_error(version).find("version"), std::string::npos) << load_error(version);
  std::vector<uint8_t> trailing = good;
  trailing.push_back(0);
  EXPECT_NE(load_error(trailing), "");
}

// The plan with its JSON description edited by `edit` and repacked (header, JSON, blob at the next
// 64-byte boundary, fresh checksum; as version 1, FNV-1a): what a hand-made plan with a valid
// checksum looks like.
std::vector<uint8_t> with_edited_json(const std::vector<uint8_t>& good, const std::function<void(std::string&)>& edit) {
  uint64_t json_bytes, blob_offset, blob_bytes;
  std::memcpy(&json_bytes, good.data() + 16, 8);
  std::memcpy(&blob_offset, good.data() + 24, 8);
  std::memcpy(&blob_bytes, good.data() + 32, 8);
  std::string text(good.begin() + 48, good.begin() + 48 + json_bytes);
  edit(text);
  uint64_t new_offset = (48 + text.size() + 63) / 64 * 64, total = new_offset + blob_bytes + 8, n = text.size();
  std::vector<uint8_t> bad(total, 0);
  std::memcpy(bad.data(), good.data(), 48);
  std::memcpy(bad.data() + 16, &n, 8);
  std::memcpy(bad.data() + 24, &new_offset, 8);
  std::memcpy(bad.data() + 40, &total, 8);
  const uint32_t version = 1;  // whose checksum, FNV-1a, kiln still reads
  std::memcpy(bad.data() + 8, &version, 4);
  std::memcpy(bad.data() + 48, text.data(), text.size());
  std::memcpy(bad.data() + new_offset, good.data() + blob_offset, blob_bytes);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i + 8 < bad.size(); ++i) {
    h ^= bad[i];
    h *= 0x100000001b3ull;
  }
  std::memcpy(bad.data() + bad.size() - 8, &h, 8);
  return bad;
}

void replace_once(std::string& text, const std::string& from, const std::string& to) {
  const size_t pos = text.find(from);
  ASSERT_NE(pos, std::string::npos) << from << " not in " << text.substr(0, 300);
  text.replace(pos, from.size(), to);
}

TEST(PlanFormat, ValidChecksumButBadContentIsRefused) {
  // A description that refers to a tensor id that doesn't exist: the checksum is right, so the
  // loader's structural checks must catch it.
  const std::vector<uint8_t> bad = with_edited_json(small_plan().serialize(), [](std::string& text) {
    // The first layer reading tensor 0 (the network input), alone or with others.
    const bool alone = text.find("\"inputs\":[0,") == std::string::npos;
    replace_once(text, alone ? "\"inputs\":[0]" : "\"inputs\":[0,", alone ? "\"inputs\":[12345]" : "\"inputs\":[12345,");
  });
  std::string err = load_error(bad);
  EXPECT_NE(err.find("unknown tensor id"), std::string::npos) << err;
}

Plan small_cuda_plan(int cuda_arch) {
  Network net;
  Tensor* x = net.add_input("x", DataType::kFloat32, {2, 8});
  net.mark_output(net.add_activation("relu", x, ActivationOp::kRelu)->output(), "y");
  BuilderConfig cfg;
  cfg.device = DeviceKind::kCUDA;
  cfg.cuda_arch = cuda_arch;
  return build(std::move(net), cfg);
}

TEST(PlanFormat, CudaPlansRecordTheirGpuArchitecture) {
  // Built for a named architecture (as `kiln compile --cuda-arch 80` on a machine without that GPU).
  const Plan plan = small_cuda_plan(80);
  EXPECT_EQ(plan.cuda_arch(), 80);
  const std::vector<uint8_t> bytes = plan.serialize();
  EXPECT_EQ(Plan::deserialize(bytes.data(), bytes.size()).cuda_arch(), 80);
  if (current_cuda_arch() == 0) {
    EXPECT_EQ(plan.gpu_mismatch(), "");  // nothing to compare with: running will say there is no GPU
  } else if (current_cuda_arch() != 80) {
    const std::string why = plan.gpu_mismatch();
    EXPECT_NE(why.find("built for a GPU of architecture sm_80"), std::string::npos) << why;
    EXPECT_NE(why.find("--cuda-arch " + std::to_string(current_cuda_arch())), std::string::npos) << why;
    EXPECT_THROW(ExecutionContext ctx(plan), PlanError);
    EXPECT_EQ(small_cuda_plan(current_cuda_arch()).gpu_mismatch(), "");
    ::setenv("KILN_ALLOW_OTHER_GPU_ARCH", "1", 1);
    EXPECT_EQ(plan.gpu_mismatch(), "");
    ::unsetenv("KILN_ALLOW_OTHER_GPU_ARCH");
  }
  // A CPU plan has no architecture; an architecture out of range is refused.
  EXPECT_EQ(small_plan().cuda_arch(), 0);
  const std::vector<uint8_t> cpu_with_arch = with_edited_json(small_plan().serialize(), [](std::string& text) {
    replace_once(text, "\"cuda_arch\":0", "\"cuda_arch\":90");
  });
  EXPECT_NE(load_error(cpu_with_arch).find("a CPU plan names a GPU architecture"), std::string::npos);
  const std::vector<uint8_t> absurd = with_edited_json(bytes, [](std::string& text) {
    replace_once(text, "\"cuda_arch\":80", "\"cuda_arch\":-7");
  });
  EXPECT_NE(load_error(absurd).find("bad GPU architecture"), std::string::npos) << load_error(absurd);
  if (!plan.impl().device_code.empty()) {  // (built with CUDA: NVRTC compiled the relu kernel for sm_80)
    const std::vector<uint8_t> other_kernel = with_edited_json(bytes, [](std::string& text) {
      replace_once(text, "\"key\":\"sm_80:", "\"key\":\"sm_75:");
    });
    EXPECT_NE(load_error(other_kernel).find("is not for the plan's architecture sm_80"), std::string::npos)
        << load_error(other_kernel);
  }
}

}  // namespace
}  // namespace kiln::engine
