// Structural checks for the two UCX blobs a peer sends us over the network: its worker address
// (ucp_worker_get_address) and packed remote keys (ucp_rkey_pack). UCX's own unpack functions take
// no length and trust every byte: a malformed worker address trips an always-on assertion inside
// ucp_ep_create (abort), a malformed rkey makes ucp_ep_rkey_unpack read far out of bounds (SIGSEGV).
// Run these checks first; only hand UCX bytes they accept.
//
// The checks follow the wire format of UCX 1.13 (the version this project builds against); a
// different UCX version may pack differently, and its blobs may be refused here.
//
// Standard library only; no UCX types in this header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvferry::transport {

// Size caps, far above what real blobs measure. UCX 1.13 worker addresses measure 38 bytes (self
// only) to ~220 bytes (self+tcp on two netdevs+posix+sysv+cma); a host with several RDMA ports and
// rc/ud/dc transports on each stays within a few KiB. The format's own ceiling (128 interfaces, every
// length at its maximum) is about 64 KiB, so nothing UCX can pack is lost by this cap.
inline constexpr std::size_t max_worker_address_size = 64 * 1024;
// Packed rkeys measure 9 bytes (no registration) to 25 bytes (self+tcp+sysv+cma) here, plus 8
// bytes per RDMA memory domain; 4 KiB leaves room for 60+ memory domains with the largest blob
// any 1.13 component packs.
inline constexpr std::size_t max_packed_rkey_size = 4 * 1024;

// nullopt: the bytes are a structurally valid packed worker address of this UCX version, safe to
// hand to ucp_ep_create; otherwise a short reason ("truncated in device 2's interface list", ...).
std::optional<std::string> check_worker_address(const std::uint8_t* data, std::size_t size);

// The same for a packed rkey (ucp_rkey_pack's output), safe for ucp_ep_rkey_unpack.
// Without the peer's address the checker cannot know which UCT component will read which blob, so
// it accepts a blob if its length fits any component this UCX has (0, 8, 12 or 24(+dir) bytes).
std::optional<std::string> check_packed_rkey(const std::uint8_t* data, std::size_t size);

// Stricter: `address` is the (already checked) worker address of the peer that packed the rkey,
// i.e. the one the endpoint was created from. Every memory domain the address names for a
// transport this UCX has is tied to that transport's component, and its blob must have exactly the
// shape that component reads. Prefer this overload where the address is at hand.
std::optional<std::string> check_packed_rkey(const std::uint8_t* data, std::size_t size,
                                             const std::uint8_t* address,
                                             std::size_t address_size);

// A shared-memory segment a packed rkey names. For a peer on this host, ucp_ep_rkey_unpack maps
// it (posix: open + mmap of `length` bytes; sysv: shmat) and UCX 1.13 crashes when that fails;
// puts then write at `base + offset` inside the mapping without a bounds check of their own.
struct shm_segment {
  enum class kind : std::uint8_t { sysv, posix };
  kind type = kind::sysv;
  std::uint64_t id = 0;      // sysv: the shmid; posix: the segment id (mode bits + mmid)
  std::uint64_t base = 0;    // the peer's address of the segment's first byte
  std::uint64_t length = 0;  // posix: the length the key claims; sysv: 0 (the segment's own)
  std::string dir;           // posix in file mode: the directory of the backing file
};

struct shm_keys {
  std::uint64_t system_id = 0;        // the peer's shared-memory system id; 0: it has none
  std::vector<shm_segment> segments;  // the key's posix and sysv blobs the address ties
};

// The shared-memory segments of a packed rkey, for the memory domains the peer's address ties to
// posix or sysv. Empty for blobs the strict check_packed_rkey refuses.
shm_keys shm_keys_of(const std::uint8_t* rkey, std::size_t size, const std::uint8_t* address,
                     std::size_t address_size);

// The shared-memory system id a worker address declares (this host's, for our own); 0: none.
std::uint64_t shm_system_id(const std::uint8_t* address, std::size_t address_size);

}  // namespace kvferry::transport
