// sender actor: the prefill node's published entry point for remote receivers.
#pragma once

#include "actors/messages.hpp"
#include "actors/node_health.hpp"
#include "actors/request_registry.hpp"
#include "actors/transfer_plan.hpp"

#include <memory>

#include <cstdint>
#include <string>

namespace kvferry {

struct sender_spec {
  std::string node_name;  // appears in the errors the sender returns to fetchers
  // A fetch parks (waiting for its send()) at most its own deadline, never longer than this
  // (node_config::default_deadline_ms; 0: without limit).
  std::uint32_t default_park_ms = 0;
  std::string layout_tag;  // this node's (node_config::layout_tag); fetches must declare it
  // The node's request ids: the proof that an announced owner owns its id, and where a fetch or
  // a decline finds an owner that has not announced itself yet (null: no owner is ever known).
  std::shared_ptr<const request_registry> registry;
  fetch_limits limits;              // what one fetch may hold (checked before it parks)
  std::uint32_t max_parked = 65536;  // fetches parked at once, all peers ...
  std::uint32_t max_parked_per_peer = 4096;  // ... and per peer node
  std::shared_ptr<node_health> health;       // told how many are parked (may be null)
};

sender_actor spawn_sender_actor(caf::actor_system& sys, sender_spec spec);

}  // namespace kvferry
