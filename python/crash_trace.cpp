// KILN_CRASH_TRACE=1: on SIGSEGV/SIGBUS/SIGFPE/SIGABRT inside the process, print the native stack
// (module + offset per frame, resolvable with `addr2line -e <module> <offset>` against a
// RelWithDebInfo build) before the default action. Python's faulthandler shows only Python frames,
// and the GPU machine has no debugger.
#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>

#include "bind_common.h"

namespace kiln::py_bind {
namespace {

void print_native_stack(int sig) {
  void* frames[64];
  const int n = backtrace(frames, 64);
  const char header[] = "kiln: fatal signal; native stack:\n";
  (void)!write(STDERR_FILENO, header, sizeof(header) - 1);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);  // async-signal-safe: no malloc
  signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

void install_crash_trace() {
  if (!std::getenv("KILN_CRASH_TRACE")) return;
  void* warm[1];
  backtrace(warm, 1);  // loads libgcc's unwinder now, not inside the handler
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGABRT}) signal(sig, print_native_stack);
}

}  // namespace kiln::py_bind
