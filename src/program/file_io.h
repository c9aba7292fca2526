// Files kiln reads and writes on the user's behalf: inputs must be regular files (a FIFO or a
// device would block or never end), and outputs are replaced atomically, so a full disk, a failed
// write or a killed process leaves the old file as it was, never a truncated one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::program {

// Throws InputError "PATH: no such file" / "PATH: not a regular file (a FIFO)" / "PATH: cannot
// access (errno text)" unless `path` names a regular file (symbolic links followed). Checked
// before opening: opening a FIFO for reading waits for a writer.
void require_regular_file(const std::string& path);

// Reads a whole regular file (require_regular_file first); InputError naming it on failure.
std::vector<uint8_t> read_whole_file(const std::string& path);

// Writes `size` bytes to `path` as one atomic replacement: a temporary file in the same folder,
// written, flushed with fsync and closed, each step checked, then renamed over `path` (the folder
// is synced too). On any failure the temporary file is removed and `path` is untouched; the error
// is an InputError "PATH: cannot write (errno text)" (the output location is the user's choice).
// A symbolic link is followed (its target is replaced); an existing non-regular file such as
// /dev/null or /dev/full cannot be replaced by a rename and is written in place, still checked.
void write_file_atomic(const std::string& path, const void* data, size_t size);

}  // namespace kiln::program
