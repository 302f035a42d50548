// The one shape of a block below the API. Standard library only.
//
// The engine names a block as a span of a registered region (kvferry/block.hpp). The node
// resolves it once, at the call, to a `desc`, and from there down every layer speaks `desc`:
// a fetch carries its destination blocks as descs (key: the rkey index inside the fetch), the
// send side plans `copy_op`s (local source address → remote desc), the transport posts them as
// UCX puts (key: the rkey index inside the batch), and the copy engine gathers into staging
// buffers with the same `copy_op`s (key unused: both ends are local).
#pragma once

#include <cstdint>

namespace kvferry {

// `bytes` at `addr` inside the memory named by `key`.
struct desc {
  std::uint64_t addr = 0;   // an address (as an integer) in this process or in a peer's region
  std::uint64_t bytes = 0;
  std::uint32_t key = 0;    // local: the region id; remote: the index of the region's rkey
};

// One contiguous copy of `dst.bytes` bytes from the local address `src` to `dst`.
struct copy_op {
  std::uint64_t src = 0;
  desc dst;
};

inline std::uint64_t addr_of(const void* p) noexcept {
  return reinterpret_cast<std::uint64_t>(p);
}
inline void* ptr_of(std::uint64_t a) noexcept {
  return reinterpret_cast<void*>(a);
}

}  // namespace kvferry
