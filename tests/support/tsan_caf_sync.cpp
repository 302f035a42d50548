// ThreadSanitizer only (linked into the binaries that use CAF when KVFERRY_SANITIZE=thread).
//
// Debian's libcaf_core is not built with -fsanitize=thread, so TSan cannot see the atomics that
// hand a message from the sending thread to the thread that runs the receiving actor, nor the
// ones that move an actor between scheduler threads. Without them every handler looks racy with
// whoever sent its message and with the actor's previous run on another thread (thousands of
// reports). A blanket `race:caf::` suppression would hide kvferry's own races too.
//
// Instead this file states CAF's two guarantees to TSan, on the actor's address as the sync
// object, by interposing the library functions where they hold (the executable's definitions
// win over libcaf_core's; the originals are reached with dlsym(RTLD_NEXT)):
//   - a message enqueued to an actor happens before the actor consumes it
//     (scheduled_actor::enqueue / blocking_actor::enqueue: release);
//   - an actor's consumes are serial: each happens before the next, whatever the thread
//     (scheduled_actor::consume: acquire before, release after; blocking_actor::dequeue: acquire).
// Nothing else is hidden: a race between an actor and a thread that shares memory with it
// without a message or a lock is still reported.
#if defined(__SANITIZE_THREAD__)
#define KVFERRY_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KVFERRY_TSAN 1
#endif
#endif

#ifdef KVFERRY_TSAN
#include <caf/blocking_actor.hpp>
#include <caf/scheduled_actor.hpp>

#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>

namespace {

template <class F>
F original(const char* mangled) {
  void* sym = dlsym(RTLD_NEXT, mangled);
  if (sym == nullptr) {
    std::fprintf(stderr, "kvferry tsan: %s not found in libcaf_core\n", mangled);
    std::abort();
  }
  return reinterpret_cast<F>(sym);
}

}  // namespace

namespace caf {

void scheduled_actor::enqueue(mailbox_element_ptr ptr, execution_unit* eu) {
  using fn = void (*)(scheduled_actor*, mailbox_element_ptr, execution_unit*);
  static const fn real = original<fn>(
    "_ZN3caf15scheduled_actor7enqueueESt10unique_ptrINS_15mailbox_elementENS_6detail8disposerEEP"
    "NS_14execution_unitE");
  __tsan_release(this);
  real(this, std::move(ptr), eu);
}

invoke_message_result scheduled_actor::consume(mailbox_element& x) {
  using fn = invoke_message_result (*)(scheduled_actor*, mailbox_element&);
  static const fn real =
    original<fn>("_ZN3caf15scheduled_actor7consumeERNS_15mailbox_elementE");
  __tsan_acquire(this);
  auto result = real(this, x);
  __tsan_release(this);
  return result;
}

void blocking_actor::enqueue(mailbox_element_ptr ptr, execution_unit* eu) {
  using fn = void (*)(blocking_actor*, mailbox_element_ptr, execution_unit*);
  static const fn real = original<fn>(
    "_ZN3caf14blocking_actor7enqueueESt10unique_ptrINS_15mailbox_elementENS_6detail8disposerEEPNS"
    "_14execution_unitE");
  __tsan_release(this);
  real(this, std::move(ptr), eu);
}

mailbox_element_ptr blocking_actor::dequeue() {
  using fn = mailbox_element_ptr (*)(blocking_actor*);
  static const fn real = original<fn>("_ZN3caf14blocking_actor7dequeueEv");
  auto element = real(this);
  __tsan_acquire(this);
  return element;
}

}  // namespace caf
#endif
