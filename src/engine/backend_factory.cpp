// Without CUDA, the CUDA backend factory refuses. Builds with KILN_HAS_CUDA get these two
// functions from src/engine/cuda/ instead.
#ifndef KILN_HAS_CUDA
#include "engine/backend.h"

namespace kiln::engine {

bool cuda_available() { return false; }

std::unique_ptr<Backend> make_cuda_backend(void*) { throw NetworkError("kiln was built without CUDA"); }

}  // namespace kiln::engine
#endif
