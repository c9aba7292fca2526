// Issue 17: hostile or careless files. Sizes from files are multiplied with overflow checks, the
// .kiln loader refuses deep nesting, wrapped weight sizes, out-of-order steps and a missing output
// node before anything runs, .npy shapes parse strictly, FIFOs are refused without blocking, and
// writes replace files atomically (a failed write leaves the old file, errno named).
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "program/file_io.h"
#include "program/load.h"
#include "program/npy.h"
#include "program/program.h"

namespace kiln::program {
namespace {

using nlohmann::json;
const std::string kData = KILN_TEST_DATA;

std::string tmp(const std::string& name) { return ::testing::TempDir() + "/hostile_" + name; }

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

template <class E>
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- sizes ------------------------------------------------------------------------------------

TEST(HostTensor, ByteSizeOverflowThrows) {
  HostTensor t;
  t.dtype = ir::ScalarType::Float;
  t.dims = {int64_t{1} << 62};  // numel fits in int64; 4 bytes each is 2^64, which wrapped to 0
  EXPECT_THROW(t.nbytes(), std::length_error);
  t.dims = {int64_t{1} << 40, 4};
  EXPECT_EQ(t.nbytes(), size_t{1} << 44);
}

// ---- .npy -------------------------------------------------------------------------------------

void write_npy_header(const std::string& path, const std::string& shape, size_t data_bytes) {
  std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  h.append((64 - (10 + h.size() + 1) % 64) % 64, ' ');
  h += '\n';
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  const char len[2] = {static_cast<char>(h.size() & 0xff), static_cast<char>(h.size() >> 8)};
  out.write(len, 2);
  out << h << std::string(data_bytes, '\0');
}

TEST(HostileNpy, ShapesParseStrictly) {
  const std::pair<const char*, const char*> bad[] = {
      {"(2x, 5)", "bad dimension '2x'"}, {"(2,, 5)", "bad 'shape'"}, {"(2 5)", "bad dimension '2 5'"},
      {"(-1, 5)", "bad dimension '-1'"}, {"(, 5)", "bad dimension ''"},
      {"(99999999999999999999, 5)", "overflows 64 bits"},
      {"(4611686018427387904,)", "overflow"},  // 2^62 float32s: the byte size wraps
  };
  for (const auto& [shape, message] : bad) {
    write_npy_header(tmp("shape.npy"), shape, 40);
    const std::string e = error_of<NpyError>([] { read_npy(tmp("shape.npy")); });
    EXPECT_NE(e.find(message), std::string::npos) << shape << ": " << e;
  }
  for (const char* good : {"(2, 5)", "(2,5)", "(10,)", "(10)", "(5, 2, )"}) {
    write_npy_header(tmp("shape.npy"), good, 40);
    EXPECT_EQ(read_npy(tmp("shape.npy")).numel(), 10) << good;
  }
  write_npy_header(tmp("shape.npy"), "()", 4);
  EXPECT_EQ(read_npy(tmp("shape.npy")).dims.size(), 0u);
}

TEST(HostileFiles, FifoIsRefusedWithoutBlocking) {
  const std::string fifo = tmp("fifo");
  std::filesystem::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_NE(error_of<NpyError>([&] { read_npy(fifo); }).find("not a regular file"), std::string::npos);
  EXPECT_NE(error_of<InputError>([&] { CompiledProgram::load(fifo); }).find("not a regular file"), std::string::npos);
  EXPECT_NE(error_of<InputError>([&] { open_model(fifo, {}); }).find("not a regular file"), std::string::npos);
  std::filesystem::remove(fifo);
}

// ---- atomic writes ----------------------------------------------------------------------------

TEST(AtomicWrite, FullDeviceNamesTheErrno) {
  const std::string e = error_of<InputError>([] { write_file_atomic("/dev/full", "abc", 3); });
  EXPECT_NE(e.find("/dev/full: write failed (No space left on device)"), std::string::npos) << e;
  HostTensor t = HostTensor::empty(ir::ScalarType::Float, {4});
  EXPECT_NE(error_of<InputError>([&] { write_npy("/dev/full", t); }).find("No space left"), std::string::npos);
}

TEST(AtomicWrite, FailedWriteLeavesTheOldFile) {
  const std::string dir = tmp("atomic");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/out.kiln";
  write_file_atomic(path, "old contents", 12);
  EXPECT_EQ(slurp(path), "old contents");
  // A file-size limit makes the write fail partway (EFBIG), as a full disk does (ENOSPC).
  struct rlimit old {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  const std::string big(1 << 20, 'x');
  const std::string e = error_of<InputError>([&] { write_file_atomic(path, big.data(), big.size()); });
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, old_handler);
  EXPECT_NE(e.find("out.kiln: write failed (File too large)"), std::string::npos) << e;
  EXPECT_EQ(slurp(path), "old contents");
  size_t files = 0;
  for (const auto& f : std::filesystem::directory_iterator(dir)) files += f.is_regular_file();
  EXPECT_EQ(files, 1u) << "the temporary file was not removed";
  // A successful write replaces the file, with the permissions of the one it replaces.
  ::chmod(path.c_str(), 0640);
  write_file_atomic(path, big.data(), big.size());
  EXPECT_EQ(slurp(path), big);
  struct stat st {};
  ::stat(path.c_str(), &st);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_NE(error_of<InputError>([&] { write_file_atomic(dir, "x", 1); }).find("is a directory"), std::string::npos);
}

// ---- .kiln ------------------------------------------------------------------------------------

// A good .kiln of mlp_dyn (one segment), taken apart into its JSON and blob so a test can edit the
// description and put it back together with correct sizes and checksum (the loader's own checks,
// not the checksum, are under test).
struct KilnParts {
  json description;
  std::string json_text;  // used instead of description when set (JSON that json::dump cannot make)
  std::vector<uint8_t> blob;

  static KilnParts of(const std::vector<uint8_t>& file) {
    KilnParts k;
    uint64_t js = 0, bs = 0;
    std::memcpy(&js, file.data() + 16, 8);
    std::memcpy(&bs, file.data() + 24, 8);
    k.description = json::parse(file.begin() + 32, file.begin() + 32 + static_cast<ptrdiff_t>(js));
    k.blob.assign(file.begin() + 32 + static_cast<ptrdiff_t>(js), file.begin() + 32 + static_cast<ptrdiff_t>(js + bs));
    return k;
  }
  std::vector<uint8_t> bytes(uint32_t version = 1) const {
    const std::string text = json_text.empty() ? description.dump() : json_text;
    std::vector<uint8_t> out(32);
    std::memcpy(out.data(), "KILNPROG", 8);
    const uint32_t flags = 0;
    const uint64_t js = text.size(), bs = blob.size();
    std::memcpy(out.data() + 8, &version, 4);
    std::memcpy(out.data() + 12, &flags, 4);
    std::memcpy(out.data() + 16, &js, 8);
    std::memcpy(out.data() + 24, &bs, 8);
    out.insert(out.end(), text.begin(), text.end());
    out.insert(out.end(), blob.begin(), blob.end());
    uint64_t h = 1469598103934665603ull;  // the .kiln container's FNV-1a basis (serialize.cpp)
    for (uint8_t c : out) h = (h ^ c) * 1099511628211ull;
    out.resize(out.size() + 8);
    std::memcpy(out.data() + out.size() - 8, &h, 8);
    return out;
  }
  std::string load_error(uint32_t version = 1) const {
    const std::vector<uint8_t> b = bytes(version);
    return error_of<FormatError>([&] { CompiledProgram::deserialize(b.data(), b.size()); });
  }
};

class HostileKiln : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    CompileOptions o;
    o.settings.min_block_size = 1;
    // core_aten: the decomposed export, whose ops all convert (no fallback executor is needed here).
    good_ = new std::vector<uint8_t>(open_model(kData + "/mlp_dyn/core_aten.pt2", o).serialize());
  }
  static void TearDownTestSuite() { delete good_; }
  KilnParts parts() const { return KilnParts::of(*good_); }
  static std::vector<uint8_t>* good_;
};
std::vector<uint8_t>* HostileKiln::good_ = nullptr;

TEST_F(HostileKiln, RepackedGoodFileLoadsAndRuns) {
  const std::vector<uint8_t> b = parts().bytes();
  CompiledProgram p = CompiledProgram::deserialize(b.data(), b.size());
  const HostTensor x = read_npy(kData + "/mlp_dyn/input_0.npy");
  EXPECT_LT(relative_error(p.run({x}).at(0), read_npy(kData + "/mlp_dyn/output_0.npy")), 1e-3);
}

TEST_F(HostileKiln, WeightSizesAndOffsetsAreCheckedBeforeAnyView) {
  const int kF32 = static_cast<int>(ir::ScalarType::Float);
  KilnParts k = parts();
  // A weight of the program itself (fallback nodes read these): add one whose size wraps.
  k.description["weights"].push_back({{"name", "w"}, {"dtype", kF32}, {"dims", {int64_t{1} << 62}}, {"offset", 0}, {"size", 0}});
  EXPECT_NE(k.load_error().find("weight w has dims whose size overflows"), std::string::npos) << k.load_error();
  k.description["weights"].back() = {{"name", "w"}, {"dtype", kF32}, {"dims", {16}}, {"offset", ~uint64_t{0} - 63}, {"size", 64}};
  EXPECT_NE(k.load_error().find("weight w lies outside the file"), std::string::npos) << k.load_error();
  k.description["weights"].back() = {{"name", "w"}, {"dtype", kF32}, {"dims", {1}}, {"offset", 4}, {"size", 4}};
  EXPECT_NE(k.load_error().find("not 64-byte aligned"), std::string::npos) << k.load_error();
}

TEST_F(HostileKiln, DeepNestingIsRefusedBeforeParsing) {
  for (const auto& [open, close] : {std::pair<std::string, std::string>{"{\"x\": ", "}"}, {"[", "]"}}) {
    KilnParts k = parts();
    k.description["graph"][0]["args"].push_back("DEEP");
    std::string text = k.description.dump();
    std::string deep;
    for (int i = 0; i < 200000; ++i) deep += open;
    deep += "null";
    for (int i = 0; i < 200000; ++i) deep += close;
    text.replace(text.find("\"DEEP\""), 6, deep);
    k.json_text = text;
    EXPECT_NE(k.load_error().find("JSON nested 200004 levels deep"), std::string::npos) << k.load_error().substr(0, 200);
  }
}

TEST_F(HostileKiln, ScheduleIsCheckedAtLoad) {
  {
    KilnParts k = parts();
    json& g = k.description["graph"];
    g.erase(g.end() - 1);  // the output node
    EXPECT_NE(k.load_error().find("no output node"), std::string::npos) << k.load_error();
  }
  {
    KilnParts k = parts();
    k.description["steps"] = json::array();  // the segment never runs: the output reads nothing
    EXPECT_NE(k.load_error().find("the output reads %"), std::string::npos) << k.load_error();
  }
  {
    KilnParts k = parts();
    k.description["segments"][0]["inputs"] = {"nowhere"};
    EXPECT_NE(k.load_error().find("_run_on_acc_0: inputs [nowhere] do not match its plan's [x]"), std::string::npos) << k.load_error();
  }
  {
    KilnParts k = parts();
    k.description["inputs"][0]["meta"]["sizes"] = json(std::vector<int>(100, 1));
    EXPECT_NE(k.load_error().find("rank 100"), std::string::npos) << k.load_error();
  }
  {
    KilnParts k = parts();
    k.description["ranges"]["s77"] = {8, 4, 2};
    EXPECT_NE(k.load_error().find("bad range"), std::string::npos) << k.load_error();
  }
}

TEST_F(HostileKiln, OtherVersionSaysHowToRebuild) {
  const std::string e = parts().load_error(3);
  EXPECT_NE(e.find("version 3 is not supported (this kiln reads versions 1 to 2)"), std::string::npos) << e;
  EXPECT_NE(e.find("recompile the model with this kiln"), std::string::npos) << e;
}

}  // namespace
}  // namespace kiln::program
