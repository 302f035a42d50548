// Planning a transfer on the send side: pure functions, no CAF, no actor (unit-tested alone).
//
//   source descs (the engine's blocks) + the peer's destination descs ──plan_puts──> copy_ops
//   copy_ops + a staging buffer ──next_chunk──> copies into the buffer + puts out of it
#pragma once

#include "core/descriptor.hpp"
#include "kvferry/result.hpp"
#include "kvferry/transfer.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvferry {

// What a fetch says about the destination, as far as checking and planning need it.
struct destination {
  const std::string& request_id;
  std::uint64_t epoch;                                // the fetching node's incarnation
  const std::vector<std::uint8_t>& worker_address;    // its UCX worker address
  const std::vector<std::vector<std::uint8_t>>& rkeys;  // packed rkeys of its regions
  const std::vector<std::uint64_t>& region_bases;     // per rkey: the region's base ...
  const std::vector<std::uint64_t>& region_bytes;     // ... and size
  const std::vector<desc>& blocks;                    // key: index of the block's rkey
  const std::vector<std::uint32_t>& ranges;           // offered blocks wanted; empty: all
};

// Bounds on what one fetch from the wire may hold (node_config: max_request_id_bytes,
// max_blocks_per_request).
struct fetch_limits {
  std::uint32_t max_request_id_bytes = 256;
  std::uint32_t max_blocks = 65536;
};

// Checks what a fetch says about itself, before it is matched with any offer: sizes within the
// limits, an epoch, a worker address, one region per rkey, every block non-empty, naming an rkey
// and inside its declared region, ranges in pairs. The refusal names the fetch's own values
// only: it reveals nothing of what this node offers, so it may go back to the fetcher as it is.
std::optional<error_info> check_destination(const destination& dst, const fetch_limits& limits);
// check_destination, then the worker address and the rkeys as bytes UCX will read
// (transport/wire_check.hpp): what every fetch from the wire passes before anything else.
std::optional<error_info> check_fetch(const destination& dst, const fetch_limits& limits);

// Checks block ranges, (first, count) pairs: ascending, disjoint, none empty, inside `offered`
// blocks (so they never select more blocks than offered). Returns how many they select.
result<std::uint64_t> count_ranges(const std::vector<std::uint32_t>& ranges,
                                   std::uint64_t offered);
// The offered blocks a fetch wants (count_ranges' rules); empty `ranges`: all of them.
result<std::vector<desc>> select_blocks(const std::vector<desc>& source,
                                        const std::vector<std::uint32_t>& ranges);

// Matches a destination (which passed check_destination) with the source blocks (count and
// sizes) and builds the puts, coalescing runs that are contiguous on both sides. The error
// names the problem and the block, so it describes the offer: for this node's log, not for the
// fetcher.
result<std::vector<copy_op>> plan_puts(const std::vector<desc>& source, const destination& dst);
// plan_puts, cut into layers: layer i takes the next `layer_sizes[i]` blocks of `source` (the
// sizes sum to source.size(); a layer may be empty), coalesced within a layer only.
result<std::vector<std::vector<copy_op>>> plan_layer_puts(
  const std::vector<desc>& source, const std::vector<std::uint32_t>& layer_sizes,
  const destination& dst);

// A fetch (which passed check_destination) for an offer of `source` blocks in layers
// `layer_blocks` (empty: one layer): the blocks it selects, planned per layer (plan_layer_puts),
// or why it does not fit the offer (block count, sizes, ranges: for this node's log).
result<std::vector<std::vector<copy_op>>> plan_fetch(const std::vector<desc>& source,
                                                     const std::vector<std::uint32_t>& layer_blocks,
                                                     const destination& dst);

// Layer-wise sends (transfer_options::layer_blocks): how many of the blocks that `ranges`
// select (count_ranges' rules, already checked; empty: all) lie in each layer, layer i being
// the next layer_blocks[i] of the offered blocks. Empty `layer_blocks`: one layer of all.
std::vector<std::uint32_t> selected_per_layer(const std::vector<std::uint32_t>& layer_blocks,
                                              const std::vector<std::uint32_t>& ranges,
                                              std::uint64_t offered);
// Checks layer_blocks against the number of blocks offered: each >= 1, at most max_layers of
// them, summing to `offered`. Empty is fine (one layer).
std::optional<error_info> check_layers(const std::vector<std::uint32_t>& layer_blocks,
                                       std::uint64_t offered);

// One chunk of a staged transfer: the copies that gather it into the staging buffer, and the
// puts that send it from there.
struct staged_chunk {
  std::vector<copy_op> copies;  // source blocks -> the staging buffer (key unused)
  std::vector<copy_op> puts;    // the staging buffer -> the destination
};

// Takes from `ops[next]` on as many bytes as fit in `staging` (splitting an op that does not
// fit). Advances `next` / `offset` (bytes of ops[next] already taken).
staged_chunk next_chunk(const std::vector<copy_op>& ops, std::size_t& next, std::uint64_t& offset,
                        const desc& staging);

}  // namespace kvferry
