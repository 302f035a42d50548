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

class offer_book;

struct sender_spec {
  std::string node_name;  // appears in the errors the sender returns to fetchers
  // A fetch parks (waiting for its send()) at most its own deadline, never longer than this
  // (node_config::default_deadline_ms; 0: without limit).
  std::uint32_t default_park_ms = 0;
  std::string layout_tag;  // this node's (node_config::layout_tag); fetches must declare it
  // The node's request ids: where a fetch, a cancel_fetch or a decline finds the owner actor of
  // an id (one a predecessor of this sender spawned), and where the sender registers the owner
  // actor it spawns for an offer of the book (null: no owner is ever known).
  std::shared_ptr<request_registry> registry;
  fetch_limits limits;              // what one fetch may hold (checked before it parks)
  std::uint32_t max_parked = 65536;  // fetches parked at once, all peers ...
  std::uint32_t max_parked_per_peer = 4096;  // ... and per peer node
  std::shared_ptr<node_health> health;       // told how many are parked (may be null)
  // The node's sends that no peer has fetched yet (offer_book.hpp): kept across restarts of
  // the sender (null: offers come only as send-request actors already in the registry).
  std::shared_ptr<offer_book> book;
};

sender_actor spawn_sender_actor(caf::actor_system& sys, sender_spec spec);

}  // namespace kvferry
