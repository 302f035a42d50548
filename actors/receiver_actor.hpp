// receiver actor: admits queued receives, at most max_fetches_in_flight at once.
#pragma once

#include "actors/held_requests.hpp"
#include "actors/messages.hpp"
#include "actors/recv_request_actor.hpp"
#include "actors/request_registry.hpp"

#include <cstdint>
#include <memory>

namespace kvferry {

// Receives waiting for admission, oldest first, held as state (held_requests.hpp): node::receive
// adds one; the receiver takes the oldest out when a place frees and spawns its recv-request;
// node::cancel, node::stop and the receiver's sweep (deadlines) end one there.
using queued_receive = held_request<recv_spec>;
using admission_queue = held_requests<recv_spec>;

struct receiver_spec {
  std::uint32_t max_fetches_in_flight = 1;  // places: recv-requests alive at once
  // Outlives the receiver (the supervisor's spec holds it): a restarted one admits from it.
  std::shared_ptr<admission_queue> queue;
  // Where the receiver registers the recv-request it spawns for a queued receive (under the
  // queue's lock, so that cancel() finds it once the entry is gone).
  std::shared_ptr<request_registry> registry;
};

receiver_actor spawn_receiver_actor(caf::actor_system& sys, receiver_spec spec);

}  // namespace kvferry
