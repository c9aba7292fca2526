// Without CUDA, the CUDA backend factory refuses and there is no device code. Builds with
// KILN_HAS_CUDA get these functions from src/engine/cuda/ instead.
#ifndef KILN_HAS_CUDA
#include "engine/backend.h"

namespace kiln::engine {

bool cuda_available() { return false; }
int current_cuda_arch() { return 0; }
uint64_t cudnn_attention_executions() { return 0; }

std::unique_ptr<Backend> make_cuda_backend(void*) { throw NetworkError("kiln was built without CUDA"); }

std::map<std::string, std::string> compile_device_code(const Network&, int) { return {}; }
void register_device_code(const std::map<std::string, std::string>&) {}
std::vector<int> cuda_supported_archs() { return {}; }
std::vector<std::string> cuda_libraries() { return {}; }

}  // namespace kiln::engine
#endif
