// libFuzzer target for the .kiln loader and for running what it loads. Any input must either be
// refused by CompiledProgram::deserialize (FormatError) or load; a loaded program is then run once
// on inputs made from its own input specs, where it may still refuse (any std::exception: the
// engine and the runtime throw, never crash). A crash, a sanitizer report, an exception escaping
// the load that is not a FormatError, or a hang is a bug.
//
// Two things make byte mutations useful on a .kiln:
//  - the file and every plan inside it carry an FNV-1a checksum, so nearly every mutation would be
//    refused by the checksum check alone; the harness re-seals them (and the header's JSON size,
//    found by matching braces) before loading, so mutations reach the JSON and the plans;
//  - what it runs is bounded: before running, each plan's tensors are sized at the smallest
//    shapes its profile allows, and programs above kMaxTensorElements per tensor or
//    kMaxTotalElements in all are not run. Huge single allocations the check cannot see
//    (data-dependent shapes) are refused by ASan (fuzz/run.sh sets max_allocation_size_mb and
//    allocator_may_return_null, so they throw std::bad_alloc, which a run may throw; the loader
//    may not: it must check sizes against the file before allocating).
//
// Run: fuzz/run.sh (make fuzz) builds it and makes the seed corpus by compiling tests/data fixtures.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/plan_impl.h"
#include "fuzz_util.h"
#include "program/program.h"

namespace {

using kiln::program::CompiledProgram;
using kiln::program::HostTensor;

constexpr int64_t kMaxTensorElements = int64_t{1} << 18;
constexpr int64_t kMaxTotalElements = int64_t{1} << 22;
constexpr size_t kHeader = 32;          // .kiln header: magic, version, flags, json bytes, blob bytes
constexpr size_t kPlanHeader = 48;      // plan header (engine/plan.cpp)
constexpr size_t kPlanTotalField = 40;  // plan header: u64 total bytes, checksum included

// Index one past the JSON value that starts at text[0] (an object or array), or 0 when it does
// not close: strings and their escapes are skipped so braces inside names do not count.
size_t json_extent(const uint8_t* text, size_t n) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (--depth == 0) return i + 1;
    } else if (depth == 0 && c != ' ' && c != '\n') {
      return 0;
    }
  }
  return 0;
}

// Rewrites the header's sizes and every checksum so that a mutated file reaches the parsers.
void reseal(std::vector<uint8_t>& f) {
  if (f.size() < kHeader + 8 || std::memcmp(f.data(), "KILNPROG", 8) != 0) return;
  const size_t body = f.size() - kHeader - 8;
  uint64_t json_size = kiln::fuzz::get_u64(f.data() + 16);
  if (const size_t end = json_extent(f.data() + kHeader, body)) json_size = end;
  if (json_size <= body) {
    kiln::fuzz::put_u64(f.data() + 16, json_size);
    kiln::fuzz::put_u64(f.data() + 24, body - json_size);
    // Plans sit in the blob where the JSON's segments say; each gets its own checksum re-sealed.
    const nlohmann::json j = nlohmann::json::parse(f.data() + kHeader, f.data() + kHeader + json_size, nullptr,
                                                   /*allow_exceptions=*/false);
    uint8_t* blob = f.data() + kHeader + json_size;
    const uint64_t blob_size = body - json_size;
    if (j.is_object() && j.contains("segments") && j["segments"].is_array()) {
      for (const auto& s : j["segments"]) {
        if (!s.is_object() || !s.contains("plan") || !s["plan"].is_array() || s["plan"].size() != 2) continue;
        if (!s["plan"][0].is_number_unsigned() || !s["plan"][1].is_number_unsigned()) continue;
        const uint64_t off = s["plan"][0].get<uint64_t>(), len = s["plan"][1].get<uint64_t>();
        if (off > blob_size || len > blob_size - off || len < kPlanHeader + 8) continue;
        uint8_t* plan = blob + off;
        const uint64_t total = kiln::fuzz::get_u64(plan + kPlanTotalField);
        if (total < kPlanHeader + 8 || total > len) continue;
        kiln::fuzz::put_u64(plan + total - 8, kiln::fuzz::fnv1a(plan, total - 8, kiln::fuzz::kPlanBasis));
      }
    }
  }
  kiln::fuzz::put_u64(f.data() + f.size() - 8, kiln::fuzz::fnv1a(f.data(), f.size() - 8, kiln::fuzz::kProgramBasis));
}

// Elements of every tensor of every plan at the smallest shapes the plans' profiles allow; false
// when some tensor or the sum is over the caps. Shapes that cannot be evaluated (data-dependent
// symbols, or symbols the profile lacks) are left to the allocation cap.
bool small_enough(const CompiledProgram& p) {
  int64_t total = 0;
  for (const auto& seg : p.segments()) {
    kiln::engine::SymbolValues at_min;
    for (const auto& [sym, r] : seg.plan.impl().profile) at_min[sym] = r.min;
    for (const auto* t : seg.plan.network().tensors()) {
      std::vector<int64_t> dims;
      try {
        dims = kiln::engine::evaluate(t->shape(), at_min);
      } catch (const std::exception&) {
        continue;
      }
      int64_t n = 1;
      for (int64_t d : dims) {
        if (d < 0) return false;
        if (d != 0 && n > kMaxTensorElements / d) return false;
        n *= d;
      }
      if (n > kMaxTensorElements || (total += n) > kMaxTotalElements) return false;
    }
  }
  return true;
}

// Inputs from the program's own specs: dynamic sizes at their range's minimum, values a fixed
// mix of ordinary numbers and the IEEE specials (NaN, infinities, -0) kernels must survive;
// integer inputs get small non-negative values (indices), with some out of any range too.
bool make_inputs(const CompiledProgram& p, std::vector<HostTensor>& out) {
  std::map<std::string, int64_t> at_min;
  for (const auto& [sym, r] : p.ranges()) at_min[sym] = r.min;
  int64_t total = 0;
  for (const auto& spec : p.inputs()) {
    std::vector<int64_t> dims;
    for (const auto& s : spec.meta.sizes) {
      const auto v = s.evaluate(at_min);
      if (!v || *v < 0 || *v > kMaxTensorElements) return false;
      dims.push_back(*v);
    }
    HostTensor t = HostTensor::empty(spec.meta.dtype, dims);  // throws length_error when absurd
    const int64_t n = t.numel();
    if (n > kMaxTensorElements || (total += n) > kMaxTotalElements) return false;
    static const float kFloats[] = {0.5f, -1.25f, 3.0f, NAN, 0.0f, -0.0f, INFINITY, -INFINITY, 1e30f, 2.0f, -7.5f};
    for (int64_t i = 0; i < n; ++i) {
      const float f = kFloats[i % (sizeof kFloats / sizeof kFloats[0])];
      const int64_t k = (i * 7) % 5 - (i % 13 == 12 ? 1000 : 0);
      using ST = kiln::ir::ScalarType;
      switch (spec.meta.dtype) {
        case ST::Float: t.as<float>()[i] = f; break;
        case ST::Double: t.as<double>()[i] = f; break;
        case ST::Long: t.as<int64_t>()[i] = k; break;
        case ST::Int: t.as<int32_t>()[i] = static_cast<int32_t>(k); break;
        case ST::Bool: t.as<uint8_t>()[i] = i % 3 == 0; break;
        default: break;  // zero-filled: fine for every other dtype
      }
    }
    out.push_back(std::move(t));
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> file(data, data + size);
  reseal(file);
  CompiledProgram p;
  try {
    p = CompiledProgram::deserialize(file.data(), file.size());
  } catch (const kiln::program::FormatError& e) {
    if (std::getenv("KILN_FUZZ_VERBOSE")) std::fprintf(stderr, "kiln_fuzz: refused: %s\n", e.what());
    return 0;  // expected for malformed input
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln_fuzz: unexpected exception from the loader (must be FormatError): %s\n", e.what());
    std::abort();
  }
  // Like the CLI: print it (inspect), then run it when it is small and runs without PyTorch.
  volatile size_t sink = p.str().size() + p.summary().size();
  (void)sink;
  // KILN_FUZZ_VERBOSE=1: say why an input was not run or how its run ended (to check that the
  // seeds reach the kernels).
  static const bool verbose = std::getenv("KILN_FUZZ_VERBOSE") != nullptr;
  const char* skip = !p.fallback_ops().empty()                      ? "needs PyTorch fallback ops"
                     : p.device() != kiln::engine::DeviceKind::kCPU ? "not a CPU program"
                     : !small_enough(p)                              ? "over the size caps"
                                                                     : nullptr;
  if (skip) {
    if (verbose) std::fprintf(stderr, "kiln_fuzz: not run: %s\n", skip);
    return 0;
  }
  try {
    std::vector<HostTensor> inputs;
    if (!make_inputs(p, inputs)) {
      if (verbose) std::fprintf(stderr, "kiln_fuzz: not run: inputs over the size caps\n");
      return 0;
    }
    const std::vector<HostTensor> outputs = p.run(inputs);
    for (const auto& o : outputs)
      if (o.nbytes()) sink = sink + o.data[0] + o.data[o.nbytes() - 1];
    if (verbose) std::fprintf(stderr, "kiln_fuzz: ran, %zu outputs\n", outputs.size());
  } catch (const std::exception& e) {
    // The engine may refuse a plan at run time (shape errors, bad values); refusing is fine.
    if (verbose) std::fprintf(stderr, "kiln_fuzz: run refused: %s\n", e.what());
  }
  return 0;
}
