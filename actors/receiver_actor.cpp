// receiver actor
//
//   admit ──below the limit──> admitted (requester monitored) ──requester DOWN──> place freed,
//     └──at the limit──> queued (FIFO) ──a place frees──> admitted          next queued admitted
//                          └──requester DOWN (e.g. cancelled while queued)──> leaves the queue
//
// A place is held from admission until the recv-request actor terminates, so cleanup has one
// path (DOWN) whatever way the request ended.

#include "actors/receiver_actor.hpp"

#include "actors/keyed_fifo.hpp"
#include "actors/peer_input.hpp"

#include <unordered_set>

namespace kvferry {

namespace {

struct receiver_state {
  std::uint32_t limit = 1;
  std::unordered_set<caf::actor_addr> admitted;
  keyed_fifo<caf::actor_addr, caf::typed_response_promise<bool>> queue;  // waiting requesters
  static inline const char* name = "kvferry.receiver";

  void admit_queued() {
    while (admitted.size() < limit && !queue.empty()) {
      auto next = queue.pop_front();
      admitted.insert(next->first);
      next->second.deliver(true);
    }
  }
};

receiver_actor::behavior_type receiver_impl(receiver_actor::stateful_pointer<receiver_state> self,
                                            std::uint32_t limit) {
  self->state.limit = limit == 0 ? 1 : limit;
  drop_unexpected_quietly(self);
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    if (st.admitted.erase(dm.source) == 0)
      st.queue.erase(dm.source);
    st.admit_queued();
  });
  return {
    [=](admit_atom) -> caf::typed_response_promise<bool> {
      // Read the sender first: make_response_promise takes it over from the current message.
      auto requester = caf::actor_cast<caf::actor_addr>(self->current_sender());
      auto rp = self->make_response_promise<bool>();
      if (!requester) {
        rp.deliver(caf::make_error(errc::invalid_argument, "anonymous admission request"));
        return rp;
      }
      auto& st = self->state;
      if (st.admitted.count(requester) > 0 || !st.queue.push_back(requester, rp)) {
        rp.deliver(caf::make_error(errc::duplicate_request_id,
                                   "this requester already holds or awaits a place"));
        return rp;
      }
      self->monitor(requester);
      self->state.admit_queued();
      return rp;
    },
  };
}

}  // namespace

receiver_actor spawn_receiver_actor(caf::actor_system& sys, std::uint32_t max_fetches_in_flight) {
  return sys.spawn(receiver_impl, max_fetches_in_flight);
}

}  // namespace kvferry
