// TensorView helpers and the CPU backend (host memory, kernels in src/engine/cpu/).
#include "engine/backend.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <new>

#include "engine/cpu/cpu_kernels.h"
#include "engine/cpu/parallel.h"

namespace kiln::engine {

const char* to_string(DeviceKind d) { return d == DeviceKind::kCPU ? "cpu" : "cuda"; }

int64_t canonical_axis(const Layer& layer, int64_t axis, int64_t rank, const char* what) {
  if (axis < 0 || axis >= std::max<int64_t>(rank, 1))
    throw NetworkError(layer.label() + ": " + what + " " + std::to_string(axis) + " is not in [0, rank " +
                       std::to_string(rank) + "); layers made outside Network::add_layer skip its normalization");
  return axis;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::vector<int64_t> TensorView::contiguous_strides() const {
  std::vector<int64_t> s(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;) s[i - 1] = s[i] * std::max<int64_t>(dims[i], 1);
  return s;
}

bool TensorView::is_contiguous() const {
  if (strides.empty()) return true;
  if (strides.size() != dims.size()) return false;
  // a dim of size 1 may carry any stride
  int64_t expect = 1;
  for (size_t i = dims.size(); i-- > 0;) {
    if (dims[i] != 1 && strides[i] != expect) return numel() == 0;
    expect *= dims[i];
  }
  return true;
}

namespace {

class CpuBackend final : public Backend {
 public:
  DeviceKind kind() const override { return DeviceKind::kCPU; }
  void* allocate(size_t bytes) override { return ::operator new(std::max<size_t>(bytes, 64), std::align_val_t(64)); }
  void deallocate(void* p) override {
    if (p) ::operator delete(p, std::align_val_t(64));
  }
  void copy(void* dst, DeviceKind dst_kind, const void* src, DeviceKind src_kind, size_t bytes) override {
    if (dst_kind != DeviceKind::kCPU || src_kind != DeviceKind::kCPU)
      throw NetworkError("the CPU backend cannot copy to or from CUDA memory");
    if (!bytes) return;
    // Large copies (a model's outputs into the caller's fresh tensors, inputs into the arena) over
    // the worker threads: the first touch of a fresh allocation's pages costs as much as the copy.
    const auto* s = static_cast<const char*>(src);
    auto* d = static_cast<char*>(dst);
    constexpr size_t kParallelCopy = size_t(1) << 20;
    if (bytes < kParallelCopy || (d < s + bytes && s < d + bytes)) return void(std::memmove(dst, src, bytes));
    constexpr int64_t kBlock = 64 << 10;
    const int64_t blocks = int64_t((bytes + kBlock - 1) / kBlock);
    cpu::parallel_ranges(blocks, true, [&](int64_t lo, int64_t hi) {
      const size_t begin = size_t(lo) * kBlock, end = std::min(bytes, size_t(hi) * kBlock);
      std::memcpy(d + begin, s + begin, end - begin);
    });
  }
  size_t workspace_bytes(const Layer& layer, const std::vector<TensorView>& inputs) override {
    return cpu::workspace_bytes(layer, inputs);
  }
  void execute(LayerCall& call) override { cpu::execute(call); }
  void synchronize() override { cpu::flush_timing_choices(); }  // choices timed by this run's first calls
  void flush_timing_cache() override { cpu::flush_timing_choices(); }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace kiln::engine
