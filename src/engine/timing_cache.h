// The tactic choices a backend made by timing (which convolution engine, which GEMM algorithm),
// kept on disk so that a rebuild, or another process on the same machine, does not time again:
// TensorRT's timing cache. Choices depend on the device and the libraries that made them, so the
// file holds one section per device signature (GPU name, SM count, library versions); a section
// made elsewhere is never read for this device.
//
// Where: KILN_TIMING_CACHE=<file>, default $XDG_CACHE_HOME/kiln/timing_cache.json (or
// ~/.cache/kiln/...); KILN_TIMING_CACHE=off keeps choices in memory only. A file kiln cannot read
// as its own is left untouched (a warning says so) and choices then stay in memory.
#pragma once

#include <nlohmann/json.hpp>

#include <mutex>
#include <optional>
#include <string>

namespace kiln::engine {

class TimingCache {
 public:
  // `path` empty: in memory only. Reads the file's section for `device_signature` if there is one.
  TimingCache(std::string path, std::string device_signature);

  // The process's cache for a device (one per signature), at the path KILN_TIMING_CACHE names.
  static TimingCache& for_device(const std::string& device_signature);
  // The path KILN_TIMING_CACHE (or the default) names; empty when off.
  static std::string configured_path();

  // A stored choice for `key` (what the backend recorded), if any.
  std::optional<nlohmann::json> find(const std::string& key) const;
  void store(const std::string& key, nlohmann::json choice);
  // Writes choices stored since the last flush, merged with what other processes wrote meanwhile
  // (written to a temporary file, then renamed over: readers never see half a file). Cheap when
  // nothing is new. I/O failures are warned about once, never thrown: timing again is the cost.
  void flush();

  const std::string& path() const { return path_; }
  size_t size() const;

 private:
  // The file's JSON, or nullopt when it is absent; throws std::runtime_error when it is not ours.
  std::optional<nlohmann::json> read_file() const;
  void warn_once(const std::string& what);

  mutable std::mutex mutex_;
  std::string path_, signature_;
  nlohmann::json entries_ = nlohmann::json::object();  // key -> choice, this device's section
  nlohmann::json pending_ = nlohmann::json::object();  // stored since the last flush
  bool writable_ = true;
  bool warned_ = false;
};

}  // namespace kiln::engine
