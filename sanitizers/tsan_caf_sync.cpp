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
//   - an actor's runs are serial: each happens before the next, whatever the thread
//     (scheduled_actor::consume, ::reactivate, ::activate — its first run, which builds the
//     behavior — and ::cleanup: acquire before, release after);
//   - a blocking actor (scoped_actor) sees what was enqueued before it fetched its mailbox
//     (release on the mailbox in blocking_actor::enqueue, acquire after the mailbox's
//     fetch_more and blocking_actor::dequeue);
//   - spawning happens before the actor's first run (scheduled_actor::launch: release);
//   - attaching to an actor (a functor, a monitor) happens before the attachment runs at the
//     actor's cleanup, on whatever thread ends it: a proxy, for one, is killed on the network
//     thread (monitorable_actor::attach: release, ::cleanup: acquire, both on the actor's
//     mutex, which orders them inside libcaf_core);
//   - a message deserialized from the network happens before the actor that handles it: it is
//     built on a BASP worker thread and can reach its actor along paths inside libcaf_io
//     (message::load: release on the content; consume/reactivate: acquire on the content; a
//     blocking actor's enqueue: acquire on the content, which may be another worker's: the
//     BASP queue's push delivers the elements other workers left pending, under its mutex);
//   - a message a BASP worker deserialized happens before whichever thread hands it on in order
//     (io::basp::message_queue::push: release and acquire on the queue; its mutex is inside
//     libcaf_io, which the suppressions in tsan_setup.cpp ignore);
//   - a function posted to the network thread (multiplexer::post) happens before it runs there:
//     it is handed over through a pipe inside libcaf_io
//     (default_multiplexer::wr_dispatch_request: release on the runnable;
//     default_multiplexer::resume: acquire on it);
//   - what a thread did with a reference-counted CAF object (a message, an actor) happens
//     before whoever drops the last reference destroys it: each release is acq_rel, as the real
//     counters are (ref_counted::deref, intrusive_ptr_release[_weak](actor_control_block*)).
// Nothing else is hidden: a race between an actor and a thread that shares memory with it
// without a message or a lock is still reported.
#include "tsan_detect.hpp"

#ifdef KVFERRY_TSAN
#include <caf/abstract_actor.hpp>
#include <caf/actor_control_block.hpp>
#include <caf/blocking_actor.hpp>
#include <caf/io/basp/message_queue.hpp>
#include <caf/io/network/default_multiplexer.hpp>
#include <caf/message.hpp>
#include <caf/monitorable_actor.hpp>
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
    std::fprintf(stderr, "kvferry tsan: %s not found in CAF's libraries\n", mangled);
    std::abort();
  }
  return reinterpret_cast<F>(sym);
}

// Releasing a reference is acq_rel: what this thread did comes before, and whoever releases
// the last one (and destroys the object) sees everything every earlier holder did.
void release_reference(const void* counted) {
  __tsan_release(const_cast<void*>(counted));
  __tsan_acquire(const_cast<void*>(counted));
}

// The content of a mailbox element, by the address message::load released (const access:
// the non-const one may copy a shared message).
void acquire_content(const caf::mailbox_element& x) {
  __tsan_acquire(const_cast<caf::type_erased_tuple*>(&x.content()));
}

// The address of an actor's own mutex (abstract_actor::mtx_, protected), as the sync object
// for what CAF orders with it.
struct actor_mutex : caf::abstract_actor {
  static void* of(caf::abstract_actor* actor) {
    return &(actor->*(&actor_mutex::mtx_));
  }
};

}  // namespace

namespace caf {

void monitorable_actor::attach(attachable_ptr ptr) {
  using fn = void (*)(monitorable_actor*, attachable_ptr);
  static const fn real = original<fn>(
    "_ZN3caf17monitorable_actor6attachESt10unique_ptrINS_10attachableESt14default_deleteIS2_EE");
  __tsan_release(actor_mutex::of(this));
  real(this, std::move(ptr));
}

bool monitorable_actor::cleanup(error&& reason, execution_unit* eu) {
  using fn = bool (*)(monitorable_actor*, error&&, execution_unit*);
  static const fn real =
    original<fn>("_ZN3caf17monitorable_actor7cleanupEONS_5errorEPNS_14execution_unitE");
  __tsan_acquire(actor_mutex::of(this));
  return real(this, std::move(reason), eu);
}

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
  __tsan_acquire(this);  // first: the element itself came through enqueue
  acquire_content(x);
  auto result = real(this, x);
  __tsan_release(this);
  return result;
}

scheduled_actor::activation_result scheduled_actor::reactivate(mailbox_element& x) {
  using fn = activation_result (*)(scheduled_actor*, mailbox_element&);
  static const fn real =
    original<fn>("_ZN3caf15scheduled_actor10reactivateERNS_15mailbox_elementE");
  __tsan_acquire(this);  // first: the element itself came through enqueue
  acquire_content(x);
  auto result = real(this, x);
  __tsan_release(this);
  return result;
}

void scheduled_actor::launch(execution_unit* eu, bool lazy, bool hide) {
  using fn = void (*)(scheduled_actor*, execution_unit*, bool, bool);
  static const fn real = original<fn>("_ZN3caf15scheduled_actor6launchEPNS_14execution_unitEbb");
  __tsan_release(this);
  real(this, eu, lazy, hide);
}

bool scheduled_actor::activate(execution_unit* eu) {
  using fn = bool (*)(scheduled_actor*, execution_unit*);
  static const fn real =
    original<fn>("_ZN3caf15scheduled_actor8activateEPNS_14execution_unitE");
  __tsan_acquire(this);
  bool result = real(this, eu);
  __tsan_release(this);
  return result;
}

bool scheduled_actor::cleanup(error&& reason, execution_unit* eu) {
  using fn = bool (*)(scheduled_actor*, error&&, execution_unit*);
  static const fn real =
    original<fn>("_ZN3caf15scheduled_actor7cleanupEONS_5errorEPNS_14execution_unitE");
  __tsan_acquire(this);
  bool result = real(this, std::move(reason), eu);
  __tsan_release(this);
  return result;
}

void intrusive_ptr_release(actor_control_block* x) {
  using fn = void (*)(actor_control_block*);
  static const fn real =
    original<fn>("_ZN3caf21intrusive_ptr_releaseEPNS_19actor_control_blockE");
  release_reference(x);
  real(x);
}

void intrusive_ptr_release_weak(actor_control_block* x) {
  using fn = void (*)(actor_control_block*);
  static const fn real =
    original<fn>("_ZN3caf26intrusive_ptr_release_weakEPNS_19actor_control_blockE");
  release_reference(x);
  real(x);
}

void ref_counted::deref() const noexcept {
  using fn = void (*)(const ref_counted*);
  static const fn real = original<fn>("_ZNK3caf11ref_counted5derefEv");
  release_reference(this);
  real(this);
}

error message::load(deserializer& source) {
  using fn = error (*)(message*, deserializer&);
  static const fn real = original<fn>("_ZN3caf7message4loadERNS_12deserializerE");
  auto result = real(this, source);
  if (!empty())
    __tsan_release(const_cast<type_erased_tuple*>(&static_cast<const message*>(this)->content()));
  return result;
}

void blocking_actor::enqueue(mailbox_element_ptr ptr, execution_unit* eu) {
  using fn = void (*)(blocking_actor*, mailbox_element_ptr, execution_unit*);
  static const fn real = original<fn>(
    "_ZN3caf14blocking_actor7enqueueESt10unique_ptrINS_15mailbox_elementENS_6detail8disposerEEPNS"
    "_14execution_unitE");
  if (ptr)
    acquire_content(*ptr);
  __tsan_release(&mailbox());
  real(this, std::move(ptr), eu);
}

mailbox_element_ptr blocking_actor::dequeue() {
  using fn = mailbox_element_ptr (*)(blocking_actor*);
  static const fn real = original<fn>("_ZN3caf14blocking_actor7dequeueEv");
  auto element = real(this);
  __tsan_acquire(&mailbox());
  return element;
}

namespace io::basp {

void message_queue::push(execution_unit* ctx, uint64_t id, strong_actor_ptr receiver,
                         mailbox_element_ptr content) {
  using fn = void (*)(message_queue*, execution_unit*, uint64_t, strong_actor_ptr,
                      mailbox_element_ptr);
  static const fn real = original<fn>(
    "_ZN3caf2io4basp13message_queue4pushEPNS_14execution_unitEmNS_13intrusive_ptrINS_19actor_"
    "control_blockEEESt10unique_ptrINS_15mailbox_elementENS_6detail8disposerEE");
  release_reference(this);  // the same acq_rel edge, on the queue
  real(this, ctx, id, std::move(receiver), std::move(content));
}

}  // namespace io::basp
namespace io::network {

void default_multiplexer::wr_dispatch_request(resumable* ptr) {
  using fn = void (*)(default_multiplexer*, resumable*);
  static const fn real = original<fn>(
    "_ZN3caf2io7network19default_multiplexer19wr_dispatch_requestEPNS_9resumableE");
  __tsan_release(ptr);
  real(this, ptr);
}

void default_multiplexer::resume(intrusive_ptr<resumable> ptr) {
  using fn = void (*)(default_multiplexer*, intrusive_ptr<resumable>);
  static const fn real = original<fn>(
    "_ZN3caf2io7network19default_multiplexer6resumeENS_13intrusive_ptrINS_9resumableEEE");
  __tsan_acquire(ptr.get());
  real(this, std::move(ptr));
}

}  // namespace io::network

}  // namespace caf

// fifo_inbox<blocking_actor::mailbox_policy>::fetch_more(), which blocking receives call to
// take what was enqueued; defined by its mangled name (it is a member template instance).
bool kvferry_tsan_fetch_more(void* inbox) __asm__(
  "_ZN3caf9intrusive10fifo_inboxINS_14blocking_actor14mailbox_policyEE10fetch_moreEv");
bool kvferry_tsan_fetch_more(void* inbox) {
  using fn = bool (*)(void*);
  static const fn real = original<fn>(
    "_ZN3caf9intrusive10fifo_inboxINS_14blocking_actor14mailbox_policyEE10fetch_moreEv");
  bool result = real(inbox);
  __tsan_acquire(inbox);
  return result;
}
#endif
