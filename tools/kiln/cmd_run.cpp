// `kiln run MODEL.pt2|MODEL.kiln --input A.npy ... --output-dir DIR`: writes DIR/output_<i>.npy.
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <fstream>
#include <filesystem>
#include <iostream>
#include <memory>

#include "engine/backend.h"
#include "program/load.h"
#ifdef KILN_HAS_TORCH
#include "torch_bridge/torch_bridge.h"
#endif
#include "program/npy.h"

namespace {

struct RunArgs {
  std::string model, output_dir, device;
  std::vector<std::string> inputs;
};

void run_run(const RunArgs& a) {
  using namespace kiln;
#ifdef KILN_HAS_TORCH
  torch_bridge::install();  // PyTorch runs the ops no converter takes
#endif
  program::CompileOptions o;
  o.log = &std::cerr;
  program::RunOptions ro;
  if (a.device == "cuda") {
    if (!engine::cuda_available()) throw program::InputError("--device cuda: no CUDA device is available here");
    o.settings.device = engine::DeviceKind::kCUDA;
    ro.device = engine::DeviceKind::kCUDA;
  }
  std::vector<program::HostTensor> inputs = program::read_inputs(a.inputs);
  program::CompiledProgram prog = program::open_model(a.model, o);
  if (a.device.empty()) ro.device = prog.device();  // a .kiln runs where it was built for
  std::vector<program::HostTensor> outs;
  {
    program::StageTimer t(o.log, "run");
    outs = prog.run(inputs, ro);
  }
  std::error_code ec;
  std::filesystem::create_directories(a.output_dir, ec);
  if (ec) throw program::InputError(a.output_dir + ": cannot create directory (" + ec.message() + ")");
  for (size_t i = 0; i < outs.size(); ++i) {
    const std::string path = (std::filesystem::path(a.output_dir) / ("output_" + std::to_string(i) + ".npy")).string();
    program::write_npy(path, outs[i]);
    std::cout << path << ": " << outs[i].str() << "\n";
  }
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand("run", "Run a program (.pt2 compiled on the fly, or .kiln) on .npy inputs");
  cmd->add_option("model", args->model, ".pt2 or .kiln")->required();
  cmd->add_option("--input", args->inputs, "input .npy, one per program input, in order")->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--output-dir", args->output_dir, "where output_<i>.npy are written")->required();
  cmd->add_option("--device", args->device, "cpu|cuda (default: the device the program was compiled for)")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->callback([args] {
    run_run(*args);
  });
}
