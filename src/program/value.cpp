#include "program/value.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

namespace kiln::program {

namespace {
int64_t checked_numel(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0) throw std::length_error("negative dimension in tensor shape");
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) throw std::length_error("tensor size overflows");
    n *= d;
  }
  return n;
}
}  // namespace

HostTensor HostTensor::empty(ir::ScalarType dtype, std::vector<int64_t> dims) {
  HostTensor t;
  t.dtype = dtype;
  const int64_t n = checked_numel(dims);
  const size_t es = std::max<size_t>(ir::element_size(dtype), 1);
  if (n > 0 && static_cast<uint64_t>(n) > (uint64_t{1} << 40) / es) throw std::length_error("tensor larger than 1 TiB");
  t.dims = std::move(dims);
  const size_t bytes = std::max<size_t>(static_cast<size_t>(n) * es, 1);
  // 64-byte aligned so BLAS / vector kernels get aligned rows when they read it in place.
  auto* p = static_cast<uint8_t*>(::operator new[](bytes, std::align_val_t{64}));
  std::memset(p, 0, bytes);
  t.owner = std::shared_ptr<void>(p, [](void* q) { ::operator delete[](q, std::align_val_t{64}); });
  t.data = p;
  return t;
}

HostTensor HostTensor::view(ir::ScalarType dtype, std::vector<int64_t> dims, const void* data,
                            std::shared_ptr<const void> owner) {
  HostTensor t;
  t.dtype = dtype;
  t.dims = std::move(dims);
  t.data = const_cast<uint8_t*>(static_cast<const uint8_t*>(data));  // program values are never written in place
  t.owner = std::const_pointer_cast<void>(std::move(owner));
  return t;
}

int64_t HostTensor::numel() const { return checked_numel(dims); }

size_t HostTensor::nbytes() const {
  size_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(numel()), uint64_t{ir::element_size(dtype)}, &bytes))
    throw std::length_error("tensor byte size overflows");
  return bytes;
}

HostTensor HostTensor::clone() const {
  if (device != engine::DeviceKind::kCPU) throw std::logic_error("clone() of a tensor in device memory");
  HostTensor t = empty(dtype, dims);
  if (nbytes()) std::memcpy(t.data, data, nbytes());
  return t;
}

std::string HostTensor::str() const {
  std::ostringstream os;
  os << ir::to_string(dtype) << "[";
  for (size_t i = 0; i < dims.size(); ++i) os << (i ? ", " : "") << dims[i];
  os << "]";
  return os.str();
}

const HostTensor& RtValue::tensor() const {
  if (!is_tensor()) throw std::runtime_error("expected a tensor, got " + debug());
  return std::get<HostTensor>(v);
}
const RtValue::List& RtValue::list() const {
  if (!is_list()) throw std::runtime_error("expected a list, got " + debug());
  return std::get<List>(v);
}
int64_t RtValue::to_int() const {
  if (auto* i = std::get_if<int64_t>(&v)) return *i;
  if (auto* b = std::get_if<bool>(&v)) return *b;
  throw std::runtime_error("expected an int, got " + debug());
}
double RtValue::to_double() const {
  if (auto* d = std::get_if<double>(&v)) return *d;
  return static_cast<double>(to_int());
}

std::string RtValue::debug() const {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>) return "None";
        else if constexpr (std::is_same_v<T, HostTensor>) return "tensor " + x.str();
        else if constexpr (std::is_same_v<T, bool>) return x ? "True" : "False";
        else if constexpr (std::is_same_v<T, List>) {
          std::string s = "[";
          for (size_t i = 0; i < x.size(); ++i) s += (i ? ", " : "") + x[i].debug();
          return s + "]";
        } else {
          std::ostringstream os;
          os << x;
          return os.str();
        }
      },
      v);
}

const char* short_name(ir::ScalarType t) {
  using S = ir::ScalarType;
  switch (t) {
    case S::Float: return "f32";
    case S::Half: return "f16";
    case S::BFloat16: return "bf16";
    case S::Double: return "f64";
    case S::Long: return "i64";
    case S::Int: return "i32";
    case S::Short: return "i16";
    case S::Char: return "i8";
    case S::Byte: return "u8";
    case S::Bool: return "b8";
    default: return ir::to_string(t);
  }
}

namespace {
double load_as_double(const HostTensor& t, int64_t i) {
  using S = ir::ScalarType;
  switch (t.dtype) {
    case S::Float: return t.as<float>()[i];
    case S::Double: return t.as<double>()[i];
    case S::Long: return static_cast<double>(t.as<int64_t>()[i]);
    case S::Int: return t.as<int32_t>()[i];
    case S::Short: return t.as<int16_t>()[i];
    case S::Char: return t.as<int8_t>()[i];
    case S::Byte: return t.as<uint8_t>()[i];
    case S::Bool: return t.as<uint8_t>()[i] != 0;
    case S::Half: {  // IEEE binary16 -> double
      uint16_t h = t.as<uint16_t>()[i];
      int e = (h >> 10) & 0x1f, m = h & 0x3ff;
      double v = e == 0 ? std::ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp(m + 1024, e - 25);
      return (h & 0x8000) ? -v : v;
    }
    case S::BFloat16: {
      uint32_t bits = uint32_t{t.as<uint16_t>()[i]} << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    default: throw std::invalid_argument(std::string("cannot compare tensors of dtype ") + ir::to_string(t.dtype));
  }
}
}  // namespace

double relative_error(const HostTensor& got, const HostTensor& want) {
  if (got.dims != want.dims)
    throw std::invalid_argument("shape mismatch: got " + got.str() + ", expected " + want.str());
  double max_diff = 0, max_ref = 0;
  for (int64_t i = 0, n = want.numel(); i < n; ++i) {
    const double a = load_as_double(got, i), b = load_as_double(want, i);
    if (std::isnan(a) != std::isnan(b)) return INFINITY;
    if (std::isnan(a)) continue;
    if (std::isinf(a) || std::isinf(b)) {
      if (a != b) return INFINITY;
      continue;
    }
    max_diff = std::max(max_diff, std::abs(a - b));
    max_ref = std::max(max_ref, std::abs(b));
  }
  return max_diff / std::max(max_ref, 1e-12);
}

}  // namespace kiln::program
