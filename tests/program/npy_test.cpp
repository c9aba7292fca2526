#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "program/npy.h"
#include "program/program.h"

namespace kiln::program {
namespace {

std::string tmp(const std::string& name) { return ::testing::TempDir() + "/" + name; }

template <class T>
void round_trip(ir::ScalarType dtype, std::vector<int64_t> dims) {
  HostTensor t = HostTensor::empty(dtype, dims);
  for (int64_t i = 0; i < t.numel(); ++i) t.as<T>()[i] = static_cast<T>(i % 7);
  const std::string path = tmp("rt.npy");
  write_npy(path, t);
  HostTensor r = read_npy(path);
  EXPECT_EQ(r.dtype, dtype);
  EXPECT_EQ(r.dims, dims);
  for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(r.as<T>()[i], t.as<T>()[i]);
}

TEST(Npy, RoundTripsEveryDtype) {
  round_trip<float>(ir::ScalarType::Float, {2, 3, 4});
  round_trip<uint16_t>(ir::ScalarType::Half, {5});
  round_trip<int64_t>(ir::ScalarType::Long, {3, 1});
  round_trip<int32_t>(ir::ScalarType::Int, {});
  round_trip<uint8_t>(ir::ScalarType::Bool, {4, 0});
}

TEST(Npy, ReadsNumpyFixture) {
  HostTensor t = read_npy(std::string(KILN_TEST_DATA) + "/gelu_tanh/input_0.npy");
  EXPECT_EQ(t.dtype, ir::ScalarType::Float);
  EXPECT_EQ(t.dims, (std::vector<int64_t>{2, 5}));
}

TEST(Npy, RefusesBadFiles) {
  EXPECT_THROW(read_npy(tmp("does_not_exist.npy")), NpyError);
  {
    std::ofstream(tmp("bad.npy")) << "not numpy at all";
  }
  EXPECT_THROW(read_npy(tmp("bad.npy")), NpyError);
  // A header claiming a huge shape over a few bytes is refused before any allocation.
  {
    std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 100000), }";
    h.append(64 - (10 + h.size() + 1) % 64, ' ');
    h += '\n';
    std::ofstream out(tmp("huge.npy"), std::ios::binary);
    out.write("\x93NUMPY\x01\x00", 8);
    const char len[2] = {static_cast<char>(h.size() & 0xff), static_cast<char>(h.size() >> 8)};
    out.write(len, 2);
    out << h << "abcd";
  }
  EXPECT_THROW(read_npy(tmp("huge.npy")), NpyError);
  {
    std::string h = "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }";
    h.append(64 - (10 + h.size() + 1) % 64, ' ');
    h += '\n';
    std::ofstream out(tmp("complex.npy"), std::ios::binary);
    out.write("\x93NUMPY\x01\x00", 8);
    const char len[2] = {static_cast<char>(h.size() & 0xff), static_cast<char>(h.size() >> 8)};
    out.write(len, 2);
    out << h << "abcdefgh";
  }
  try {
    read_npy(tmp("complex.npy"));
    FAIL();
  } catch (const NpyError& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported dtype '<c8'"), std::string::npos) << e.what();
  }
}

TEST(DynamicSpec, ParsesAndRefuses) {
  DynamicSpec d = DynamicSpec::parse("x:0:1:8:64");
  EXPECT_EQ(d.input, "x");
  EXPECT_EQ(d.dim, 0);
  EXPECT_EQ(d.min, 1);
  EXPECT_EQ(d.opt, 8);
  EXPECT_EQ(d.max, 64);
  EXPECT_THROW(DynamicSpec::parse("x:0:1:8"), InputError);
  EXPECT_THROW(DynamicSpec::parse("x:a:1:8:9"), InputError);
  EXPECT_THROW(DynamicSpec::parse("x:0:9:8:64"), InputError);
}

TEST(Program, CorruptedBytesAreRefused) {
  EXPECT_THROW(CompiledProgram::deserialize(reinterpret_cast<const uint8_t*>("KILNPROG"), 8), FormatError);
  std::vector<uint8_t> junk(100, 7);
  EXPECT_THROW(CompiledProgram::deserialize(junk.data(), junk.size()), FormatError);
  EXPECT_THROW(CompiledProgram::load(tmp("missing.kiln")), InputError);
}

}  // namespace
}  // namespace kiln::program
