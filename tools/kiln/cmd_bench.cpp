// `kiln bench MODEL --input ... [--iters N]`: median and p90 latency of whole-program runs.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>

#include "engine/backend.h"
#include "open_model.h"
#include "program/load.h"

namespace {

struct BenchArgs {
  std::string model, device;
  std::vector<std::string> inputs;
  int iters = 50, warmup = 5;
  bool with_copies = false;
};

void run_bench(const BenchArgs& a) {
  using namespace kiln;
  cli::OpenedModel m = cli::open_model_for_run(a.model, a.inputs, a.device, &std::cerr);
  program::CompiledProgram& prog = m.program;
  program::RunOptions ro = m.run_options;
  // Eager PyTorch and torch.compile are timed with their tensors on the GPU: time the engine the
  // same way unless the copies are asked for.
  ro.device_resident_io = !a.with_copies;
  const std::vector<program::HostTensor>& inputs = m.inputs;
  for (int i = 0; i < a.warmup; ++i) prog.run(inputs, ro);
  std::vector<double> ms;
  for (int i = 0; i < a.iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    prog.run(inputs, ro);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  auto pct = [&](double q) { return ms[std::min(ms.size() - 1, static_cast<size_t>(q * (ms.size() - 1) + 0.5))]; };
  std::cout << std::fixed << std::setprecision(3) << a.model << ": median " << pct(0.5) << " ms, p90 " << pct(0.9)
            << " ms, min " << ms.front() << " ms (" << a.iters << " iters, device " << engine::to_string(ro.device)
            << (ro.device != engine::DeviceKind::kCPU ? (a.with_copies ? ", with host copies" : ", device-resident inputs/outputs") : "")
            << ")\n";
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure run latency (median, p90)");
  cmd->add_option("model", args->model, ".pt2 or .kiln")->required();
  cmd->add_option("--input", args->inputs, "input .npy, one per program input")->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--iters", args->iters, "timed runs (default 50)")->check(CLI::Range(1, 1000000));
  cmd->add_option("--warmup", args->warmup, "untimed runs first (default 5)")->check(CLI::Range(0, 1000000));
  cmd->add_option("--device", args->device, "cpu|cuda (default: the device the program was compiled for)")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_flag("--with-copies", args->with_copies,
                 "on a GPU, copy inputs to the device and outputs back in every timed run");
  cmd->callback([args] {
    run_bench(*args);
  });
}
