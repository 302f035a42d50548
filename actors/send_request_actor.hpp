// send-request actor: the one owner of a prefill-side transfer.
#pragma once

#include "actors/messages.hpp"
#include "actors/request_lifecycle.hpp"

#include <cstdint>
#include <memory>
#include <vector>

namespace kvferry {

struct send_spec {
  request_context ctx;
  std::vector<desc> blocks;  // the source blocks, resolved (key: region id)
  bool staged = false;       // copy through buffer-pool leases before putting
  sender_actor bound_to;     // the only node that may fetch it (its entry), or none
  std::vector<std::uint32_t> layer_blocks{};  // transfer_options::layer_blocks (checked)
  std::vector<std::uint32_t> ready_layers{};  // layers marked ready while it waited in the book
};

// Whether `fetch`, from a node `origin` (checked by the sender: check_fetch, its limits and
// layout tag), may be served from the offer of request `id` (its blocks and layers, and the
// node it is bound to, if any): the puts per layer, or the refusal the fetcher hears (a misfit's
// details go to this node's log). A refused fetch leaves the offer as it was.
caf::expected<std::vector<std::vector<copy_op>>> match_fetch(
  const std::string& id, const std::vector<desc>& blocks,
  const std::vector<std::uint32_t>& layer_blocks, const caf::node_id& bound,
  const fetch_msg& fetch, const caf::node_id& origin);

// A fitting fetch came for an offer of the book (offer_book.hpp): the offer's owner moves into
// a new send-request actor, whose deadline is what is left of the offer's (`deadline_left_ms`;
// 0: none). The sender spawns it, registers it and relays the fetch to it.
send_request_actor spawn_send_request_actor(caf::actor_system& sys, send_spec spec,
                                            std::unique_ptr<request_owner> owner,
                                            std::uint32_t deadline_left_ms);

}  // namespace kvferry
