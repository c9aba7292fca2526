#include "program/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "program/program.h"

namespace kiln::program {

namespace {

const char* file_kind(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a plain file";
}

InputError io_error(const std::string& path, const std::string& what, int err) {
  return InputError(path + ": " + what + " (" + std::strerror(err) + ")");
}

// Writes all of [p, p+n) to fd, retrying short writes and EINTR.
bool write_all(int fd, const uint8_t* p, size_t n, int& err) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      err = errno;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

void require_regular_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) throw InputError(path + ": no such file");
    throw io_error(path, "cannot access", errno);
  }
  if (!S_ISREG(st.st_mode)) throw InputError(path + ": not a regular file (" + file_kind(st.st_mode) + ")");
}

std::vector<uint8_t> read_whole_file(const std::string& path) {
  require_regular_file(path);
  // O_NONBLOCK: the file could have been swapped for a FIFO since the check above.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw io_error(path, "cannot open", errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(path + ": not a regular file");
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t r = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int err = r < 0 ? errno : EIO;
      ::close(fd);
      throw r < 0 ? io_error(path, "read failed", err) : InputError(path + ": file shrank while being read");
    }
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  return bytes;
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  std::string target = path;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    // Replace what the link points to, keeping the link (as editors do).
    char* real = ::realpath(path.c_str(), nullptr);
    if (real) {
      target = real;
      std::free(real);
    }
  }
  if (::stat(target.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) throw InputError(path + ": is a directory");
    if (!S_ISREG(st.st_mode)) {
      // A device or FIFO cannot be renamed over; write to it directly, every step checked.
      // O_NONBLOCK so that a FIFO without a reader fails (ENXIO) instead of waiting.
      const int fd = ::open(target.c_str(), O_WRONLY | O_CLOEXEC | O_NONBLOCK);
      if (fd < 0) throw io_error(path, "cannot open for writing", errno);
      int err = 0;
      if (!write_all(fd, bytes, size, err)) {
        ::close(fd);
        throw io_error(path, "write failed", err);
      }
      if (::close(fd) != 0) throw io_error(path, "write failed", errno);
      return;
    }
  }

  const size_t slash = target.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : target.substr(0, slash);
  const std::string base = slash == std::string::npos ? target : target.substr(slash + 1);
  std::string tmp = (slash == std::string::npos ? "" : target.substr(0, slash + 1)) + "." + base + ".tmp-XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) throw io_error(path, "cannot create a file in " + dir, errno);
  auto fail = [&](const std::string& what, int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return io_error(path, what, err);
  };
  int err = 0;
  if (!write_all(fd, bytes, size, err)) throw fail("write failed", err);
  // mkstemp creates 0600; give the file the mode a plain create would (0666 less the umask), or
  // keep the mode of the file it replaces.
  mode_t mode = 0;
  if (::stat(target.c_str(), &st) == 0) {
    mode = st.st_mode & 07777;
  } else {
    const mode_t mask = ::umask(0);
    ::umask(mask);
    mode = 0666 & ~mask;
  }
  if (::fchmod(fd, mode) != 0) throw fail("cannot set permissions", errno);
  // The data must be on disk before the rename makes it the file: a crash after the rename must
  // not leave a file of the right name with missing data (ext4's delayed allocation, for one).
  if (::fsync(fd) != 0) throw fail("write failed", errno);
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw io_error(path, "write failed", e);
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw io_error(path, "cannot replace the file", e);
  }
  // The rename itself is durable once the folder is synced (best effort: some filesystems refuse).
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace kiln::program
