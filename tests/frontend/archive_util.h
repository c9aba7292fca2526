// Test helpers: read a fixture archive's entries and write a (possibly modified) STORED zip back,
// laid out as torch.export writes it (prefix folder, 64-byte aligned data, ZIP64 records).
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "frontend/zip.h"

namespace testutil {

using Bytes = std::vector<uint8_t>;

inline Bytes read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}

inline void write_file(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// Entries in archive order, names with their prefix.
struct Archive {
  std::vector<std::pair<std::string, std::string>> entries;

  static Archive read(const Bytes& bytes) {
    auto fb = kiln::frontend::FileBytes::copy_of(bytes.data(), bytes.size());
    kiln::frontend::ZipReader zr(fb, "fixture");
    Archive a;
    for (const auto& e : zr.entries()) a.entries.emplace_back(e.name, std::string(zr.read(e)));
    return a;
  }
  // The entry whose name ends with `suffix` (e.g. "models/model.json").
  std::string* find(const std::string& suffix) {
    for (auto& [n, d] : entries)
      if (n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0) return &d;
    return nullptr;
  }
  void remove(const std::string& suffix) {
    for (auto it = entries.begin(); it != entries.end(); ++it)
      if (it->first.size() >= suffix.size() &&
          it->first.compare(it->first.size() - suffix.size(), suffix.size(), suffix) == 0) {
        entries.erase(it);
        return;
      }
  }

  Bytes write() const {
    Bytes out, cd;
    auto put16 = [](Bytes& b, uint16_t v) { b.push_back(v & 0xFF); b.push_back(v >> 8); };
    auto put32 = [&](Bytes& b, uint32_t v) { put16(b, v & 0xFFFF); put16(b, v >> 16); };
    auto put64 = [&](Bytes& b, uint64_t v) { put32(b, v & 0xFFFFFFFF); put32(b, v >> 32); };
    for (const auto& [name, data] : entries) {
      const uint32_t offset = static_cast<uint32_t>(out.size());
      const uint32_t crc = kiln::frontend::crc32(reinterpret_cast<const uint8_t*>(data.data()), data.size());
      size_t extra = (64 - (out.size() + 30 + name.size() + 4) % 64) % 64 + 4;  // align data to 64
      put32(out, 0x04034b50); put16(out, 20); put16(out, 0x0808); put16(out, 0); put16(out, 0); put16(out, 0);
      put32(out, 0); put32(out, 0); put32(out, 0);
      put16(out, static_cast<uint16_t>(name.size())); put16(out, static_cast<uint16_t>(extra));
      out.insert(out.end(), name.begin(), name.end());
      put16(out, 0x4246); put16(out, static_cast<uint16_t>(extra - 4));
      out.insert(out.end(), extra - 4, 'Z');
      out.insert(out.end(), data.begin(), data.end());
      put32(cd, 0x02014b50); put16(cd, 20); put16(cd, 20); put16(cd, 0x0808); put16(cd, 0); put16(cd, 0);
      put16(cd, 0); put32(cd, crc); put32(cd, static_cast<uint32_t>(data.size()));
      put32(cd, static_cast<uint32_t>(data.size())); put16(cd, static_cast<uint16_t>(name.size()));
      put16(cd, 0); put16(cd, 0); put16(cd, 0); put16(cd, 0); put32(cd, 0); put32(cd, offset);
      cd.insert(cd.end(), name.begin(), name.end());
    }
    const uint64_t cd_offset = out.size();
    out.insert(out.end(), cd.begin(), cd.end());
    const uint64_t z64 = out.size();
    put32(out, 0x06064b50); put64(out, 44); put16(out, 45); put16(out, 45); put32(out, 0); put32(out, 0);
    put64(out, entries.size()); put64(out, entries.size()); put64(out, cd.size()); put64(out, cd_offset);
    put32(out, 0x07064b50); put32(out, 0); put64(out, z64); put32(out, 1);
    put32(out, 0x06054b50); put16(out, 0); put16(out, 0); put16(out, static_cast<uint16_t>(entries.size()));
    put16(out, static_cast<uint16_t>(entries.size())); put32(out, static_cast<uint32_t>(cd.size()));
    put32(out, static_cast<uint32_t>(cd_offset)); put16(out, 0);
    return out;
  }
};

}  // namespace testutil
