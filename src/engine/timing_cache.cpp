// See timing_cache.h.
#include "engine/timing_cache.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "engine/network_internal.h"

namespace kiln::engine {

namespace {
// The file's format; a file of another version is not read (and not overwritten).
constexpr int kFormat = 1;
constexpr const char* kFormatKey = "kiln_timing_cache";
}  // namespace

TimingCache::TimingCache(std::string path, std::string device_signature)
    : path_(std::move(path)), signature_(std::move(device_signature)) {
  if (path_.empty()) return;
  try {
    if (auto file = read_file()) {
      const auto& devices = (*file)["devices"];
      auto it = devices.find(signature_);
      if (it != devices.end() && it->is_object()) entries_ = *it;
    }
  } catch (const std::exception& e) {
    warn_once(e.what());
    writable_ = false;
  }
  if (detail::debug_logging())
    detail::log_debug("timing cache " + path_ + ": " + std::to_string(entries_.size()) + " choice(s) for " + signature_);
}

std::string TimingCache::configured_path() {
  const char* v = std::getenv("KILN_TIMING_CACHE");
  if (v && *v) {
    const std::string s(v);
    if (s == "off" || s == "0" || s == "none") return "";
    return s;
  }
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::string(xdg) + "/kiln/timing_cache.json";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.cache/kiln/timing_cache.json";
  return "";
}

TimingCache& TimingCache::for_device(const std::string& device_signature) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<TimingCache>> caches;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = caches[device_signature];
  if (!slot) slot = std::make_unique<TimingCache>(configured_path(), device_signature);
  return *slot;
}

std::optional<nlohmann::json> TimingCache::read_file() const {
  std::ifstream in(path_);
  if (!in) return std::nullopt;  // absent: nothing stored yet
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception&) {
    throw std::runtime_error("timing cache " + path_ + " is not JSON; kiln leaves it as it is and keeps choices "
                             "in memory (delete the file, or point KILN_TIMING_CACHE elsewhere)");
  }
  if (!j.is_object() || !j.contains(kFormatKey) || !j.contains("devices") || !j["devices"].is_object())
    throw std::runtime_error("timing cache " + path_ + " is not a kiln timing cache; kiln leaves it as it is and "
                             "keeps choices in memory (point KILN_TIMING_CACHE elsewhere)");
  if (j[kFormatKey] != kFormat)
    throw std::runtime_error("timing cache " + path_ + " has format " + j[kFormatKey].dump() + ", this kiln writes " +
                             std::to_string(kFormat) + "; kiln leaves it as it is (delete it to start a new one)");
  return j;
}

void TimingCache::warn_once(const std::string& what) {
  if (warned_) return;
  warned_ = true;
  std::cerr << "[kiln] warning: " << what << "\n";
}

std::optional<nlohmann::json> TimingCache::find(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return *it;
}

void TimingCache::store(const std::string& key, nlohmann::json choice) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_[key] = choice;
  if (!path_.empty() && writable_) pending_[key] = std::move(choice);
}

size_t TimingCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.size();
}

void TimingCache::flush() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (pending_.empty() || path_.empty() || !writable_) return;
  namespace fs = std::filesystem;
  const std::string tmp = path_ + ".tmp." + std::to_string(::getpid());
  try {
    nlohmann::json file = nlohmann::json{{kFormatKey, kFormat}, {"devices", nlohmann::json::object()}};
    if (auto existing = read_file()) file = std::move(*existing);  // other processes' choices stay
    nlohmann::json& section = file["devices"][signature_];
    if (!section.is_object()) section = nlohmann::json::object();
    for (auto& [key, choice] : pending_.items()) section[key] = choice;
    const fs::path target(path_);
    if (target.has_parent_path()) fs::create_directories(target.parent_path());
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << file.dump(1) << "\n";
      out.close();
      if (!out) throw std::runtime_error("cannot write " + tmp);
    }
    fs::rename(tmp, target);
    pending_ = nlohmann::json::object();
    if (detail::debug_logging())
      detail::log_debug("timing cache " + path_ + ": written, " + std::to_string(section.size()) + " choice(s)");
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    warn_once(std::string("timing cache not saved: ") + e.what());
    writable_ = false;
  }
}

}  // namespace kiln::engine
