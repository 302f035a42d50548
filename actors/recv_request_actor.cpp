// recv-request actor (one per decode-side transfer)
//
//   queued ──admitted by the receiver──> fetching ──transfer_done──> done: succeeded, release
//     │ engine cancel                      │  └──error answer from the sender──> done: failed or
//     v                                    │     cancelled, release (the sender answers only
//   done: cancelled_before_advertise       │     after its puts completed: quiescent)
//   (nothing exposed, release now)         │ engine cancel
//                                          v
//                                 cancel_fetch sent to the sender; its answer ends the request
//
//   queued, and the receiver dies (DOWN) ──> queue again at the restarted receiver (20 ms later,
//             repeated until admitted or the deadline passes)
//   deadline: queued ──> done: timed_out, release
//             fetching ──> timed_out delivered now; cancel_fetch sent; the sender's answer
//             (sent once its puts stopped) releases the destination
//   peer entry DOWN / undeliverable fetch ──> done: failed now, destination NOT released (the
//   peer may still write; no proof of quiescence)

#include "actors/recv_request_actor.hpp"

#include "actors/node_core.hpp"

#include <algorithm>
#include <chrono>

namespace kvferry {

namespace {

enum class recv_phase { queued, fetching, done };

struct recv_request_state {
  std::unique_ptr<request_owner> owner;
  recv_phase phase = recv_phase::queued;
  bool cancel_requested = false;
  std::uint32_t deadline_ms = 0;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  sender_actor peer;
  caf::actor_addr admitter;  // the receiver we are queued at (monitored)
  fetch_msg fetch;
  static inline const char* name = "kvferry.recv_request";
};

using self_ptr = recv_request_actor::stateful_pointer<recv_request_state>;

void end_request(self_ptr self, transfer_result r, bool quiescent) {
  auto& st = self->state;
  st.phase = recv_phase::done;
  st.owner->conclude(std::move(r), quiescent);
  // Monitors stay attached to long-lived actors (the peer's sender, our receiver) until they
  // die: take ours off, or every request would leave one behind.
  if (st.peer)
    self->demonitor(st.peer.address());
  if (st.admitter)
    self->demonitor(st.admitter);
  self->quit();
}

void send_fetch(self_ptr self) {
  auto& st = self->state;
  if (st.phase != recv_phase::queued)
    return;
  st.phase = recv_phase::fetching;
  st.owner->set_in_flight();
  // Admitted: the receiver's restart no longer concerns us (only a queued request re-queues),
  // and a monitor left on that long-lived actor would stay there until it ends.
  self->demonitor(st.admitter);
  st.admitter = caf::actor_addr{};
  self->monitor(st.peer);
  if (st.deadline_ms > 0) {
    // The sender parks an early fetch no longer than what is left of our deadline.
    auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - st.started);
    st.fetch.deadline_ms = static_cast<std::uint32_t>(
      std::max<std::int64_t>(1, st.deadline_ms - spent.count()));
  }
  self->request(st.peer, caf::infinite, std::move(st.fetch))
    .then(
      [=](transfer_done& done) {
        end_request(self, make_result(transfer_status::succeeded, errc::none, {}, done.bytes),
                    true);
      },
      [=](caf::error& err) {
        auto r = result_from_error(err);
        if (self->state.owner->terminal()) {
          // We timed out before; this answer is the proof that the sender stopped.
          end_request(self, std::move(r), err.category() == caf::atom("kvferry"));
          return;
        }
        // Our own codes come from the sender after its puts completed; CAF's own errors mean
        // the answer never came (peer gone): the destination may still be written.
        bool from_sender = err.category() == caf::atom("kvferry");
        if (self->state.cancel_requested && r.code == errc::cancelled)
          r.status = transfer_status::cancelled;
        end_request(self, std::move(r), from_sender);
      });
}

// Queues for admission at the current receiver; its DOWN (not the error answer, which may
// come too) is the one trigger for queueing again, so a request never holds two places.
void ask_admission(self_ptr self) {
  auto receiver = self->state.owner->core().children().receiver;
  self->state.admitter = receiver.address();
  self->monitor(receiver);
  self->request(receiver, caf::infinite, admit_atom::value)
    .then([=](bool) { send_fetch(self); },
          [=](caf::error& err) {
            if (self->state.phase != recv_phase::queued || err == caf::sec::request_receiver_down)
              return;
            end_request(self, result_from_error(err), true);
          });
}

recv_request_actor::behavior_type recv_request_impl(self_ptr self, recv_spec spec) {
  auto& st = self->state;
  st.owner = std::make_unique<request_owner>(spec.core, spec.handle, request_side::receive);
  st.peer = std::move(spec.peer);
  st.fetch = std::move(spec.fetch);
  st.deadline_ms = spec.deadline_ms;
  if (st.deadline_ms > 0)
    self->delayed_send(self, std::chrono::milliseconds{st.deadline_ms}, deadline_atom::value);
  // Any exception in a handler fails this request with a clear error (F10); the memory is
  // released only if nothing of it can still be in UCX's hands.
  self->set_exception_handler([=](caf::scheduled_actor*, std::exception_ptr& ep) -> caf::error {
    auto text = describe_exception(ep);
    end_request(self,
                make_result(transfer_status::failed, errc::internal_error,
                            "request '" + self->state.owner->id() + "' failed: " + text),
                self->state.phase != recv_phase::fetching);
    return caf::make_error(errc::internal_error, text);
  });
  // The node is stopping: the terminal event says so; the memory is released only by the
  // engine's teardown, after which nothing touches it.
  self->set_exit_handler(
    [=](caf::exit_msg& em) { end_request(self, stopped_result(em.reason), false); });
  self->set_down_handler([=](caf::down_msg& dm) {
    if (dm.source == self->state.admitter && self->state.phase == recv_phase::queued) {
      self->delayed_send(self, std::chrono::milliseconds{20}, admit_retry_atom::value);
      return;
    }
    if (dm.source == self->state.peer.address() && self->state.phase == recv_phase::fetching)
      end_request(self,
                  make_result(transfer_status::failed, errc::peer_failed,
                              "the prefill node went away during the transfer: " +
                                caf::to_string(dm.reason)),
                  false);
  });
  ask_admission(self);
  return {
    [=](admit_retry_atom) {
      if (self->state.phase == recv_phase::queued)
        ask_admission(self);
    },
    [=](deadline_atom) {
      auto& st = self->state;
      auto what = "request '" + st.owner->id() + "' passed its deadline (" +
                  std::to_string(st.deadline_ms) + " ms)";
      if (st.phase == recv_phase::queued) {
        end_request(self,
                    make_result(transfer_status::failed, errc::timed_out,
                                what + " before its fetch was sent"),
                    true);
      } else if (st.phase == recv_phase::fetching && !st.owner->terminal()) {
        st.owner->finish(make_result(transfer_status::failed, errc::timed_out,
                                     what + " in flight; the destination is released once the "
                                            "sender confirms it stopped"));
        if (!st.cancel_requested) {
          st.cancel_requested = true;
          self->send(st.peer, cancel_fetch_atom::value, st.owner->id(), st.owner->core().epoch);
        }
      }
    },
    [=](cancel_atom) -> cancel_answer {
      auto& st = self->state;
      if (st.owner->terminal())
        return cancel_answer::already_complete;  // e.g. timed out, release still pending
      switch (st.phase) {
        case recv_phase::queued:
          end_request(self,
                      make_result(transfer_status::cancelled, errc::cancelled,
                                  "cancelled by the engine before the fetch was sent"),
                      true);
          return cancel_answer::cancelled_before_advertise;
        case recv_phase::fetching:
          if (!st.cancel_requested) {
            st.cancel_requested = true;
            self->send(st.peer, cancel_fetch_atom::value, st.owner->id(), st.owner->core().epoch);
          }
          return cancel_answer::cancel_requested_in_flight;
        default:
          return cancel_answer::already_complete;
      }
    },
  };
}

}  // namespace

recv_request_actor spawn_recv_request_actor(caf::actor_system& sys, recv_spec spec) {
  return sys.spawn(recv_request_impl, std::move(spec));
}

}  // namespace kvferry
