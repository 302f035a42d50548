// receiver actor
//
//   admit (node::receive queued a receive; from the supervisor after a restart) ──> admit
//   admit: while fewer places are held than the limit, the oldest queued receive leaves the
//     queue, its owner moves into a new recv-request actor (registered, monitored): a place
//   a recv-request DOWN ──> its place freed, the next queued one admitted
//   sweep (deadline_atom: at most every 100 ms while receives wait with a deadline; one timer
//     for all of them) ──> each queued receive past its deadline ends timed_out, released
//
// A place is held from admission until the recv-request actor terminates, so cleanup has one
// path (DOWN) whatever way the request ended. A queued receive has no actor: cancel() and
// stop() take it out of the queue and end it there (nothing was exposed).

#include "actors/receiver_actor.hpp"
#include "core/hop_trace.hpp"

#include "actors/peer_input.hpp"

#include <algorithm>
#include <chrono>
#include <unordered_set>

namespace kvferry {

namespace {

// The longest a queued receive outlives its deadline: the sweep's period while any waits.
constexpr std::chrono::milliseconds sweep_period{100};

struct receiver_state {
  receiver_spec spec;
  std::unordered_set<caf::actor_addr> admitted;
  bool sweep_armed = false;
  static inline const char* name = "kvferry.receiver";
};

using self_ptr = receiver_actor::stateful_pointer<receiver_state>;

void admit_queued(self_ptr self) {
  auto& st = self->state;
  const auto now = self->clock().now();
  while (st.admitted.size() < st.spec.max_fetches_in_flight) {
    recv_request_actor actor;
    st.spec.queue->take_front([&](queued_receive& q) {
      KVFERRY_HOP(receiver_admit);
      std::uint32_t left_ms = 0;  // no deadline
      if (q.deadline)  // one already passed (the sweep has not run yet) fires at once
        left_ms = static_cast<std::uint32_t>(std::max<std::int64_t>(
          1, std::chrono::duration_cast<std::chrono::milliseconds>(*q.deadline - now).count()));
      auto id = q.owner->id();
      actor = spawn_recv_request_actor(self->system(), std::move(q.spec), std::move(q.owner),
                                       left_ms);
      if (st.spec.registry)
        st.spec.registry->attach_owner(id, caf::actor_cast<caf::actor>(actor));
    });
    if (!actor)
      return;
    self->monitor(actor);
    st.admitted.insert(actor.address());
  }
}

void arm_sweep(self_ptr self) {
  auto& st = self->state;
  if (st.sweep_armed)
    return;
  auto next = st.spec.queue->next_deadline();
  if (!next)
    return;
  auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(*next - self->clock().now());
  wait = std::clamp(wait, std::chrono::milliseconds{1}, sweep_period);
  self->delayed_send(self, wait, deadline_atom::value);
  st.sweep_armed = true;
}

void sweep(self_ptr self) {
  auto& st = self->state;
  st.sweep_armed = false;
  for (auto& q : st.spec.queue->take_expired(self->clock().now())) {
    auto text = "request '" + q.owner->id() + "' passed its deadline (" +
                std::to_string(q.spec.ctx.deadline_ms) + " ms) before its fetch was sent";
    end_held(std::move(q), make_result(transfer_status::failed, errc::timed_out, std::move(text)));
  }
  arm_sweep(self);
}

receiver_actor::behavior_type receiver_impl(self_ptr self, receiver_spec spec) {
  if (spec.max_fetches_in_flight == 0)
    spec.max_fetches_in_flight = 1;
  self->state.spec = std::move(spec);
  drop_unexpected_quietly(self);
  self->set_down_handler([=](caf::down_msg& dm) {
    if (self->state.admitted.erase(dm.source) > 0)
      admit_queued(self);
  });
  // A restarted receiver admits what its predecessor left queued.
  admit_queued(self);
  arm_sweep(self);
  return {
    [=](admit_atom) {
      admit_queued(self);
      arm_sweep(self);
    },
    // Only the clock expires a queued receive: the message says nothing (anyone may send one).
    [=](deadline_atom) { sweep(self); },
  };
}

}  // namespace

receiver_actor spawn_receiver_actor(caf::actor_system& sys, receiver_spec spec) {
  return sys.spawn(receiver_impl, std::move(spec));
}

}  // namespace kvferry
