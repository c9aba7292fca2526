// libFuzzer target for the .npy reader (program/npy.cpp), which reads every `kiln run --input`.
// Any input must either be read (and then its first and last bytes are touched: all of them must
// lie inside the tensor's buffer) or be refused with NpyError. Any other exception, a crash, a sanitizer
// report or a huge allocation is a bug.
//
// read_npy takes a path, so each input goes through an in-memory file (memfd): no disk traffic
// and nothing left behind.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "program/npy.h"

namespace {

// One memfd per process, rewritten for each input.
int input_fd() {
  static const int fd = memfd_create("npy_fuzz_in", 0);
  if (fd < 0) {
    std::perror("npy_fuzz: memfd_create");
    std::abort();
  }
  return fd;
}

void write_all(int fd, const uint8_t* data, size_t size) {
  if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) std::abort();
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n <= 0) std::abort();
    data += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = input_fd();
  write_all(fd, data, size);
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  try {
    const kiln::program::HostTensor t = kiln::program::read_npy(path);
    volatile size_t sink = t.str().size();
    if (const size_t n = t.nbytes()) sink = sink + t.data[0] + t.data[n - 1];
    (void)sink;
  } catch (const kiln::program::NpyError&) {
    // Expected for malformed input.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "npy_fuzz: unexpected exception (must be NpyError): %s\n", e.what());
    std::abort();
  }
  return 0;
}
