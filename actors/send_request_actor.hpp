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
  bool staged = false;  // copy through buffer-pool leases before putting
  std::uint32_t deadline_ms = 0;  // from spawn; 0: none
};

// Pure helper (unit-tested): takes from `items[next]` on as many bytes as fit in a staging
// buffer of `capacity` bytes at `staging_addr` (splitting an item that does not fit), and
// returns the copies into the buffer and the puts out of it. Advances `next`/`offset`.
struct staged_chunk {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> copies_from;  // (source addr, bytes)
  std::vector<put_item> puts;                                        // from the staging buffer
};
staged_chunk next_chunk(const std::vector<put_item>& items, std::size_t& next,
                        std::uint64_t& offset, std::uint64_t staging_addr,
                        std::uint64_t capacity);

// Spawns the owner and announces it to the node's sender.
send_request_actor spawn_send_request_actor(caf::actor_system& sys, send_spec spec);

// Pure helper (unit-tested): validates a fetch against the source blocks and builds the puts,
// coalescing runs that are contiguous on both sides. Returns an error naming the problem.
caf::expected<std::vector<put_item>>
plan_puts(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& source,
          const fetch_msg& fetch);

}  // namespace kvferry
