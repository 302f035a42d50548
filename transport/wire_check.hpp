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

}  // namespace kvferry::transport
