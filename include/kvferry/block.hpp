// kvferry/block.hpp — where a transfer's bytes are: registered regions and spans inside them.
// Standard library only.
#pragma once

#include <cstdint>

namespace kvferry {

// A region of memory registered with a node (register_region, allocate_region); never 0.
using region_id = std::uint32_t;

enum class memory_kind : std::uint8_t { host, cuda };

// `bytes` at `offset` inside a registered region: one KV block as the engine names it. The
// node resolves it to an address once, at the call, and the block keeps that one shape
// (core/descriptor.hpp) down to the transport.
struct block_span {
  region_id region = 0;
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
};

// A connected peer node (from node::connect()).
struct peer_id {
  std::uint64_t value = 0;
};

}  // namespace kvferry
