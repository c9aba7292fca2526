// Pointwise kernels: CUDA C++ generated per program (pointwise_codegen.cpp) and compiled with
// NVRTC, then launched. One generator serves the builder's FusedPointwise programs, the one-op
// layers (Elementwise, Unary, Activation, Cast, Select: each a one-instruction program) and the
// matmul/convolution epilogues, so every pointwise op has one device definition.
//
// A program's source depends only on its instructions and register dtypes, never on shapes:
// shapes and strides travel as kernel arguments, and the launcher picks the module's kernel:
// `kiln_vec` where rows hold whole groups of 8 and alignment allows 16-byte accesses, else
// `kiln_flat` (no input broadcast) or `kiln_bcast` (per-input strides over collapsed dims).
// Compiled cubins are cached per process by source text. The builder compiles every program a CUDA
// plan will launch (compile_device_code) and the plan carries the cubins, keyed by architecture and
// a hash of the source; a loaded plan registers them (register_device_code), so its first run
// loads machine code instead of running NVRTC (which stays the fallback, e.g. on another GPU).
#include <cuda_runtime.h>
#include <nvrtc.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <thread>
#include <cstdio>
#include <mutex>
#include <unordered_map>

#include "engine/cuda/internal.h"
#include "engine/cuda/pointwise_codegen.h"
#include "engine/network_internal.h"

namespace kiln::engine::cuda {
namespace {

// Loaded through the runtime's library API (not the driver API), so kiln links no libcuda and
// its binaries load on machines without a GPU driver (CI).
struct Compiled {
  cudaLibrary_t library = nullptr;
  cudaKernel_t flat = nullptr;
  cudaKernel_t bcast = nullptr;
  cudaKernel_t vec = nullptr;
};

std::mutex g_mutex;
std::unordered_map<std::string, Compiled>& cache() {
  static auto* c = new std::unordered_map<std::string, Compiled>();  // lives as long as the process
  return *c;
}
// Cubins plans brought along, by device_code_key (guarded by g_mutex).
std::unordered_map<std::string, std::string>& registered() {
  static auto* r = new std::unordered_map<std::string, std::string>();
  return *r;
}

// "sm_90:nvrtc13.0:<two 64-bit FNV-1a hashes of the source, hex>": what a plan's device code is
// looked up by (another NVRTC, or another source, compiles afresh).
std::string device_code_key(int arch, const std::string& source) {
  uint64_t h1 = 1469598103934665603ull, h2 = 0x9e3779b97f4a7c15ull;
  for (unsigned char c : source) {
    h1 = (h1 ^ c) * 1099511628211ull;
    h2 = (h2 ^ c) * 0x100000001b3ull + 0x5851f42d4c957f2dull;
  }
  int major = 0, minor = 0;
  nvrtcVersion(&major, &minor);
  char hex[40];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(h1), static_cast<unsigned long long>(h2));
  return "sm_" + std::to_string(arch) + ":nvrtc" + std::to_string(major) + "." + std::to_string(minor) + ":" + hex;
}

void nvrtc_check(nvrtcResult r, const char* what) {
  if (r != NVRTC_SUCCESS) throw NetworkError(std::string("NVRTC: ") + what + ": " + nvrtcGetErrorString(r));
}
void cu_check(cudaError_t r, const char* what) {
  if (r != cudaSuccess) throw NetworkError(std::string("CUDA: ") + what + ": " + cudaGetErrorString(r));
}

// NVRTC: CUDA C++ -> machine code for sm_<arch> (needs no GPU).
std::string nvrtc_cubin(const std::string& source, int arch_number) {
  nvrtcProgram prog;
  nvrtc_check(nvrtcCreateProgram(&prog, source.c_str(), "kiln_pointwise.cu", 0, nullptr, nullptr), "create");
  const std::string arch = "--gpu-architecture=sm_" + std::to_string(arch_number);
  const char* opts[] = {arch.c_str(), "--std=c++17", "--device-as-default-execution-space"};
  nvrtcResult res = nvrtcCompileProgram(prog, 3, opts);
  if (res != NVRTC_SUCCESS) {
    size_t n = 0;
    nvrtcGetProgramLogSize(prog, &n);
    std::string log(n, '\0');
    nvrtcGetProgramLog(prog, log.data());
    nvrtcDestroyProgram(&prog);
    throw NetworkError("NVRTC failed to compile a pointwise kernel:\n" + log + "\n--- source ---\n" + source);
  }
  size_t n = 0;
  nvrtc_check(nvrtcGetCUBINSize(prog, &n), "cubin size");
  std::string cubin(n, '\0');
  nvrtc_check(nvrtcGetCUBIN(prog, cubin.data()), "cubin");
  nvrtcDestroyProgram(&prog);
  return cubin;
}

const Compiled& compile(const Context& ctx, const std::string& source) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const std::string key = std::to_string(ctx.device) + "\n" + source;
  auto it = cache().find(key);
  if (it != cache().end()) return it->second;
  const int arch = ctx.cc_major * 10 + ctx.cc_minor;
  auto load = [](const std::string& cubin, Compiled& c) {
    if (cudaLibraryLoadData(&c.library, cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    if (cudaLibraryGetKernel(&c.flat, c.library, "kiln_flat") != cudaSuccess) {
      cudaGetLastError();
      cudaLibraryUnload(c.library);
      return false;
    }
    // Row programs have no kiln_bcast, and no kiln_vec where no access can be widened.
    if (cudaLibraryGetKernel(&c.bcast, c.library, "kiln_bcast") != cudaSuccess) cudaGetLastError(), c.bcast = nullptr;
    if (cudaLibraryGetKernel(&c.vec, c.library, "kiln_vec") != cudaSuccess) cudaGetLastError(), c.vec = nullptr;
    return true;
  };
  Compiled c;
  const std::string stored_key = device_code_key(arch, source);
  auto stored = registered().find(stored_key);
  if (stored != registered().end() && !load(stored->second, c)) {
    registered().erase(stored);  // a plan's code this driver will not load: compile it here instead
    stored = registered().end();
  }
  if (stored == registered().end()) {
    const std::string cubin = nvrtc_cubin(source, arch);
    if (!load(cubin, c)) throw NetworkError("CUDA: cannot load a pointwise kernel NVRTC compiled for sm_" + std::to_string(arch));
  }
  return cache().emplace(key, c).first->second;
}

// The dims a kernel walks (the first `walked` of `dims`) and each input's broadcast strides over
// them into `a`, collapsed: size-1 dims dropped, neighbours every input walks contiguously merged.
void set_walk(KArgs& a, const std::vector<TensorView>& inputs, const std::vector<int64_t>& dims, size_t walked,
              const char* what) {
  std::vector<std::vector<int64_t>> st;
  for (const auto& v : inputs) st.push_back(broadcast_strides(v.dims, dims));
  std::vector<int64_t> kept;
  std::vector<std::vector<int64_t>> cst(inputs.size());
  for (size_t d = 0; d < walked; ++d) {
    if (dims[d] == 1) continue;
    bool merge = !kept.empty();
    for (size_t j = 0; j < inputs.size() && merge; ++j) merge = cst[j].back() == st[j][d] * dims[d];
    if (merge) {
      kept.back() *= dims[d];
      for (size_t j = 0; j < inputs.size(); ++j) cst[j].back() = st[j][d];
    } else {
      kept.push_back(dims[d]);
      for (size_t j = 0; j < inputs.size(); ++j) cst[j].push_back(st[j][d]);
    }
  }
  if (kept.size() > size_t(kRank)) throw NetworkError(std::string(what) + ": rank above 8 after collapsing");
  a.rank = static_cast<int>(kept.size());
  for (size_t d = 0; d < kept.size(); ++d) {
    a.dims[d] = kept[d];
    for (size_t j = 0; j < inputs.size(); ++j) a.st[j][d] = cst[j][d];
  }
}

std::vector<int64_t> numels(const std::vector<TensorView>& views) {
  std::vector<int64_t> n;
  for (const auto& v : views) n.push_back(v.numel());
  return n;
}

// Gathered loads: the kernels know the shapes; the arguments are the buffers.
void launch_gathered(Context& ctx, const FusedPointwiseParams& prog, const std::vector<TensorView>& inputs,
                     const std::vector<TensorView>& outputs, const std::vector<DataType>& in_types) {
  const std::vector<int64_t>& out_dims = outputs[0].dims;
  if (out_dims != prog.gather->out_dims)
    throw NetworkError("pointwise kernel: gathered loads were built for another output shape");
  const Compiled& c = compile(ctx, generate(prog, in_types, numels(inputs)));
  KArgs a{};
  a.n = product(out_dims);
  bool vec = out_dims.back() % 8 == 0;
  for (size_t j = 0; j < inputs.size(); ++j) {
    a.in[j] = inputs[j].data;
    vec = vec && reinterpret_cast<uintptr_t>(inputs[j].data) % 16 == 0;
  }
  for (size_t k = 0; k < outputs.size(); ++k) {
    a.out[k] = outputs[k].data;
    vec = vec && reinterpret_cast<uintptr_t>(outputs[k].data) % 16 == 0;
  }
  void* params[] = {&a};
  const unsigned threads = 256;
  const unsigned grid = grid_for(ctx, vec ? a.n / 8 : a.n, threads);
  cu_check(cudaLaunchKernel(reinterpret_cast<const void*>(vec ? c.vec : c.flat), dim3(grid), dim3(threads), params, 0,
                            ctx.stream),
           "launch of a gathering pointwise kernel");
}

std::vector<char> row_inputs(const std::vector<TensorView>& inputs) {
  std::vector<char> r;
  for (const auto& v : inputs) r.push_back(v.dims.empty() || v.dims.back() == 1);
  return r;
}

// A row program: the outputs' outer dims are the rows; inputs are read at per-row offsets from
// their broadcast strides over those dims (collapsed where they allow).
void launch_rows(Context& ctx, const FusedPointwiseParams& prog, const std::vector<TensorView>& inputs,
                 const std::vector<TensorView>& outputs, const std::vector<DataType>& in_types) {
  const int64_t R = prog.row_length;
  std::vector<int64_t> domain = outputs[0].dims;
  if (domain.empty()) throw NetworkError("row program: outputs of rank 0");
  domain.back() = R;
  const int64_t rows = product(domain) / R;
  if (rows == 0) return;
  const std::vector<char> in_row = row_inputs(inputs);
  const Compiled& c = compile(ctx, generate_rows(prog, in_types, in_row));
  KArgs a{};
  a.n = rows;
  set_walk(a, inputs, domain, domain.size() - 1, "row program");  // the rows: every dim but the last
  for (size_t j = 0; j < inputs.size(); ++j) {
    a.in[j] = inputs[j].data;
    if (!in_row[j] && inputs[j].dims.back() != R)  // (broadcast along the row otherwise: a per-row input)
      throw NetworkError("row program: an input's rows are not contiguous");
  }
  for (size_t k = 0; k < outputs.size(); ++k) a.out[k] = outputs[k].data;
  // kiln_vec: whole vectors in every row of every per-element input and output, aligned.
  const int V = row_vector_width(prog, in_types, in_row);
  bool vec = c.vec && V > 1 && R % V == 0;
  auto aligned = [&](const void* p, DataType t) { return reinterpret_cast<uintptr_t>(p) % (V * element_size(t)) == 0; };
  for (size_t j = 0; j < inputs.size() && vec; ++j) {
    if (in_row[j]) continue;
    vec = aligned(inputs[j].data, inputs[j].dtype);
    for (int d = 0; d < a.rank && vec; ++d) vec = a.st[j][d] % V == 0;
  }
  for (size_t k = 0; k < outputs.size() && vec; ++k)
    if (outputs[k].dims.back() != 1 || R == 1) vec = aligned(outputs[k].data, outputs[k].dtype);
  const RowShape rs = row_shape(R, vec ? V : 1);
  const int threads = rs.threads == 32 ? 256 : rs.threads;
  const int64_t blocks = ceil_div(rows, threads / rs.threads);
  const unsigned grid = unsigned(std::min<int64_t>(blocks, int64_t(std::max(ctx.sm_count, 1)) * (2048 / threads) * 4));
  void* params[] = {&a};
  cu_check(cudaLaunchKernel(reinterpret_cast<const void*>(vec ? c.vec : c.flat), dim3(grid), dim3(threads), params, 0,
                            ctx.stream),
           "launch of a row program");
}

}  // namespace

void launch_program(Context& ctx, const FusedPointwiseParams& prog, const std::vector<TensorView>& inputs,
                    const std::vector<TensorView>& outputs) {
  if (outputs.empty()) return;
  if (inputs.size() > size_t(kMaxIn) || outputs.size() > size_t(kMaxOut))
    throw NetworkError("pointwise kernel: too many inputs/outputs for the CUDA backend");
  if (prog.row_length) {
    std::vector<DataType> in_types;
    for (const auto& v : inputs) in_types.push_back(v.dtype);
    launch_rows(ctx, prog, inputs, outputs, in_types);
    return;
  }
  const std::vector<int64_t>& out_dims = outputs[0].dims;
  const int64_t n = product(out_dims);
  if (n == 0) return;

  std::vector<DataType> in_types;
  for (const auto& v : inputs) in_types.push_back(v.dtype);
  if (prog.gather) {
    launch_gathered(ctx, prog, inputs, outputs, in_types);
    return;
  }
  const Compiled& c = compile(ctx, generate(prog, in_types));

  KArgs a{};
  a.n = n;
  bool flat = true;
  for (size_t j = 0; j < inputs.size(); ++j) {
    a.in[j] = inputs[j].data;
    if (inputs[j].numel() != n) flat = false;
  }
  for (size_t k = 0; k < outputs.size(); ++k) a.out[k] = outputs[k].data;
  if (!flat) {
    set_walk(a, inputs, out_dims, out_dims.size(), "pointwise kernel");
  }
  if (flat) {  // as one contiguous dim, for kiln_vec
    a.rank = 1;
    a.dims[0] = n;
    for (size_t j = 0; j < inputs.size(); ++j) a.st[j][0] = 1;
  }
  // kiln_vec needs whole groups of 8 in every innermost row, and each input either contiguous
  // along it (groups aligned for 16-byte access) or broadcast along it.
  const int last = a.rank - 1;
  auto aligned = [](const void* p, DataType t) {
    return reinterpret_cast<uintptr_t>(p) % std::min<size_t>(16, 8 * element_size(t)) == 0;
  };
  bool vec = a.rank >= 1 && a.dims[last] % 8 == 0;
  for (size_t j = 0; j < inputs.size() && vec; ++j) {
    if (a.st[j][last] == 0) continue;
    vec = a.st[j][last] == 1 && aligned(inputs[j].data, inputs[j].dtype);
    for (int d = 0; d < last && vec; ++d) vec = a.st[j][d] % 8 == 0;
  }
  for (size_t k = 0; k < outputs.size() && vec; ++k) vec = aligned(outputs[k].data, outputs[k].dtype);

  void* params[] = {&a};
  const unsigned threads = 256;
  const unsigned grid = grid_for(ctx, vec ? n / 8 : n, threads);
  const cudaKernel_t kernel = vec ? c.vec : flat ? c.flat : c.bcast;
  cu_check(cudaLaunchKernel(reinterpret_cast<const void*>(kernel), dim3(grid), dim3(threads), params, 0, ctx.stream),
           "launch of a pointwise kernel");
}

void run_pointwise(Context& ctx, const Layer& layer, LayerCall& call) {
  FusedPointwiseParams prog = detail::pointwise_program(layer);
  launch_program(ctx, prog, call.inputs, call.outputs);
}


void apply_epilogue(Context& ctx, const TensorView& out, const TensorView* bias,
                    const std::optional<ActivationParams>& act, const TensorView* residual) {
  if (!bias && !act && !residual) return;
  std::vector<TensorView> ins{out};
  for (const TensorView* t : {bias, residual})
    if (t) ins.push_back(*t);
  launch_program(ctx, epilogue_program(out.dtype, bias, act, residual), ins, {out});
}

void apply_epilogue_to_zeros(Context& ctx, const TensorView& out, const TensorView* bias,
                             const std::optional<ActivationParams>& act, const TensorView* residual) {
  const bool residual_in_output = residual && residual->data == out.data;  // compute_buffer_plan
  if (!residual_in_output) KILN_CUDA_CHECK(cudaMemsetAsync(out.data, 0, out.nbytes(), ctx.stream));
  apply_epilogue(ctx, out, bias, act, residual_in_output ? nullptr : residual);
}

}  // namespace kiln::engine::cuda

namespace kiln::engine {

std::map<std::string, std::string> compile_device_code(const Network& net, int arch) {
  using namespace cuda;
  if (arch == 0) arch = current_cuda_arch();
  if (arch == 0) return {};  // no GPU here: plans compile their kernels on their first run instead
  // Every program the plan's layers can launch: the pointwise layers', and the epilogues of
  // matmuls and convolutions with each part that may be left to them (cuBLASLt fuses some parts
  // depending on shapes, so every subset of bias / activation / residual the layer has).
  std::map<std::string, std::string> sources;  // key -> source
  auto add = [&](const FusedPointwiseParams& prog, const std::vector<DataType>& in_types,
                 const std::vector<int64_t>& in_numel = {}) {
    std::string source = generate(prog, in_types, in_numel);
    sources.emplace(device_code_key(arch, source), std::move(source));
  };
  for (const Layer* l : net.layers()) {
    if (const auto* f = l->as<FusedPointwiseParams>(); f && f->row_length) {
      std::vector<DataType> in_types;
      std::vector<char> in_row;
      for (const Tensor* t : l->inputs()) {
        in_types.push_back(t->dtype());
        in_row.push_back(detail::is_row_shaped(t->shape()));
      }
      std::string source = generate_rows(*f, in_types, in_row);
      sources.emplace(device_code_key(arch, source), std::move(source));
      continue;
    }
    if (detail::is_pointwise(l)) {
      std::vector<DataType> in_types;
      std::vector<int64_t> in_numel;
      for (const Tensor* t : l->inputs()) {
        in_types.push_back(t->dtype());
        auto dims = detail::static_dims(t);
        in_numel.push_back(dims ? product(*dims) : 0);
      }
      const FusedPointwiseParams prog = detail::pointwise_program(*l);
      if (prog.gather && std::find(in_numel.begin(), in_numel.end(), 0) != in_numel.end()) continue;  // compiled at run time
      add(prog, in_types, prog.gather ? in_numel : std::vector<int64_t>{});
      continue;
    }
    bool bias = false, residual = false;
    std::optional<ActivationParams> act;
    if (auto* m = l->as<MatMulParams>()) {
      bias = m->has_bias, residual = m->has_residual, act = m->activation;
    } else if (auto* c = l->as<ConvolutionParams>()) {
      bias = c->has_bias, residual = c->has_residual, act = c->activation;
    } else {
      continue;
    }
    const DataType dt = l->output()->dtype();
    for (int subset = 1; subset < 8; ++subset) {
      const bool b = bias && (subset & 1), r = residual && (subset & 4);
      const std::optional<ActivationParams> a = (subset & 2) ? act : std::nullopt;
      if ((subset & 1) && !b) continue;
      if ((subset & 2) && !a) continue;
      if ((subset & 4) && !r) continue;
      std::vector<DataType> in_types{dt};
      if (b) in_types.push_back(dt);
      if (r) in_types.push_back(dt);
      add(epilogue_program(dt, b, a, r), in_types);
    }
  }
  // NVRTC compiles independent programs concurrently: a few workers share the list.
  std::vector<std::pair<std::string, std::string>> work(sources.begin(), sources.end());
  std::vector<std::string> cubins(work.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next++) < work.size();) cubins[i] = nvrtc_cubin(work[i].second, arch);
  };
  const size_t threads = std::min<size_t>(work.size(), std::max(1u, std::min(8u, std::thread::hardware_concurrency())));
  std::vector<std::future<void>> running;
  for (size_t t = 1; t < threads; ++t) running.push_back(std::async(std::launch::async, worker));
  worker();
  for (auto& f : running) f.get();  // rethrows a worker's NVRTC error
  std::map<std::string, std::string> code;
  for (size_t i = 0; i < work.size(); ++i) code[work[i].first] = std::move(cubins[i]);
  return code;
}

std::vector<int> cuda_supported_archs() {
  int n = 0;
  if (nvrtcGetNumSupportedArchs(&n) != NVRTC_SUCCESS || n <= 0) return {};
  std::vector<int> archs(static_cast<size_t>(n));
  if (nvrtcGetSupportedArchs(archs.data()) != NVRTC_SUCCESS) return {};
  return archs;
}

void register_device_code(const std::map<std::string, std::string>& code) {
  std::lock_guard<std::mutex> lock(cuda::g_mutex);
  for (const auto& [key, cubin] : code) cuda::registered().try_emplace(key, cubin);  // (no copy when known)
}

}  // namespace kiln::engine
