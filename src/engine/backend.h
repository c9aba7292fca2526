// What a backend gives the runtime: memory and one entry to run a layer. The CPU backend is always
// there; the CUDA backend plugs in behind the same interface.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/network.h"

namespace kiln::engine {

enum class DeviceKind : uint8_t { kCPU, kCUDA };
const char* to_string(DeviceKind d);

// A dense view of memory. Strides are in elements; the runtime hands kernels contiguous views
// (it copies strided inputs once at binding).
struct TensorView {
  void* data = nullptr;
  DataType dtype = DataType::kFloat32;
  std::vector<int64_t> dims;
  std::vector<int64_t> strides;  // empty = contiguous
  DeviceKind device = DeviceKind::kCPU;

  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(dtype); }
  bool is_contiguous() const;
  std::vector<int64_t> contiguous_strides() const;
  template <class T> T* as() const { return static_cast<T*>(data); }
};

// For layers whose output sizes depend on data (nonzero, data-dependent plugins): the kernel asks
// for its output buffer once it knows the shape.
using OutputAllocator = std::function<TensorView(size_t output_index, const std::vector<int64_t>& dims)>;

struct LayerCall {
  const Layer& layer;
  const std::vector<TensorView>& inputs;
  std::vector<TensorView>& outputs;  // allocated, except data-dependent ones (data == nullptr)
  const OutputAllocator& allocate_output;
  void* workspace = nullptr;         // scratch, `workspace_bytes` long
  size_t workspace_bytes = 0;
  // Symbol values of the current run: layers whose params hold symbolic expressions beyond the
  // output dims (a Slice's start/stride) evaluate them here. Null = static params only.
  const SymbolValues* symbols = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p) = 0;
  virtual void copy(void* dst, DeviceKind dst_kind, const void* src, DeviceKind src_kind, size_t bytes) = 0;
  // Scratch a layer needs for these input shapes (im2col, reductions...).
  virtual size_t workspace_bytes(const Layer& layer, const std::vector<TensorView>& inputs) { return 0; }
  virtual void execute(LayerCall& call) = 0;
  // Waits for the work queued so far (a stream's), then does what flush_timing_cache does.
  virtual void synchronize() {}
  // Writes the kernel choices timed since the last call to the timing cache's file (an execute's
  // end when it does not wait).
  virtual void flush_timing_cache() {}

  // ---- optional: CUDA graphs (additive; the defaults mean "not supported") ----------------------
  // The runtime may record a whole execute (every layer) when shapes are static and no layer
  // needs a host synchronization (no data-dependent output shapes), then replay it. The key names
  // what the recording depends on: input shapes and every buffer address it touched.
  virtual bool supports_capture() const { return false; }
  virtual void begin_capture() {}
  virtual void end_capture(const std::string& key) {}   // keeps the recording under `key`
  virtual bool replay(const std::string& key) { return false; }  // false: nothing kept for key
  // The backend's native queue (cudaStream_t for CUDA), for callers that enqueue their own work.
  virtual void* native_stream() const { return nullptr; }
  // The running plan's Plan::workspace_limit, set before each execute: algorithms chosen from then
  // on need no more scratch memory than this. scratch_bytes: the library scratch held now.
  virtual void set_workspace_limit(size_t bytes) { (void)bytes; }
  virtual size_t scratch_bytes() const { return 0; }
};

std::unique_ptr<Backend> make_cpu_backend();
constexpr size_t kDefaultWorkspaceLimit = size_t{1} << 30;  // BuilderConfig::workspace_limit
// An axis parameter as kernels read it: shape inference (Network::add_layer) leaves every axis in
// [0, rank), 0 for a rank-0 tensor, so kernels check that instead of re-deriving negative axes;
// any other value means the parameters bypassed it, and is an error naming the layer.
int64_t canonical_axis(const Layer& layer, int64_t axis, int64_t rank, const char* what = "axis");
// Throws engine::NetworkError("CUDA backend not available: ...") where kiln was built without CUDA
// or no GPU is present.
std::unique_ptr<Backend> make_cuda_backend(void* stream = nullptr);
bool cuda_available();
// The current GPU's architecture as a number (90 for sm_90); 0 without CUDA or a GPU.
int current_cuda_arch();
// How many attention layers cuDNN's fused attention has run in this process (0 without cuDNN):
// tests check that the path they force actually ran.
uint64_t cudnn_attention_executions();

// Device code a CUDA plan carries: the NVRTC-compiled kernels its layers launch, by key
// ("sm_<arch>:<hash of the kernel source>"). For sm_<arch>, or the current GPU's when arch is 0
// (no GPU and no arch: empty, and the kernels compile on the plan's first run instead).
std::map<std::string, std::string> compile_device_code(const Network& net, int arch);
// Makes a loaded plan's device code available to the CUDA backend, which then loads it instead of
// compiling the same source again (process-wide; a no-op without CUDA).
void register_device_code(const std::map<std::string, std::string>& code);
// The architectures compile_device_code can target (NVRTC's list; empty without CUDA).
std::vector<int> cuda_supported_archs();

// The libraries this kiln was built with and loads, with their versions ("oneDNN 2.6.3",
// "CUDA runtime 13.0", "cuDNN 9.19.0"): `kiln --version` prints them, for bug reports and for
// scripts that need to know which paths exist. A library the build lacks is not listed.
std::vector<std::string> build_libraries();
// The CUDA part of it (empty without CUDA).
std::vector<std::string> cuda_libraries();

}  // namespace kiln::engine
