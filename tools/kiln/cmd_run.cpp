// `kiln run MODEL.pt2|MODEL.kiln --input A.npy ... --output-dir DIR`: writes DIR/output_<i>.npy.
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <fstream>
#include <filesystem>
#include <iostream>
#include <memory>

#include "engine/backend.h"
#include "open_model.h"
#include "program/load.h"
#include "program/npy.h"

namespace {

struct RunArgs {
  std::string model, output_dir, device;
  std::vector<std::string> inputs;
};

void run_run(const RunArgs& a) {
  using namespace kiln;
  cli::OpenedModel m = cli::open_model_for_run(a.model, a.inputs, a.device, &std::cerr);
  program::CompiledProgram& prog = m.program;
  const program::RunOptions& ro = m.run_options;
  const std::vector<program::HostTensor>& inputs = m.inputs;
  std::vector<program::HostTensor> outs;
  {
    program::StageTimer t(&std::cerr, "run");
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
