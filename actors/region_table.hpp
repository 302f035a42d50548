// region_table: the memory a node registered for transfers, and the resolution of the engine's
// block spans into descriptors. Written by the facade (which adds regions and resolves the
// blocks of each call); read by receive requests, which describe their destination regions in
// the fetch only when they send it. No CAF here.
#pragma once

#include "core/descriptor.hpp"
#include "kvferry/block.hpp"
#include "kvferry/result.hpp"

#include <cstdint>
#include <optional>
#include <shared_mutex>
#include <vector>

namespace kvferry {

struct region_info {
  std::uint64_t base = 0;
  std::uint64_t bytes = 0;
  memory_kind kind = memory_kind::host;
  std::vector<std::uint8_t> packed_rkey;  // for peers to write into it
  // UCX allocated it (allocate_region): a peer on this host can map it and write with UCX puts,
  // outside any receive window. Registered engine memory is written only through windows.
  bool mappable = false;
};

// The regions a fetch's destination blocks lie in, each once, as the sender needs them.
struct indexed_regions {
  std::vector<std::vector<std::uint8_t>> rkeys;  // packed, per region
  std::vector<std::uint64_t> bases, bytes;       // per region
  bool any_mappable = false;                     // one of them is region_info::mappable
};

class region_table {
 public:
  explicit region_table(std::uint32_t max_blocks_per_request)
      : max_blocks_(max_blocks_per_request) {}

  region_id add(region_info r);
  // A copy of the region's description; nullopt-like (bytes == 0) for an unknown id.
  region_info find(region_id id) const;
  // Resolves the engine's spans into descriptors (key: the region id), checking the count,
  // ids, emptiness and ranges; the error names the offending block.
  result<std::vector<desc>> resolve(const std::vector<block_span>& blocks) const;
  // Destination blocks must not share a byte (else the result depends on which write lands
  // last): the error names two blocks that do. O(n log n).
  static std::optional<error_info> find_overlap(const std::vector<desc>& blocks);
  // The regions of resolved `blocks` (keys: region ids), each once; rewrites each block's key to
  // its region's index there.
  indexed_regions index_regions(std::vector<desc>& blocks) const;
  // Whether one of resolved `blocks` (keys: region ids) lies in a region of `kind`.
  bool any_of_kind(const std::vector<desc>& blocks, memory_kind kind) const;

 private:
  const std::uint32_t max_blocks_;
  mutable std::shared_mutex mtx_;
  std::vector<region_info> regions_;  // region_id = index + 1; never removed while a node runs
};

}  // namespace kvferry
