// The on-disk timing cache (engine/timing_cache.h): choices survive the process, stay per device
// signature, merge with other processes' choices, and a file kiln does not understand is never
// overwritten.
#include "engine/timing_cache.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace fs = std::filesystem;
using kiln::engine::TimingCache;

namespace {

class TimingCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kiln_timing_cache_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name = "cache.json") const { return (dir_ / name).string(); }
  static std::string read(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  fs::path dir_;
};

TEST_F(TimingCacheTest, ChoicesSurviveTheProcess) {
  const std::string path = file("sub/dir/cache.json");  // parent folders are made
  {
    TimingCache c(path, "GPU A");
    EXPECT_FALSE(c.find("conv 1").has_value());
    c.store("conv 1", {{"choice", "graph"}, {"engine", 5}});
    c.store("gemm 2", {{"algo", "00ff"}});
    c.flush();
  }
  TimingCache again(path, "GPU A");
  EXPECT_EQ(again.size(), 2u);
  auto got = again.find("conv 1");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ((*got)["engine"], 5);
  EXPECT_EQ((*got)["choice"], "graph");
}

TEST_F(TimingCacheTest, ChoicesAreKeptPerDeviceSignature) {
  const std::string path = file();
  {
    TimingCache a(path, "GPU A");
    a.store("conv 1", {{"choice", "legacy"}});
    a.flush();
    TimingCache b(path, "GPU B");
    EXPECT_FALSE(b.find("conv 1").has_value()) << "a choice made on another device must not be read";
    b.store("conv 1", {{"choice", "kiln"}});
    b.flush();
  }
  EXPECT_EQ((*TimingCache(path, "GPU A").find("conv 1"))["choice"], "legacy");
  EXPECT_EQ((*TimingCache(path, "GPU B").find("conv 1"))["choice"], "kiln");
}

TEST_F(TimingCacheTest, ProcessesWritingTheSameFileMergeTheirChoices) {
  const std::string path = file();
  TimingCache first(path, "GPU A"), second(path, "GPU A");  // both read the (absent) file first
  first.store("conv 1", {{"choice", "legacy"}});
  second.store("conv 2", {{"choice", "kiln"}});
  first.flush();
  second.flush();
  TimingCache reader(path, "GPU A");
  EXPECT_TRUE(reader.find("conv 1").has_value());
  EXPECT_TRUE(reader.find("conv 2").has_value());
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));
}

TEST_F(TimingCacheTest, AFileThatIsNotAKilnCacheIsLeftAlone) {
  for (const std::string content : {std::string("not json {"), std::string("{\"something\": \"else\"}"),
                                    std::string("{\"kiln_timing_cache\": 99, \"devices\": {}}")}) {
    const std::string path = file();
    { std::ofstream(path) << content; }
    testing::internal::CaptureStderr();
    TimingCache c(path, "GPU A");
    c.store("conv 1", {{"choice", "legacy"}});
    c.flush();
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find(path), std::string::npos) << "the warning names the file: " << err;
    EXPECT_EQ(read(path), content) << "the user's file was changed";
    EXPECT_TRUE(c.find("conv 1").has_value()) << "choices still held in memory";
  }
}

TEST_F(TimingCacheTest, AnUnwritablePlaceWarnsAndKeepsChoicesInMemory) {
  const std::string blocker = file("a_file");
  { std::ofstream(blocker) << "x"; }
  TimingCache c(blocker + "/cache.json", "GPU A");  // its parent is a file: cannot be made
  c.store("conv 1", {{"choice", "legacy"}});
  testing::internal::CaptureStderr();
  EXPECT_NO_THROW(c.flush());
  EXPECT_NE(testing::internal::GetCapturedStderr().find("not saved"), std::string::npos);
  EXPECT_TRUE(c.find("conv 1").has_value());
}

TEST_F(TimingCacheTest, AnEmptyPathKeepsChoicesInMemoryOnly) {
  TimingCache c("", "GPU A");
  c.store("conv 1", {{"choice", "legacy"}});
  c.flush();
  EXPECT_TRUE(c.find("conv 1").has_value());
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(TimingCacheTest, ThePathComesFromTheEnvironment) {
  const char* saved = std::getenv("KILN_TIMING_CACHE");
  const std::string restore = saved ? saved : "";
  ::setenv("KILN_TIMING_CACHE", "off", 1);
  EXPECT_EQ(TimingCache::configured_path(), "");
  ::setenv("KILN_TIMING_CACHE", file().c_str(), 1);
  EXPECT_EQ(TimingCache::configured_path(), file());
  ::unsetenv("KILN_TIMING_CACHE");
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const std::string xdg_restore = xdg ? xdg : "";
  ::setenv("XDG_CACHE_HOME", dir_.c_str(), 1);
  EXPECT_EQ(TimingCache::configured_path(), (dir_ / "kiln/timing_cache.json").string());
  if (xdg) ::setenv("XDG_CACHE_HOME", xdg_restore.c_str(), 1);
  else ::unsetenv("XDG_CACHE_HOME");
  if (saved) ::setenv("KILN_TIMING_CACHE", restore.c_str(), 1);
}

}  // namespace
