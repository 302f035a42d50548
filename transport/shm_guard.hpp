// shm_guard: the shared-memory segments a same-host peer's rkey makes UCX map, checked the way UCX
// will map them, before it does. UCX 1.13 crashes when a segment of an rkey it unpacks does not
// attach, and its puts into a mapped segment are not bounds-checked: a peer that names a segment
// of its choosing and addresses outside it would make this process write into its own memory, or
// (posix, a file shorter than the key claims) die of SIGBUS. No CAF here.
#pragma once

#include "transport/wire_check.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvferry::transport {

// Where a put through one segment may write, in the peer's addresses: [begin, end).
struct shm_extent {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

// Attaches (sysv) or opens (posix, by the path UCX 1.13 derives) each segment of `keys` and lets
// it go again; on success appends each segment's extent: sysv [base, base + its size), posix
// [base, base + length), where the backing file must hold `length` bytes. nullopt, or the
// reason the first refused segment was refused.
std::optional<std::string> shm_extents(const shm_keys& keys, std::vector<shm_extent>* out);

// Whether [addr, addr + bytes) lies inside every extent (UCX may put through any of them).
bool inside_all(const std::vector<shm_extent>& extents, std::uint64_t addr, std::uint64_t bytes);

}  // namespace kvferry::transport
