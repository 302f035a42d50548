// ThreadSanitizer set-up for every test binary and the kvferry tool; compiled in only under
// -fsanitize=thread
// (cmake -DKVFERRY_SANITIZE=thread). Kept short: every line says why it is there.
#include "tsan_detect.hpp"

#ifdef KVFERRY_TSAN
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" const char* __tsan_default_suppressions() {
  return
      // The tests run initiator and target engines in one process. The target's progress thread
      // writes put data with memcpy inside UCX; the test reads it after the put's completion.
      // That order is made by UCX's shared-memory/socket protocol, invisible to TSan.
      "called_from_lib:libucp.so.0\n"
      "called_from_lib:libuct.so.0\n"
      "called_from_lib:libuct_cma.so.0\n"
      "called_from_lib:libucs.so.0\n"
      // libucs unlocks a global mutex from its ELF destructor at process exit (the report's
      // only frame is the dynamic loader's).
      "mutex:_dl_call_fini\n"
      // CAF's own internals, which hand objects between threads with atomics TSan cannot see
      // (Debian's CAF is not instrumented): scheduler job queues, BASP workers, the proxy
      // registry. What CAF's code calls in libc is skipped (malloc/free, memcpy, and its mutexes,
      // so their ordering is lost too); kvferry's code, and CAF templates compiled into it, are
      // still checked, with CAF's hand-overs stated by sanitizers/tsan_caf_sync.cpp.
      "called_from_lib:libcaf_core.so\n"
      "called_from_lib:libcaf_io.so\n"
      // ... whose message_queue::push ends in a tail call to pthread_mutex_unlock, so the
      // unlock looks called from tsan_caf_sync.cpp's wrapper (not ignored) and the lock not.
      "mutex:caf::io::basp::message_queue::push\n"
      // A delayed message dropped by CAF's clock thread because its target is gone: destroyed
      // there after being created by the sender, handed over inside libcaf_core.
      "race:caf::mailbox_element_vals\n";
}

namespace {
// UCX's memory hooks (libucm patching mmap/madvise) crash in TSan's interceptors on thread start.
// UCX reads UCX_MEM_EVENTS when its libraries load, before any code here runs, so the test binary
// re-executes itself once with the hooks off. Never do this outside a TSan build: UCX needs the
// events to keep its registration cache correct.
const bool reexecuted_without_ucx_memory_hooks = [] {
  if (std::getenv("UCX_MEM_EVENTS") != nullptr) {
    return false;
  }
  setenv("UCX_MEM_EVENTS", "no", 1);
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (std::size_t begin = 0; begin < cmdline.size();) {
    const std::size_t end = cmdline.find('\0', begin);
    args.push_back(cmdline.substr(begin, end - begin));
    begin = end == std::string::npos ? cmdline.size() : end + 1;
  }
  std::vector<char*> argv;
  for (std::string& arg : args) {
    argv.push_back(arg.data());
  }
  argv.push_back(nullptr);
  execv("/proc/self/exe", argv.data());
  return false;  // exec failed: run as we are
}();
}  // namespace
#endif
