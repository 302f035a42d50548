// Planning a transfer on the send side: pure functions, no CAF, no actor (unit-tested alone).
//
//   source descs (the engine's blocks) + the peer's destination descs ──plan_puts──> copy_ops
//   copy_ops + a staging buffer ──next_chunk──> copies into the buffer + puts out of it
#pragma once

#include "core/descriptor.hpp"
#include "kvferry/result.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvferry {

// What a fetch says about the destination, as far as planning needs it.
struct destination {
  const std::string& request_id;
  std::uint64_t epoch;                            // the fetching node's incarnation
  std::size_t worker_address_bytes;               // its UCX worker address (size only)
  std::size_t rkeys;                              // how many packed rkeys it carries
  const std::vector<std::uint64_t>& region_bases; // per rkey: the region's base ...
  const std::vector<std::uint64_t>& region_bytes; // ... and size
  const std::vector<desc>& blocks;                // key: index of the block's rkey
};

// Checks block ranges, (first, count) pairs: ascending, disjoint, none empty, inside `offered`
// blocks (so they never select more blocks than offered). Returns how many they select.
result<std::uint64_t> count_ranges(const std::vector<std::uint32_t>& ranges,
                                   std::uint64_t offered);
// The offered blocks a fetch wants (count_ranges' rules); empty `ranges`: all of them.
result<std::vector<desc>> select_blocks(const std::vector<desc>& source,
                                        const std::vector<std::uint32_t>& ranges);

// Validates the destination against the source blocks (count, sizes, rkey indices, ranges
// inside the declared regions, epoch, address) and builds the puts, coalescing runs that are
// contiguous on both sides. The error names the problem (and the block).
result<std::vector<copy_op>> plan_puts(const std::vector<desc>& source, const destination& dst);

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
