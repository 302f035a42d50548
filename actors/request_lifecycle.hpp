// The lifecycle both request actors share: the one exit path (request_owner), the monitors a
// request holds only while it must (scoped_monitors), and the set-up every request actor does
// at spawn (deadline timer, exception and exit handlers: start_lifecycle).
//
//   spawn ──start_lifecycle──> deadline armed; an exception fails the request (F10); an exit
//                              (node stopping) fails it with errc::stopped
//   ...phases (the actor's behaviours)...
//   end(): owner.conclude (terminal event once, released event once if quiescent)
//          ──> every monitor taken off ──> quit
#pragma once

#include "actors/child_directory.hpp"
#include "actors/messages.hpp"
#include "actors/node_health.hpp"
#include "actors/op_ledger.hpp"
#include "actors/peer_input.hpp"
#include "actors/request_registry.hpp"
#include "actors/watch_index.hpp"
#include "kvferry/transfer.hpp"

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace kvferry {

namespace detail {
class handle_state;
}

// Builds a terminal result.
transfer_result make_result(transfer_status s, errc code = errc::none, std::string msg = {},
                            std::uint64_t bytes = 0);
// Turns a CAF error (ours or CAF's own) into a terminal failed/cancelled result.
transfer_result result_from_error(const caf::error& err);
// One of kvferry's own errors (category "kvferry"); false for CAF's and for an empty error,
// which a peer can send (its category() must not be read).
bool is_kvferry_error(const caf::error& err);
// A kvferry error with a message, as it crosses actor boundaries.
caf::error make_kvferry_error(errc code, std::string msg);
// What an exception says: what() for a std::exception, a fixed text for anything else.
std::string describe_exception(std::exception_ptr ep);
// The result of a request whose actor was told to exit (the node is stopping).
transfer_result stopped_result(const caf::error& exit_reason);

// What every request actor is given at spawn, besides its own blocks.
struct request_context {
  std::shared_ptr<detail::handle_state> handle;
  std::shared_ptr<request_registry> registry;      // to free the id once terminal and released
  std::shared_ptr<node_health> health;             // counters
  std::shared_ptr<const child_directory> children; // the current transport, pool, sender, receiver
  std::uint32_t deadline_ms = 0;                   // from spawn; 0: none
  std::shared_ptr<watch_index> watches;            // the node's: what requests watch
  // The engines' operations by token (transport_services::ledger): where a request whose
  // transport died learns when its memory is quiescent.
  std::shared_ptr<op_ledger> ledger;
  // When the engine called send()/receive(): where the request's queue time starts.
  std::chrono::steady_clock::time_point called = std::chrono::steady_clock::now();
};

// The single exit path of a request: finish() delivers the terminal result exactly once,
// release() the *released* event exactly once; the destructor is the backstop (an actor that
// ends without finishing fails its request; memory never proven quiescent is not released
// then: a send's once the op ledger proves none of its copies and puts is in flight or can
// start, a receive's when the node stops).
class request_owner {
 public:
  // `token`: the request actor's id, under which the transport posts its operations (0 for an
  // offer in the book: set_token once an actor takes it over).
  request_owner(const request_context& ctx, request_side side, std::uint64_t token);
  void set_token(std::uint64_t token) noexcept { token_ = token; }
  ~request_owner();
  request_owner(const request_owner&) = delete;
  request_owner& operator=(const request_owner&) = delete;

  const std::string& id() const;
  bool terminal() const noexcept { return terminal_; }
  void set_in_flight();
  // The transfer's data moves through this node from now until the request ends: work the
  // node's progress check waits on (node_health::moving_started).
  void set_moving();
  // The transfer waits for the engine (a layer not ready yet): not moving until set_moving().
  void stop_moving();
  // The request's actor ends (request_base::end, else the destructor).
  void ended() { stop_moving(); }
  // Timing (transfer_result::timing): data starts to move; the first bytes are in place (or,
  // on the receive side, the sender's figure for that).
  void started_moving();
  void first_bytes();
  void set_first_byte_us(std::uint64_t us) { first_byte_us_ = us; }
  // How the bytes went (transfer_result::transport): the last put batch's, or the sender's.
  void set_transport(std::string how) { transport_ = std::move(how); }
  const std::string& transport() const noexcept { return transport_; }
  std::uint64_t first_byte_us() const noexcept { return first_byte_us_; }
  void finish(transfer_result r);
  void release();
  // The usual ending: finish, and release when the memory is proven quiescent.
  void conclude(transfer_result r, bool quiescent) {
    finish(std::move(r));
    if (quiescent)
      release();
  }

 private:
  std::shared_ptr<detail::handle_state> handle_;
  std::shared_ptr<request_registry> registry_;
  std::shared_ptr<node_health> health_;
  std::shared_ptr<op_ledger> ledger_;
  request_side side_;
  std::uint64_t token_;
  bool terminal_ = false;
  bool released_ = false;
  bool moving_ = false;
  std::chrono::steady_clock::time_point created_;  // the call (request_context::called)
  std::chrono::steady_clock::time_point moving_since_{};
  std::uint64_t first_byte_us_ = 0;
  std::string transport_;
};

// What one request watches (the transport while it holds a step, the receiver while queued,
// the peer while the transfer is exposed to it), through the node's watch_index: O(1) per watch
// whatever else is in flight, and no CAF monitor on a shared actor (watch_index.hpp). A watched
// actor's termination arrives as an ordinary down_msg. Whatever is still watched when the
// request ends (or its state is destroyed) is unwatched.
class scoped_monitors {
 public:
  scoped_monitors() = default;
  scoped_monitors(const scoped_monitors&) = delete;
  scoped_monitors& operator=(const scoped_monitors&) = delete;
  ~scoped_monitors();

  void use(std::shared_ptr<watch_index> index) { index_ = std::move(index); }
  void watch(caf::scheduled_actor* self, const caf::actor_addr& a);
  void unwatch(caf::scheduled_actor* self, const caf::actor_addr& a);
  bool watching(const caf::actor_addr& a) const;
  void clear(caf::scheduled_actor* self);

 private:
  std::shared_ptr<watch_index> index_;  // the node's (request_context::watches)
  caf::actor_addr self_;
  std::vector<caf::actor_addr> watched_;  // a handful at most
};

// The part of a request actor's state that both sides share.
struct request_base {
  std::unique_ptr<request_owner> owner;
  request_context ctx;
  scoped_monitors monitors;

  // Ends the request: the terminal result (once), the release when quiescent, every monitor off,
  // and the actor quits. Call it last in a handler.
  void end(caf::scheduled_actor* self, transfer_result r, bool quiescent);
  // "request '<id>' passed its deadline (<n> ms)"
  std::string deadline_text() const;
};

// In `ms`, `self`'s current behaviour handles a deadline_atom, unless `self` has ended by then. The timer is a response
// timeout, which CAF's clock drops when the actor ends: a delayed message would hold the ended
// actor's storage (about 2 KiB) until the deadline passed, 30 s by default.
void arm_deadline(caf::scheduled_actor* self, std::uint32_t ms);

// Arms the deadline (arm_deadline) and installs the handlers every request actor has:
// unexpected messages are dropped unprinted (peer_input.hpp); an exception fails the request
// (F10), released only if `quiescent_now()` says nothing of its memory can be in UCX's hands; an
// exit (the node is stopping) fails it with errc::stopped, unreleased (the node's teardown makes
// the memory safe). `end_side` runs the side's own clean-up before the shared end (e.g. giving
// back a staging slot).
//
// A request that already has its owner (a send handed over from the offer book) keeps it: the
// owner's token becomes this actor's id, and `deadline_ms` is what is left of its deadline.
template <class Self, class EndSide, class QuiescentNow>
void start_lifecycle(Self* self, request_side side, EndSide end_side, QuiescentNow quiescent_now,
                     std::uint32_t deadline_ms) {
  auto& st = self->state;
  if (st.base.owner)
    st.base.owner->set_token(self->id());
  else
    st.base.owner = std::make_unique<request_owner>(st.base.ctx, side, self->id());
  st.base.monitors.use(st.base.ctx.watches);
  drop_unexpected_quietly(self);
  if (deadline_ms > 0)
    arm_deadline(self, deadline_ms);
  self->set_exception_handler(
    [=](caf::scheduled_actor*, std::exception_ptr& ep) -> caf::error {
      auto text = describe_exception(ep);
      end_side(self, make_result(transfer_status::failed, errc::internal_error,
                                 "request '" + self->state.base.owner->id() + "' failed: " + text),
               quiescent_now(self));
      return caf::make_error(errc::internal_error, text);
    });
  self->set_exit_handler(
    [=](caf::exit_msg& em) { end_side(self, stopped_result(em.reason), false); });
}

}  // namespace kvferry
