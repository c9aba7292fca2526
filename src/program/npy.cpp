#include "program/npy.h"

#include "program/file_io.h"
#include "program/program.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace kiln::program {

namespace {

struct DescrEntry {
  const char* descr;
  ir::ScalarType dtype;
};
// numpy's dtype.str for each dtype kiln reads; '|' for one-byte types, '<' little-endian.
constexpr DescrEntry kDescrs[] = {
    {"<f4", ir::ScalarType::Float}, {"<f2", ir::ScalarType::Half},  {"<f8", ir::ScalarType::Double},
    {"<i8", ir::ScalarType::Long},  {"<i4", ir::ScalarType::Int},   {"<i2", ir::ScalarType::Short},
    {"|i1", ir::ScalarType::Char},  {"|u1", ir::ScalarType::Byte},  {"|b1", ir::ScalarType::Bool},
};

// Value of `'key': <value>` in the header dict, as raw text up to the next top-level ',' or '}'.
std::string header_field(const std::string& h, const std::string& key) {
  size_t p = h.find("'" + key + "'");
  if (p == std::string::npos) return "";
  p = h.find(':', p);
  if (p == std::string::npos) return "";
  ++p;
  int depth = 0;
  size_t e = p;
  for (; e < h.size(); ++e) {
    char c = h[e];
    if (c == '(' || c == '[') ++depth;
    else if (c == ')' || c == ']') --depth;
    else if ((c == ',' || c == '}') && depth == 0) break;
  }
  std::string v = h.substr(p, e - p);
  const auto b = v.find_first_not_of(" \t");
  const auto f = v.find_last_not_of(" \t");
  return b == std::string::npos ? "" : v.substr(b, f - b + 1);
}

}  // namespace

HostTensor read_npy(const std::string& path) {
  try {
    require_regular_file(path);  // a FIFO would block the open below
  } catch (const InputError& e) {
    throw NpyError(e.what());
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw NpyError(path + (std::filesystem::exists(path) ? ": cannot open file" : ": no such file"));
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    throw NpyError(path + ": not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(magic[6]);
  uint64_t header_len = 0;
  if (major == 1) {
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) throw NpyError(path + ": truncated header");
    header_len = b[0] | (b[1] << 8);
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) throw NpyError(path + ": truncated header");
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (uint64_t{b[3]} << 24);
  } else {
    throw NpyError(path + ": unsupported .npy version " + std::to_string(major));
  }
  if (header_len > (1 << 20)) throw NpyError(path + ": header too large (" + std::to_string(header_len) + " bytes)");
  if (header_len > file_size) throw NpyError(path + ": truncated header (file is " + std::to_string(file_size) + " bytes)");
  std::string h(header_len, '\0');
  if (!in.read(h.data(), static_cast<std::streamsize>(header_len))) throw NpyError(path + ": truncated header");

  std::string descr = header_field(h, "descr");
  if (descr.size() < 2) throw NpyError(path + ": header has no 'descr'");
  descr = descr.substr(1, descr.size() - 2);  // strip quotes
  if (descr == "=f4" || descr == "=f2" || descr == "=f8" || descr == "=i8" || descr == "=i4" || descr == "=i2")
    descr[0] = '<';  // native order on every machine kiln runs on
  if (descr == "<b1" || descr == "=b1") descr = "|b1";
  if (descr == "<u1" || descr == "=u1") descr = "|u1";
  if (descr == "<i1" || descr == "=i1") descr = "|i1";
  const DescrEntry* entry = nullptr;
  for (const auto& d : kDescrs)
    if (descr == d.descr) entry = &d;
  if (!entry)
    throw NpyError(path + ": unsupported dtype '" + descr +
                   "' (kiln reads float32, float16, float64, int64, int32, int16, int8, uint8, bool)");
  if (header_field(h, "fortran_order") != "False")
    throw NpyError(path + ": Fortran-ordered arrays are not supported (save with np.ascontiguousarray)");

  std::string shape = header_field(h, "shape");
  if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')') throw NpyError(path + ": bad 'shape' in header");
  // numpy writes "()", "(5,)" and "(2, 5)": integers separated by commas (a trailing one allowed).
  // Anything else ("(2x, 5)", "(2,, 5)", "(2 5)", "(-1,)") is refused rather than read loosely.
  std::vector<int64_t> dims;
  const std::string inner = shape.substr(1, shape.size() - 2);
  size_t pos = 0;
  auto skip_spaces = [&] {
    while (pos < inner.size() && inner[pos] == ' ') ++pos;
  };
  skip_spaces();
  while (pos < inner.size()) {
    const size_t start = pos;
    while (pos < inner.size() && inner[pos] >= '0' && inner[pos] <= '9') ++pos;
    const size_t end = inner.find(',', start);
    const std::string item = inner.substr(start, end == std::string::npos ? std::string::npos : end - start);
    const auto bad_dim = [&] { return NpyError(path + ": bad dimension '" + item + "' in shape " + shape); };
    if (pos == start) throw bad_dim();
    int64_t v = 0;
    for (size_t i = start; i < pos; ++i)
      if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, inner[i] - '0', &v))
        throw NpyError(path + ": dimension " + item + " in shape overflows 64 bits");
    dims.push_back(v);
    skip_spaces();
    if (pos == inner.size()) break;
    if (inner[pos] != ',') throw bad_dim();
    ++pos;
    skip_spaces();
    if (pos < inner.size() && inner[pos] == ',') throw NpyError(path + ": bad 'shape' in header: " + shape);
  }
  if (dims.size() > 16) throw NpyError(path + ": rank " + std::to_string(dims.size()) + " is too large");

  const uint64_t data_offset = static_cast<uint64_t>(in.tellg());
  HostTensor probe;
  probe.dtype = entry->dtype;
  probe.dims = dims;
  uint64_t want = 0;
  try {
    want = probe.nbytes();
  } catch (const std::exception& e) {
    throw NpyError(path + ": " + e.what());
  }
  if (file_size - data_offset < want)  // checked before allocating: a hostile shape cannot make us allocate
    throw NpyError(path + ": truncated data (" + std::to_string(file_size - data_offset) + " bytes, shape needs " +
                   std::to_string(want) + ")");
  HostTensor t = HostTensor::empty(entry->dtype, dims);
  if (want && !in.read(reinterpret_cast<char*>(t.data), static_cast<std::streamsize>(want)))
    throw NpyError(path + ": truncated data");
  return t;
}

void write_npy(const std::string& path, const HostTensor& t) {
  const char* descr = nullptr;
  for (const auto& d : kDescrs)
    if (d.dtype == t.dtype) descr = d.descr;
  if (!descr) throw NpyError(path + ": cannot write dtype " + std::string(ir::to_string(t.dtype)) + " to .npy");
  std::string shape = "(";
  for (size_t i = 0; i < t.dims.size(); ++i) shape += std::to_string(t.dims[i]) + (t.dims.size() == 1 ? "," : i + 1 < t.dims.size() ? ", " : "");
  shape += ")";
  std::string h = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad so that magic(6)+version(2)+len(2)+header is a multiple of 64, newline-terminated.
  const size_t total = 10 + h.size() + 1;
  h.append((64 - total % 64) % 64, ' ');
  h += '\n';
  std::string bytes = "\x93NUMPY\x01";
  bytes += '\0';
  bytes += static_cast<char>(h.size() & 0xff);
  bytes += static_cast<char>(h.size() >> 8);
  bytes += h;
  bytes.append(reinterpret_cast<const char*>(t.data), t.nbytes());
  write_file_atomic(path, bytes.data(), bytes.size());  // an old file survives a failed write
}

}  // namespace kiln::program
