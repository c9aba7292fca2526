#include "frontend/zip.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace kiln::frontend {
namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kEocdSize = 22;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kLocalHeaderSize = 30;
// More entries than any real archive has; bounds the work a hostile directory can ask for.
constexpr uint64_t kMaxEntries = 1u << 20;

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) { return rd16(p) | (static_cast<uint32_t>(rd16(p + 2)) << 16); }
uint64_t rd64(const uint8_t* p) { return rd32(p) | (static_cast<uint64_t>(rd32(p + 4)) << 32); }

// True when [off, off + len) lies inside a buffer of `size` bytes (overflow-safe).
bool fits(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

}  // namespace

uint32_t crc32(const uint8_t* data, size_t size) {
  static const auto table = make_crc_table();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// ---------------------------------------------------------------------------------------------

std::shared_ptr<const FileBytes> FileBytes::map_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer; fstat refuses it below.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw ZipError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw ZipError(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ZipError(path + ": not a regular file");
  }
  std::shared_ptr<FileBytes> fb(new FileBytes());
  if (st.st_size == 0) {  // mmap of 0 bytes fails; an empty file is simply "not a zip" later
    ::close(fd);
    return fb;
  }
  void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);  // the mapping stays valid without the descriptor
  if (p == MAP_FAILED) throw ZipError(path + ": cannot map: " + std::strerror(err));
  fb->data_ = static_cast<const uint8_t*>(p);
  fb->size_ = static_cast<size_t>(st.st_size);
  fb->mapped_ = true;
  return fb;
}

std::shared_ptr<const FileBytes> FileBytes::copy_of(const void* data, size_t size) {
  std::shared_ptr<FileBytes> fb(new FileBytes());
  // At least 64-byte aligned storage, as a mapping would be, so weight views stay aligned.
  fb->buffer_.resize(size + 64);
  uint8_t* base = fb->buffer_.data();
  size_t pad = (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64;
  if (size) std::memcpy(base + pad, data, size);
  fb->data_ = base + pad;
  fb->size_ = size;
  return fb;
}

FileBytes::~FileBytes() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

// ---------------------------------------------------------------------------------------------

void ZipReader::fail(const std::string& what) const { throw ZipError(label_ + ": " + what); }

ZipReader::ZipReader(std::shared_ptr<const FileBytes> bytes, std::string label)
    : bytes_(std::move(bytes)), label_(std::move(label)) {
  const uint8_t* d = bytes_->data();
  const uint64_t n = bytes_->size();
  if (n < kEocdSize) fail("not a zip archive (" + std::to_string(n) + " bytes, too short)");

  // The end-of-central-directory record: the last signature within the final 64 KiB + 22 bytes.
  uint64_t eocd = UINT64_MAX;
  const uint64_t lowest = n > kEocdSize + 0xFFFF ? n - kEocdSize - 0xFFFF : 0;
  for (uint64_t pos = n - kEocdSize + 1; pos-- > lowest;) {
    if (rd32(d + pos) == kEocdSig && pos + kEocdSize + rd16(d + pos + 20) <= n) {
      eocd = pos;
      break;
    }
  }
  if (eocd == UINT64_MAX) fail("not a zip archive (no end-of-central-directory record)");

  uint64_t count = rd16(d + eocd + 10);
  uint64_t cd_size = rd32(d + eocd + 12);
  uint64_t cd_offset = rd32(d + eocd + 16);
  if (rd16(d + eocd + 4) != 0 || rd16(d + eocd + 6) != 0) fail("multi-disk zip archives are not supported");

  // ZIP64: the locator sits right before the EOCD and points at the ZIP64 EOCD record.
  if (eocd >= 20 && rd32(d + eocd - 20) == kZip64LocatorSig) {
    const uint64_t z64 = rd64(d + eocd - 20 + 8);
    if (!fits(z64, 56, n) || rd32(d + z64) != kZip64EocdSig) fail("broken ZIP64 end-of-central-directory locator");
    count = rd64(d + z64 + 32);
    cd_size = rd64(d + z64 + 40);
    cd_offset = rd64(d + z64 + 48);
  } else if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
    fail("ZIP64 archive without a ZIP64 end-of-central-directory record");
  }
  if (!fits(cd_offset, cd_size, n)) fail("central directory lies outside the file");
  if (count > kMaxEntries || count * kCentralHeaderSize > cd_size)
    fail("central directory claims " + std::to_string(count) + " entries in " + std::to_string(cd_size) + " bytes");

  entries_.reserve(count);
  uint64_t pos = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    const std::string where = "central directory entry " + std::to_string(i);
    if (!fits(pos, kCentralHeaderSize, cd_end) || rd32(d + pos) != kCentralHeaderSig)
      fail(where + ": bad signature or truncated");
    const uint8_t* h = d + pos;
    const uint16_t flags = rd16(h + 8);
    const uint16_t method = rd16(h + 10);
    const uint32_t crc = rd32(h + 16);
    uint64_t csize = rd32(h + 20);
    uint64_t usize = rd32(h + 24);
    const uint16_t name_len = rd16(h + 28), extra_len = rd16(h + 30), comment_len = rd16(h + 32);
    uint64_t local = rd32(h + 42);
    const uint64_t var_len = uint64_t{name_len} + extra_len + comment_len;
    if (!fits(pos + kCentralHeaderSize, var_len, cd_end)) fail(where + ": name/extra fields run past the directory");
    std::string name(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_len);
    if (name.find('\0') != std::string::npos) fail(where + ": entry name contains a NUL byte");

    // ZIP64 extended information: the 8-byte fields appear only for values saturated above.
    const uint8_t* ex = h + kCentralHeaderSize + name_len;
    for (uint64_t e = 0; e + 4 <= extra_len;) {
      const uint16_t id = rd16(ex + e), len = rd16(ex + e + 2);
      if (e + 4 + len > extra_len) fail("entry '" + name + "': extra field runs past its header");
      if (id == 0x0001) {
        const uint8_t* f = ex + e + 4;
        uint64_t off = 0;
        auto take = [&](uint64_t& v) {
          if (off + 8 > len) fail("entry '" + name + "': short ZIP64 extra field");
          v = rd64(f + off);
          off += 8;
        };
        if (usize == 0xFFFFFFFF) take(usize);
        if (csize == 0xFFFFFFFF) take(csize);
        if (local == 0xFFFFFFFF) take(local);
      }
      e += 4 + len;
    }

    if (flags & 0x0001) fail("entry '" + name + "' is encrypted");
    if (method != 0)
      fail("entry '" + name + "' is compressed (method " + std::to_string(method) +
           "); torch.export writes STORED entries only");
    if (csize != usize) fail("entry '" + name + "': stored size " + std::to_string(csize) + " != size " +
                             std::to_string(usize));

    // The data starts after the *local* header, whose extra field (alignment padding) differs
    // from the central one.
    if (!fits(local, kLocalHeaderSize, n) || rd32(d + local) != kLocalHeaderSig)
      fail("entry '" + name + "': local header at offset " + std::to_string(local) + " is missing or truncated");
    const uint64_t data_offset = local + kLocalHeaderSize + rd16(d + local + 26) + rd16(d + local + 28);
    if (!fits(data_offset, usize, n))
      fail("entry '" + name + "': " + std::to_string(usize) + " bytes at offset " + std::to_string(data_offset) +
           " run past the end of the file (" + std::to_string(n) + " bytes)");
    if (by_name_.count(name)) fail("duplicate entry '" + name + "'");
    by_name_[name] = entries_.size();
    entries_.push_back(ZipEntry{std::move(name), data_offset, usize, crc});
    pos += kCentralHeaderSize + var_len;
  }
}

const ZipEntry* ZipReader::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

std::string_view ZipReader::read(const ZipEntry& e, bool check_crc) const {
  const uint8_t* p = bytes_->data() + e.data_offset;
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  check_crc = false;  // let the fuzzer's mutations of JSON entries reach the parser
#endif
  if (check_crc && crc32(p, e.size) != e.crc32) fail("entry '" + e.name + "' is corrupted (CRC-32 mismatch)");
  return {reinterpret_cast<const char*>(p), static_cast<size_t>(e.size)};
}

}  // namespace kiln::frontend
