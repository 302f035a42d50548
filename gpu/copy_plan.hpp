// How a copy engine turns a submitted list of segments into work: checks, coalescing, the choice
// between one memcpy per segment and the batched copy kernel, the kernel's pieces and launches,
// and which memory a pointer names. Host-side logic only, standard library only, so that every
// decision the CUDA engine takes is unit-tested on machines without a GPU.
//
//   segments --check_segments--> ok --plan_copy--> nothing | memcpy_each | kernel
//                                                   kernel: pointer_resolver (translate)
//                                                           --split_pieces--> pieces
//                                                           --split_launches--> launches
#pragma once

#include "core/descriptor.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace kvferry::gpu {

// Empty for a valid copy, otherwise its first problem: a null dst or src with bytes > 0, or a
// segment whose source and destination ranges overlap (memcpy's precondition). Empty segments
// are always valid. Every engine refuses such a copy before writing any byte of it.
std::string check_segments(const std::vector<copy_op>& segments);

// True when some segment writes bytes that another segment of the same copy reads or writes:
// then the result depends on the order of the segments, and a copy that does them in parallel
// would not be the in-order copy the contract promises. Empty segments never interfere; sources
// may overlap each other (they are only read). O(n log n). Expects check_segments() to pass.
bool segments_interfere(const std::vector<copy_op>& segments);

// A run of submitted segments [first, last] done as one copy.
struct planned_segment {
  copy_op op;
  std::size_t first = 0;  // index of the first submitted segment it covers
  std::size_t last = 0;   // index of the last one
};

// Drops empty segments and merges a segment into the one before it (in submission order) when it
// continues both its source and its destination, so that e.g. consecutive blocks of one
// allocation copied to consecutive staging bytes become one memcpy.
std::vector<planned_segment> coalesce_segments(const std::vector<copy_op>& segments);

enum class copy_method {
  nothing,      // no byte to copy
  memcpy_each,  // one cudaMemcpyAsync per planned segment, in order
  kernel,       // the batched copy kernel over every planned segment at once
};

struct copy_limits {
  // At least this many planned segments (after coalescing) go to the kernel: one memcpy is the
  // DMA engine's job, and a launch per segment costs more than one launch for all.
  std::size_t kernel_min_segments = 2;
  // A thread block copies at most this much: long segments are split so that one of them does
  // not leave the rest of the GPU idle. 32 KiB is 8 16-byte loads per thread of 256.
  std::uint64_t max_piece_bytes = 32 * 1024;
  // Pieces per kernel launch (the grid size); a larger copy takes several launches.
  std::size_t max_pieces_per_launch = 65535;
};

struct copy_plan {
  copy_method method = copy_method::nothing;
  // Segments interfere: they go one after the other, in submission order and uncoalesced (a
  // merged segment could overlap itself), so the result is that of the in-order copy.
  bool ordered = false;
  std::vector<planned_segment> segments;  // non-empty ones, in order
};

// The plan for a copy that passed check_segments(). `kernel` only says the shape suits the
// kernel: the engine still falls back to memcpy_each when some pointer is not one the kernel can
// dereference (pageable host memory, another device's memory).
copy_plan plan_copy(const std::vector<copy_op>& segments, const copy_limits& limits = {});

// One contiguous copy done by one thread block: addresses as the device sees them. The layout
// is the kernel's table entry (three 64-bit words).
struct copy_piece {
  std::uint64_t src = 0;
  std::uint64_t dst = 0;
  std::uint64_t bytes = 0;
};

inline bool operator==(const copy_piece& a, const copy_piece& b) noexcept {
  return a.src == b.src && a.dst == b.dst && a.bytes == b.bytes;
}

// Splits every range into pieces of at most `max_piece_bytes` (> 0), in order, dropping empty
// ranges; a piece starts where the previous one of its range ended, so relative alignment of
// source and destination is kept.
std::vector<copy_piece> split_pieces(const std::vector<copy_piece>& ranges,
                                     std::uint64_t max_piece_bytes);

// Pieces [first, first + count) go in one launch.
struct launch_range {
  std::size_t first = 0;
  std::size_t count = 0;
};

inline bool operator==(const launch_range& a, const launch_range& b) noexcept {
  return a.first == b.first && a.count == b.count;
}

// Consecutive launches covering `pieces` pieces, each at most `max_per_launch` (> 0).
std::vector<launch_range> split_launches(std::size_t pieces, std::size_t max_per_launch);

// What an address names, as far as a copy engine cares.
enum class pointer_kind : std::uint8_t {
  pageable,     // host memory CUDA does not know: only memcpy can reach it
  pinned_host,  // page-locked host memory mapped for the device (device address = + offset)
  device,       // device memory of `device`
  managed,      // managed memory: every device can dereference it as it is
};

struct pointer_info {
  pointer_kind kind = pointer_kind::pageable;
  int device = -1;  // for device memory: its device
  // Added (mod 2^64) to a host address of pinned memory gives its device address; 0 where they
  // agree (unified addressing) and for every other kind.
  std::uint64_t device_offset = 0;
};

// A lookup's answer: the info holds for every address in [begin, end).
struct pointer_range {
  pointer_info info;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

// True when a kernel on `device` can dereference memory of this kind.
bool kernel_can_access(const pointer_info& info, int device) noexcept;

// Resolves addresses with a lookup function (cudaPointerGetAttributes in the CUDA engine) and
// remembers each answer's range, so the thousands of segments of one copy cost a few lookups
// when they lie in a few allocations. One resolver serves one copy: memory may be freed and
// reused between copies, and the cache would then be stale.
class pointer_resolver {
 public:
  // Answers for `addr`, or returns false and says why in `error`. The range it gives must
  // contain `addr` and be one over which the answer holds for every address.
  using lookup_fn =
      std::function<bool(std::uint64_t addr, pointer_range* out, std::string* error)>;

  explicit pointer_resolver(lookup_fn lookup) : lookup_(std::move(lookup)) {}

  bool resolve(std::uint64_t addr, pointer_info* out, std::string* error);
  std::size_t lookups() const noexcept { return lookups_; }

 private:
  lookup_fn lookup_;
  std::map<std::uint64_t, pointer_range> known_;  // by begin
  std::size_t lookups_ = 0;
};

// Host ranges pinned through pin_host_range (copy_engine.hpp), so that a copy into a registered
// staging buffer needs no driver lookup per segment. Thread-safe.
class pinned_ranges {
 public:
  // False when [begin, begin + bytes) overlaps a range already recorded (bytes > 0).
  bool add(std::uint64_t begin, std::uint64_t bytes, std::uint64_t device_offset);
  // False when no range starts at `begin`.
  bool remove(std::uint64_t begin);
  // The range containing `addr`, as a lookup answer (kind pinned_host), or false.
  bool find(std::uint64_t addr, pointer_range* out) const;
  std::size_t size() const;

 private:
  struct entry {
    std::uint64_t end = 0;
    std::uint64_t device_offset = 0;
  };
  mutable std::mutex mutex_;
  std::map<std::uint64_t, entry> ranges_;  // by begin
};

}  // namespace kvferry::gpu
