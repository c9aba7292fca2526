// Values that flow through a compiled program at run time: host tensors (always dense and
// contiguous, sharing their bytes) and the non-tensor values fallback ops take or return
// (symbolic ints resolved to numbers, tuples as lists).
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "engine/backend.h"
#include "engine/network.h"
#include "ir/types.h"

namespace kiln::program {

// A dense, contiguous tensor, in host memory unless `device` says otherwise. Copies share the
// bytes (like at::Tensor); `owner` keeps whatever holds them alive (a fresh buffer, a weight
// mapping, a libtorch tensor). Device tensors exist only inside a program run on the GPU (values
// between its steps stay there); what a run returns is in host memory.
struct HostTensor {
  ir::ScalarType dtype = ir::ScalarType::Float;
  std::vector<int64_t> dims;
  uint8_t* data = nullptr;
  std::shared_ptr<void> owner;
  engine::DeviceKind device = engine::DeviceKind::kCPU;

  // Zero-filled fresh buffer. Throws std::length_error on negative or overflowing sizes.
  static HostTensor empty(ir::ScalarType dtype, std::vector<int64_t> dims);
  // A view of bytes someone else owns (no copy).
  static HostTensor view(ir::ScalarType dtype, std::vector<int64_t> dims, const void* data,
                         std::shared_ptr<const void> owner);
  int64_t numel() const;
  // numel() * element size; throws std::length_error when that overflows (dims come from files).
  size_t nbytes() const;
  bool defined() const { return data != nullptr || numel() == 0; }
  template <class T> T* as() const { return reinterpret_cast<T*>(data); }
  HostTensor clone() const;  // host tensors only
  std::string str() const;  // "float32[2, 5]"
};

// A value at run time. Symbolic ints are plain numbers here.
struct RtValue {
  using List = std::vector<RtValue>;
  std::variant<std::monostate, HostTensor, int64_t, double, bool, List> v;

  RtValue() = default;
  RtValue(HostTensor t) : v(std::move(t)) {}  // NOLINT
  RtValue(int64_t x) : v(x) {}                // NOLINT
  RtValue(double x) : v(x) {}                 // NOLINT
  RtValue(bool x) : v(x) {}                   // NOLINT
  RtValue(List l) : v(std::move(l)) {}        // NOLINT
  bool is_none() const { return std::holds_alternative<std::monostate>(v); }
  bool is_tensor() const { return std::holds_alternative<HostTensor>(v); }
  bool is_list() const { return std::holds_alternative<List>(v); }
  const HostTensor& tensor() const;  // throws std::runtime_error naming what it holds otherwise
  const List& list() const;
  int64_t to_int() const;            // int or bool
  double to_double() const;          // int, double or bool
  std::string debug() const;
};

const char* short_name(ir::ScalarType t);  // "f32", "i64", ... as in IR printouts

// Relative error of `got` against `want`: max|got-want| / max(max|want|, tiny). Both converted to
// double; shapes must match (throws std::invalid_argument otherwise).
double relative_error(const HostTensor& got, const HostTensor& want);

}  // namespace kiln::program
