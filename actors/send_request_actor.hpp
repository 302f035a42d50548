// send-request actor: the one owner of a prefill-side transfer.
#pragma once

#include "actors/messages.hpp"

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace kvferry {

struct node_core;
namespace detail {
class handle_state;
}

struct send_spec {
  std::shared_ptr<node_core> core;
  std::shared_ptr<detail::handle_state> handle;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> blocks;  // local (addr, bytes)
};

// Spawns the owner and announces it to the node's sender.
send_request_actor spawn_send_request_actor(caf::actor_system& sys, send_spec spec);

// Pure helper (unit-tested): validates a fetch against the source blocks and builds the puts,
// coalescing runs that are contiguous on both sides. Returns an error naming the problem.
caf::expected<std::vector<put_item>>
plan_puts(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& source,
          const fetch_msg& fetch);

}  // namespace kvferry
