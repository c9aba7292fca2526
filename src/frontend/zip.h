// A small, hardened reader for the zip archives torch.export writes: STORED entries only, located
// through the central directory (ZIP64 aware). The file is memory-mapped; entries are views of
// the mapping, never copies. Every offset and size read from the file is bounds-checked.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::frontend {

struct ZipError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Bytes of a whole file, memory-mapped (or held in memory), kept alive by shared ownership.
class FileBytes {
 public:
  // Throws ZipError naming the path when it cannot be opened or mapped.
  static std::shared_ptr<const FileBytes> map_file(const std::string& path);
  static std::shared_ptr<const FileBytes> copy_of(const void* data, size_t size);
  ~FileBytes();
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  FileBytes() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::vector<uint8_t> buffer_;
};

struct ZipEntry {
  std::string name;
  uint64_t data_offset = 0;  // of the entry's bytes in the file
  uint64_t size = 0;
  uint32_t crc32 = 0;
};

class ZipReader {
 public:
  // Reads the central directory. `label` names the file in error messages.
  ZipReader(std::shared_ptr<const FileBytes> bytes, std::string label);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;
  // The entry's bytes (a view of the file). With `check_crc`, verifies the CRC-32 first.
  std::string_view read(const ZipEntry& e, bool check_crc = false) const;
  const std::shared_ptr<const FileBytes>& bytes() const { return bytes_; }
  const std::string& label() const { return label_; }

 private:
  [[noreturn]] void fail(const std::string& what) const;
  std::shared_ptr<const FileBytes> bytes_;
  std::string label_;
  std::vector<ZipEntry> entries_;
  std::map<std::string, size_t> by_name_;
};

uint32_t crc32(const uint8_t* data, size_t size);

}  // namespace kiln::frontend
