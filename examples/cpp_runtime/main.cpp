// run_kiln MODEL.kiln OUT_DIR INPUT.npy...: runs a compiled program on .npy inputs (one per program
// input, in order) and writes OUT_DIR/output_<i>.npy, as `kiln run` does.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include <kiln/program/npy.h>
#include <kiln/program/program.h>
#ifdef KILN_HAS_TORCH
#include <kiln/torch_bridge/torch_bridge.h>
#endif

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.kiln OUT_DIR INPUT.npy...\n", argv[0]);
    return 2;
  }
  try {
#ifdef KILN_HAS_TORCH
    kiln::torch_bridge::install();  // PyTorch runs the ops kiln left to it
#endif
    auto program = kiln::program::CompiledProgram::load(argv[1]);
    std::vector<kiln::program::HostTensor> inputs;
    for (int i = 3; i < argc; ++i) inputs.push_back(kiln::program::read_npy(argv[i]));

    kiln::program::RunOptions options;  // on the device the program was built for, if it is here
    if (program.device() == kiln::engine::DeviceKind::kCUDA && kiln::engine::cuda_available())
      options.device = kiln::engine::DeviceKind::kCUDA;
    std::vector<kiln::program::HostTensor> outputs = program.run(inputs, options);

    std::filesystem::create_directories(argv[2]);
    for (size_t i = 0; i < outputs.size(); ++i) {
      std::string path = std::string(argv[2]) + "/output_" + std::to_string(i) + ".npy";
      kiln::program::write_npy(path, outputs[i]);
      std::printf("%s: %s\n", path.c_str(), outputs[i].str().c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "run_kiln: %s\n", e.what());
    return 1;
  }
  return 0;
}
