// One loaded program run from many threads at once (issue 17): each run gets a workspace of its own
// (execution contexts, their arenas), so concurrent runs neither block on one another for the whole
// run nor share an arena; every result must equal the serial run's.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <random>
#include <thread>

#include "program/load.h"
#include "program/npy.h"
#include "program/value.h"

namespace kiln::program {
namespace {

const std::string kData = KILN_TEST_DATA;

HostTensor random_input(std::vector<int64_t> dims, uint32_t seed) {
  HostTensor t = HostTensor::empty(ir::ScalarType::Float, std::move(dims));
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < t.numel(); ++i) t.as<float>()[i] = normal(gen);
  return t;
}

// `prog` run from `threads` threads, `calls` runs each over `inputs` (in a different order per
// thread), every result compared with `want[i]`, the serial result for inputs[i].
void run_concurrently(const CompiledProgram& prog, const std::vector<HostTensor>& inputs,
                      const std::vector<HostTensor>& want, int threads, int calls) {
  std::atomic<int> started{0};
  std::vector<std::future<std::string>> results;
  for (int t = 0; t < threads; ++t)
    results.push_back(std::async(std::launch::async, [&, t]() -> std::string {
      ++started;
      while (started.load() < threads) std::this_thread::yield();  // all threads run at once
      for (int c = 0; c < calls; ++c) {
        const size_t i = static_cast<size_t>(t * 7 + c) % inputs.size();
        std::vector<HostTensor> outs = prog.run({inputs[i]});
        if (outs.size() != 1) return "thread " + std::to_string(t) + ": " + std::to_string(outs.size()) + " outputs";
        if (outs[0].dims != want[i].dims)
          return "thread " + std::to_string(t) + " call " + std::to_string(c) + ": dims " + outs[0].str() +
                 ", serial " + want[i].str();
        // Same plan, same input: only the split of work over the CPU worker threads (which a busy
        // pool runs inline) may differ from the serial run, so rounding, no more.
        const double err = relative_error(outs[0], want[i]);
        if (!(err < 1e-5))
          return "thread " + std::to_string(t) + " call " + std::to_string(c) + " (input " + inputs[i].str() +
                 "): relative error " + std::to_string(err) + " against the serial run";
      }
      return "";
    }));
  for (auto& r : results) {
    // A deadlock must fail the test, not hang the suite.
    ASSERT_EQ(r.wait_for(std::chrono::seconds(120)), std::future_status::ready) << "a run did not finish (deadlock?)";
    const std::string error = r.get();
    EXPECT_EQ(error, "");
  }
}

TEST(ConcurrentRun, DynamicShapesFromEightThreadsMatchSerialRuns) {
  CompileOptions o;
  o.settings.min_block_size = 1;
  const CompiledProgram compiled = open_model(kData + "/mlp_dyn/core_aten.pt2", o);
  // A program as a user runs it: saved and loaded back.
  const std::vector<uint8_t> bytes = compiled.serialize();
  const CompiledProgram prog = CompiledProgram::deserialize(bytes.data(), bytes.size());

  std::vector<HostTensor> inputs, want;
  for (int64_t batch : {1, 2, 3, 5, 8, 13, 32, 64, 100, 256})
    inputs.push_back(random_input({batch, 64}, static_cast<uint32_t>(batch)));
  for (const HostTensor& x : inputs) want.push_back(prog.run({x}).at(0));
  // The stored reference output still holds (the serial runs are right to begin with).
  EXPECT_LT(relative_error(prog.run({read_npy(kData + "/mlp_dyn/input_0.npy")}).at(0),
                           read_npy(kData + "/mlp_dyn/output_0.npy")),
            1e-4);

  run_concurrently(prog, inputs, want, 8, 200);
}

TEST(ConcurrentRun, StaticConvNetFromEightThreadsMatchesSerialRuns) {
  CompileOptions o;
  o.settings.min_block_size = 1;
  const CompiledProgram prog = open_model(kData + "/convnet_small/core_aten.pt2", o);
  const HostTensor x0 = read_npy(kData + "/convnet_small/input_0.npy");
  std::vector<HostTensor> inputs, want;
  for (uint32_t seed = 0; seed < 4; ++seed) inputs.push_back(random_input(x0.dims, seed));
  for (const HostTensor& x : inputs) want.push_back(prog.run({x}).at(0));
  run_concurrently(prog, inputs, want, 8, 25);
}

}  // namespace
}  // namespace kiln::program
