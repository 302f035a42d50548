// kvferry/transfer.hpp — one transfer as the engine sees it: status, result, events, options,
// cancel results and the handle. Standard library only.
//
// A handle is a value (cheap to copy, nothrow-movable); dropping every copy is safe at any time:
// the owning request actor keeps what the transport may still touch. The owning actor resolves
// the shared state exactly once with a terminal result, and separately marks it *released* when
// the request's memory may be reused (which can come later than the terminal result).
#pragma once

#include "block.hpp"
#include "errc.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace kvferry {

enum class transfer_status : std::uint8_t {
  pending,    // not yet exposed to the peer (queued, or waiting for the peer's fetch)
  in_flight,  // the peer's fetch matched / puts posted
  succeeded,  // every byte written and flushed
  failed,     // see result.code
  cancelled,  // cancelled by the engine or by the peer
};

const char* to_string(transfer_status s) noexcept;
inline bool is_terminal(transfer_status s) noexcept {
  return s == transfer_status::succeeded || s == transfer_status::failed ||
         s == transfer_status::cancelled;
}

// Where a transfer's time went, in microseconds (0: the phase did not happen).
struct transfer_timing {
  // From the call until data started to move: a send waiting for its fetch, a receive waiting
  // for admission.
  std::uint64_t queue_us = 0;
  // From then until the first bytes were in place (the first copy or put batch answered). A
  // receive reports what its sender measured, from the fetch's arrival there.
  std::uint64_t first_byte_us = 0;
  // From the start of moving until the terminal state.
  std::uint64_t transfer_us = 0;
};

struct transfer_result {
  transfer_status status = transfer_status::pending;
  errc code = errc::none;
  std::string message;       // empty on success; otherwise says what went wrong
  std::uint64_t bytes = 0;   // bytes moved
  transfer_timing timing;    // filled by the request's owner at the terminal state
  // How the bytes went, once some did: the UCX transports of the endpoint and the path, "put"
  // (UCX RMA into memory the receiver registered with UCX) or "am" (kvferry's data messages),
  // e.g. "posix put", "tcp am", "cma put+am". A receive reports its sender's. Empty when
  // nothing moved.
  std::string transport{};
};

enum class event_kind : std::uint8_t {
  completed,     // terminal: succeeded, failed or cancelled (see result)
  released,      // the request's memory may be reused
  layer_landed,  // receive side of a layer-wise send: `layer`'s blocks are in place (see
                 // transfer_options::layer_blocks); comes before the request's completed event
};

struct transfer_event {
  std::string request_id;
  event_kind kind = event_kind::completed;
  transfer_result result;  // completed, released: the terminal result; layer_landed: empty
  std::uint32_t layer = 0;   // layer_landed: which layer (0-based) ...
  std::uint32_t layers = 0;  // ... of how many the sender offered
};

namespace detail {
class handle_state;  // shared by the handle copies and the owning request actor (internal)
}  // namespace detail

// Blocks [first, first + count) of an offer, by index in the sender's list.
struct block_range {
  std::uint32_t first = 0;
  std::uint32_t count = 0;
};

struct transfer_options {
  // Deadline in milliseconds from the call, enforced by the request's owning actor in every
  // state (queued, waiting for the peer, parked, staging, in flight); 0: the node's
  // default_deadline_ms. When it passes, the terminal event (failed, errc::timed_out) comes at
  // once; the *released* event follows once the transport proves the memory quiescent.
  std::uint32_t deadline_ms = 0;
  // Send side: copy the source blocks through the node's registered staging buffers (buffer
  // pool leases, filled by the copy engine) and put from there, instead of exposing the
  // blocks to the network directly. The path device memory takes; for host memory it keeps
  // the engine's blocks out of UCX's hands. Ignored by receive().
  bool stage_through_pool = false;
  // Send side: the offer is for this peer only (a peer_id from this node's connect() to the
  // decode node). If that node dies or its connection is lost before it fetched, the offer
  // fails at once (peer_failed) and is released; a fetch from any other node is refused and
  // the offer waits on. Zero: any node may fetch it. Ignored by receive().
  peer_id bound_to;
  // Receive side: fetch only these blocks of the offer (ascending, not overlapping, none
  // empty), e.g. all but a prefix the decode already has; the destination blocks match them in
  // order. Empty: every block. The offer is released whole once the transfer ends. Ignored by
  // send().
  std::vector<block_range> fetch_ranges;
  // Send side, layer-wise streaming: the offered blocks form layers (block groups), layer i
  // being the next layer_blocks[i] blocks in order (each count >= 1, their sum the number of
  // blocks, at most max_layers layers). The offer may be made before the layers exist: a layer
  // is sent only once node::layer_ready() says the engine wrote it, each layer as soon as it is
  // ready and the peer's fetch is there, in the order they became ready. The receiving node
  // gets a layer_landed event per layer as each lands (also for a layer none of whose blocks it
  // fetched), then the completed event after the last. The deadline covers every layer: one
  // never marked ready fails the transfer (timed_out) on both sides. Empty: one layer, ready at
  // the call, and no layer events. Ignored by receive().
  std::vector<std::uint32_t> layer_blocks;
};

// The most layers one send may have (transfer_options::layer_blocks).
inline constexpr std::uint32_t max_layers = 65536;

enum class cancel_result : std::uint8_t {
  not_found,                   // no such request on this node (never seen, or long finished)
  already_complete,            // it had reached a terminal state; nothing to do
  cancelled_before_advertise,  // nothing was exposed to the peer: cancelled, memory released
  cancel_requested_in_flight,  // the transport is being stopped; a terminal event follows
  backend_unhealthy,           // the owning actor did not answer within cancel_timeout_ms
  not_cancellable,             // decline(): the offer's fetch already runs
};
const char* to_string(cancel_result r) noexcept;

class transfer_handle {
 public:
  transfer_handle() = default;
  explicit transfer_handle(std::shared_ptr<detail::handle_state> st) noexcept
      : st_(std::move(st)) {}

  bool valid() const noexcept { return st_ != nullptr; }
  const std::string& request_id() const;
  // Never blocks.
  transfer_status status() const noexcept;
  // True once the request's memory may be reused. Never blocks.
  bool released() const noexcept;
  // The terminal result, if there is one yet. Never blocks on the network (a short mutex).
  std::optional<transfer_result> result() const;
  // Waits at most `timeout` for the terminal result.
  std::optional<transfer_result> wait_for(std::chrono::milliseconds timeout) const;
  // Waits at most `timeout` for the *released* event; true once the memory may be reused.
  bool wait_released(std::chrono::milliseconds timeout) const;
  // Waits at most `timeout` until the transfer left `pending` (in flight, or terminal).
  bool wait_started(std::chrono::milliseconds timeout) const;
  // Receive side of a layer-wise send: how many layers have landed so far (never blocks), and
  // waits at most `timeout` for layer `layer` to land: true once it has, false on timeout or
  // when the transfer ended without it. The node's poll() holds the layer's event by then.
  std::uint32_t layers_landed() const;
  bool wait_layer(std::uint32_t layer, std::chrono::milliseconds timeout) const;
  // Calls `callback` once with the terminal result: at once (on this thread) if there is one,
  // else on the thread that ends the request: the owning actor's, or, for a send no peer has
  // fetched yet, the one calling node::cancel() or node::stop() (with no lock of the node
  // held). The callback must not block. Callbacks registered
  // before the result came have all returned by the time status()/result()/wait_for() or
  // poll() show the result. Once status()/result()/wait_for() show the result, or released()/
  // wait_released() the release, the node's poll() holds the matching event.
  void on_done(std::function<void(const transfer_result&)> callback) const;

 private:
  std::shared_ptr<detail::handle_state> st_;
};

static_assert(std::is_nothrow_move_constructible_v<transfer_handle>);
static_assert(std::is_nothrow_move_assignable_v<transfer_handle>);

}  // namespace kvferry
