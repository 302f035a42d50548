// send-request actor: the one owner of a prefill-side transfer.
#pragma once

#include "actors/messages.hpp"
#include "actors/request_lifecycle.hpp"

#include <vector>

namespace kvferry {

struct send_spec {
  request_context ctx;
  std::vector<desc> blocks;  // the source blocks, resolved (key: region id)
  bool staged = false;       // copy through buffer-pool leases before putting
  sender_actor bound_to;     // the only node that may fetch it (its entry), or none
  std::vector<std::uint32_t> layer_blocks{};  // transfer_options::layer_blocks (checked)
};

// Spawns the owner and announces it to the node's current sender.
send_request_actor spawn_send_request_actor(caf::actor_system& sys, send_spec spec);

}  // namespace kvferry
