// `kiln compile MODEL.pt2 -o OUT.kiln [options]`: partition, convert, build, save; or --dryrun.
// `kiln refit MODEL.kiln NEW.pt2 -o OUT.kiln [options]`: the compiled program with the weights of
// another export of the same model (a fine-tuned checkpoint), its kernels and choices kept.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>

#include "engine/backend.h"
#include "frontend/pt2.h"
#include "program/file_io.h"
#include "program/load.h"
#ifdef KILN_HAS_TORCH
#include "torch_bridge/torch_bridge.h"
#endif
#include "program/program.h"

namespace {

struct CompileArgs {
  std::string model, output, precision = "fp32", device = "cpu";
  int64_t min_block_size = 5;
  int cuda_arch = 0;
  size_t workspace_size = 0;  // 0: the default (kiln::engine::kDefaultWorkspaceLimit)
  std::vector<std::string> torch_executed_ops, dynamic;
  bool require_full = false, dryrun = false;
};

kiln::program::CompileOptions options_from(const CompileArgs& a) {
  using namespace kiln;
#ifdef KILN_HAS_TORCH
  torch_bridge::install();  // PyTorch runs the ops no converter takes
#endif
  program::CompileOptions o;
  o.log = &std::cerr;
  o.settings.min_block_size = a.min_block_size;
  for (const auto& list : a.torch_executed_ops)
    for (const auto& op : program::parse_op_list(list)) o.settings.torch_executed_ops.insert(op);
  o.settings.require_full_compilation = a.require_full;
  o.settings.precision = a.precision == "fp16" ? engine::Precision::kFP16
                         : a.precision == "bf16" ? engine::Precision::kBF16 : engine::Precision::kFP32;
  o.settings.device = a.device == "cuda" ? engine::DeviceKind::kCUDA : engine::DeviceKind::kCPU;
  o.settings.cuda_arch = a.cuda_arch;
  if (a.workspace_size) o.settings.workspace_limit = a.workspace_size;  // 0: the default, as in Torch-TensorRT
  if (a.cuda_arch && o.settings.device != engine::DeviceKind::kCUDA)
    throw program::InputError("--cuda-arch needs --device cuda");
#ifndef KILN_HAS_CUDA
  if (o.settings.device == engine::DeviceKind::kCUDA)
    throw program::InputError("--device cuda: this kiln was built without CUDA");
#endif
  if (a.cuda_arch) {
    const std::vector<int> archs = engine::cuda_supported_archs();
    if (std::find(archs.begin(), archs.end(), a.cuda_arch) == archs.end()) {
      std::string list;
      for (int x : archs) list += (list.empty() ? "" : " ") + std::to_string(x);
      throw program::InputError("--cuda-arch " + std::to_string(a.cuda_arch) + ": this kiln's NVRTC compiles for " + list);
    }
  }
  // A build machine without a GPU can still compile for one it names (--cuda-arch).
  if (o.settings.device == engine::DeviceKind::kCUDA && !a.cuda_arch && !engine::cuda_available())
    throw program::InputError("--device cuda: no GPU is present here (name the target with --cuda-arch, e.g. 90 "
                              "for an H100, to compile for it anyway)");
  o.settings.dryrun = a.dryrun;
  for (const auto& d : a.dynamic) o.dynamic.push_back(program::DynamicSpec::parse(d));
  return o;
}

void run_compile(const CompileArgs& a) {
  using namespace kiln;
  program::CompileOptions o = options_from(a);
  if (!a.dryrun && a.output.empty()) throw program::InputError("-o OUT.kiln is required (or --dryrun)");
  program::require_regular_file(a.model);  // missing, or a FIFO / device that would block a reader
  ir::ExportedProgram ep;
  {
    program::StageTimer t(o.log, "load " + a.model);
    ep = frontend::load_pt2(a.model);
  }
  if (a.dryrun) {
    std::cout << program::dry_run(ep, o);
    return;
  }
  program::CompiledProgram prog = program::compile(ep, o);
  std::cout << prog.str() << prog.summary();
  {
    program::StageTimer t(o.log, "save " + a.output);
    prog.save(a.output);
  }
  std::cout << "wrote " << a.output << "\n";
}

// The options shared by compile and refit (refit must partition the new export as the program was).
void add_compile_options(CLI::App* cmd, const std::shared_ptr<CompileArgs>& args) {
  cmd->add_option("-o,--output", args->output, "output .kiln file");
  cmd->add_option("--min-block-size", args->min_block_size,
                  "fewest compute ops a segment must have to be accelerated (default 5)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--torch-executed-ops", args->torch_executed_ops,
                  "ops forced to run in PyTorch, comma separated (aten.relu.default)")->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_flag("--require-full-compilation", args->require_full, "fail unless every op converts");
  cmd->add_option("--dynamic", args->dynamic, "NAME:DIM:MIN:OPT:MAX range of an input dimension")->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

void run_refit(const CompileArgs& given, const std::string& compiled_path) {
  using namespace kiln;
  if (given.output.empty()) throw program::InputError("-o OUT.kiln is required");
  program::CompiledProgram prog = program::CompiledProgram::load(compiled_path);
  // Precision, device and GPU architecture are the program's own; the partition options are the
  // caller's (the .kiln does not record them): the same as at compile time, or the refit is refused.
  CompileArgs a = given;
  a.precision = engine::to_string(prog.precision());
  a.device = prog.device() == engine::DeviceKind::kCUDA ? "cuda" : "cpu";
  a.cuda_arch = 0;
  for (const auto& seg : prog.segments()) a.cuda_arch = std::max(a.cuda_arch, seg.plan.cuda_arch());
  if (a.device == "cuda" && !a.cuda_arch) a.cuda_arch = engine::current_cuda_arch();
  program::CompileOptions o = options_from(a);
  o.device_code = false;  // the program keeps the kernels it has
  program::require_regular_file(a.model);
  ir::ExportedProgram ep;
  {
    program::StageTimer t(o.log, "load " + a.model);
    ep = frontend::load_pt2(a.model);
  }
  program::CompiledProgram fresh = [&] {
    program::StageTimer t(o.log, "convert and build with the new weights");
    return program::compile(ep, o);
  }();
  {
    program::StageTimer t(o.log, "refit");
    try {
      prog.refit(fresh);
    } catch (const program::InputError& e) {
      throw program::InputError(std::string(e.what()) + " (give refit the options the program was compiled with: "
                                "--min-block-size, --torch-executed-ops, --dynamic)");
    }
  }
  {
    program::StageTimer t(o.log, "save " + a.output);
    prog.save(a.output);
  }
  std::cout << "wrote " << a.output << "\n";
}

}  // namespace

void add_refit_command(CLI::App& app) {
  auto args = std::make_shared<CompileArgs>();
  auto compiled = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("refit", "Put the weights of another export of the same model into a .kiln "
                                              "(no rebuild: its kernels and kernel choices stay)");
  cmd->add_option("program", *compiled, "the compiled program (.kiln)")->required();
  cmd->add_option("model", args->model, "an export of the same model with other weights (.pt2)")->required();
  add_compile_options(cmd, args);
  cmd->callback([args, compiled] {
    try {
      run_refit(*args, *compiled);
    } catch (const kiln::partition::PartitionError& e) {
      throw kiln::program::InputError(e.what());
    }
  });
}

void add_compile_command(CLI::App& app) {
  auto args = std::make_shared<CompileArgs>();
  CLI::App* cmd = app.add_subcommand("compile", "Compile a .pt2 program into a .kiln file");
  cmd->add_option("model", args->model, "torch.export program (.pt2)")->required();
  add_compile_options(cmd, args);
  cmd->add_option("--precision", args->precision, "fp32|fp16|bf16")->check(CLI::IsMember({"fp32", "fp16", "bf16"}));
  cmd->add_option("--device", args->device, "cpu|cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--cuda-arch", args->cuda_arch,
                  "compile the plan's CUDA kernels for sm_ARCH (90: H100/H200; default: the GPU at hand; "
                  "lets a machine without a GPU compile for one)")
      ->check(CLI::Range(50, 200));
  cmd->add_option("--workspace-size", args->workspace_size,
                  "most scratch memory (bytes) a GPU matrix multiply, convolution or attention algorithm may use; "
                  "smaller saves device memory, maybe at some speed (0: the default, 1 GiB)")
      ->check(CLI::Range(size_t{0}, size_t{1} << 40));
  cmd->add_flag("--dryrun", args->dryrun, "report the partition and build nothing");
  cmd->callback([args] {
    // main.cpp reports errors; the partitioner's own error type is bad input to the CLI.
    try {
      run_compile(*args);
    } catch (const kiln::partition::PartitionError& e) {
      throw kiln::program::InputError(e.what());
    }
  });
}
