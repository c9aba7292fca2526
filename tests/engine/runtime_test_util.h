// Shared helpers for the engine machinery tests (network_*, builder_*, plan_*, runtime_*).
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/builder.h"
#include "engine/runtime.h"

namespace kiln::engine::testing {

struct HostTensor {
  std::vector<int64_t> dims;
  std::vector<float> data;
};

// A build with no optimizing pass: the reference a pass's result is compared against.
inline BuilderConfig no_opt() {
  BuilderConfig c;
  c.fuse_pointwise = false;
  c.fuse_epilogues = false;
  c.attention_views = false;
  c.channels_last = false;
  return c;
}

inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

inline Weights weights(std::vector<int64_t> dims, const std::vector<float>& v) {
  return Weights::copy_of(DataType::kFloat32, std::move(dims), v.data());
}

inline TensorView view_of(HostTensor& t) {
  TensorView v;
  v.data = t.data.data();
  v.dims = t.dims;
  v.dtype = DataType::kFloat32;
  return v;
}

// Runs `plan` on f32 inputs, returns every output as f32 (outputs must be f32). On `backend`
// when given (a CUDA plan: host inputs in, outputs copied back), else the plan's default.
inline std::vector<HostTensor> run_plan(const Plan& plan, std::map<std::string, HostTensor> inputs,
                                        std::shared_ptr<Backend> backend = nullptr) {
  ExecutionContext ctx(plan, std::move(backend));
  for (auto& [name, t] : inputs) ctx.set_input(name, view_of(t));
  ctx.execute();
  std::vector<HostTensor> outs;
  for (size_t i = 0; i < plan.output_names().size(); ++i) {
    const TensorView& o = ctx.output(i);
    EXPECT_EQ(o.dtype, DataType::kFloat32);
    HostTensor h{o.dims, std::vector<float>(static_cast<size_t>(o.numel()))};
    if (o.numel()) ctx.backend().copy(h.data.data(), DeviceKind::kCPU, o.data, o.device, o.nbytes());
    outs.push_back(std::move(h));
  }
  return outs;
}

inline void expect_close(const HostTensor& a, const HostTensor& b, float tol = 1e-5f) {
  ASSERT_EQ(a.dims, b.dims);
  ASSERT_EQ(a.data.size(), b.data.size());
  for (size_t i = 0; i < a.data.size(); ++i)
    ASSERT_NEAR(a.data[i], b.data[i], tol * (1 + std::abs(b.data[i]))) << "at element " << i;
}

inline size_t count_kind(const Network& net, const std::string& kind) {
  size_t n = 0;
  for (Layer* l : net.layers()) n += std::string(l->kind()) == kind;
  return n;
}

}  // namespace kiln::engine::testing
