#include "ir/source_location.h"

#include <cctype>

namespace kiln::ir {

std::string user_source_line(const Node& n) {
  auto it = n.metadata.find("stack_trace");
  if (it == n.metadata.end()) return "";
  const std::string& trace = it->second;
  std::string where, where_in_torch;
  // Frames read `File "/path/model.py", line 42, in forward`, outermost first.
  for (size_t file = trace.find("File \""); file != std::string::npos; file = trace.find("File \"", file + 6)) {
    const size_t path_start = file + 6, path_end = trace.find('"', path_start);
    if (path_end == std::string::npos || trace.compare(path_end, 7, "\", line") != 0) continue;
    size_t digits = path_end + 8;
    while (digits < trace.size() && std::isdigit(static_cast<unsigned char>(trace[digits]))) ++digits;
    if (digits == path_end + 8) continue;
    std::string path = trace.substr(path_start, path_end - path_start);
    const bool in_torch = path.find("packages/torch/") != std::string::npos;
    if (size_t slash = path.find_last_of('/'); slash != std::string::npos) path = path.substr(slash + 1);
    (in_torch ? where_in_torch : where) = path + ":" + trace.substr(path_end + 8, digits - path_end - 8);
  }
  return where.empty() ? where_in_torch : where;
}

std::string target_and_source(const Node& n) {
  const std::string where = user_source_line(n);
  return where.empty() ? n.target : n.target + " at " + where;
}

}  // namespace kiln::ir
