// kvferry/node.hpp — the engine-facing facade of one kvferry node. Standard library only.
//
//   auto n = kvferry::node::start(cfg);                 // spawns the actors, publishes the entry
//   auto r = n.value()->register_region(ptr, bytes);    // memory peers may read from / write to
//   auto h = n.value()->send("req-1", {{r.value(), 0, 65536}});
//   auto p = n.value()->connect("127.0.0.1", port);     // on the decode side
//   auto g = n.value()->receive("req-1", p.value(), {{r2, 0, 65536}});
//   g.wait_for(5s); n.value()->poll(); n.value()->cancel("req-1"); n.value()->stop(1s);
//
// No call blocks on the network or on another request, except the set-up calls start(),
// connect() and stop(), which are bounded by configuration.
#pragma once

#include "block.hpp"
#include "config.hpp"
#include "health.hpp"
#include "result.hpp"
#include "transfer.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace kvferry {

class node {
 public:
  // Starts a node: UCX transport, actors, and the entry actor published on
  // listen_host:listen_port. Errors name what failed (UCX, bind, configuration).
  static result<std::unique_ptr<node>> start(const node_config& config);

  ~node();  // stop() with a short drain if the engine did not call it
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  // The port the entry actor listens on (useful with listen_port = 0).
  std::uint16_t port() const noexcept;
  const node_config& config() const noexcept;
  // This node's incarnation: new on every start.
  std::uint64_t epoch() const noexcept;

  // Registers engine-owned memory for transfers. memory_kind::cuda: device memory, which only
  // the node's copy engine touches (node_config::device): sends from it are staged, receives
  // into it are copied in a batch of messages at a time. Without a device for it: errc::unsupported,
  // naming why (no CUDA in this build, no driver or device, device "none").
  result<region_id> register_region(void* ptr, std::size_t bytes,
                                    memory_kind kind = memory_kind::host);
  // Lets the transport allocate `bytes` of host memory for transfers (the fast path: peers on
  // the same host map it directly). Zero-filled and faulted in; lives until the node stops.
  result<region_id> allocate_region(std::size_t bytes);
  // Base address of a region (registered or allocated); nullptr for an unknown id.
  void* region_base(region_id r) const noexcept;

  // Connects to a peer node's entry actor (set-up call: blocks up to connect_timeout_ms).
  // Connecting to a node this node is connected to already gives its peer id again.
  result<peer_id> connect(const std::string& host, std::uint16_t port);
  // Forgets a peer: its id no longer works (receive, decline, sends bound to it: not_connected)
  // and the node holds nothing of it any more; transfers already running with it run to their
  // end (cancel them to stop them). connect() again gives a new id. Returns errc::none, or
  // errc::not_connected for an id that is unknown or forgotten already. Never blocks.
  errc disconnect(peer_id peer);

  // Prefill side: offers `blocks` under `request_id` until a peer fetches them. The engine must
  // not reuse the blocks before the handle's *released* event. Errors (unknown region, range
  // outside it, duplicate id) resolve the returned handle at once and change nothing else.
  transfer_handle send(const std::string& request_id, const std::vector<block_span>& blocks,
                       const transfer_options& options = {});
  // Decode side: fetches `request_id` from `peer` into `blocks` (same count and sizes as the
  // sender's blocks; destination ids may differ).
  transfer_handle receive(const std::string& request_id, peer_id peer,
                          const std::vector<block_span>& blocks,
                          const transfer_options& options = {});

  // Prefill side, for a send with transfer_options::layer_blocks: the blocks of layer `layer`
  // are written, and may go to the peer as soon as its fetch is there. Never blocks. Errors:
  // unknown_request_id (no send of that id on this node, or it has ended), invalid_argument (the
  // send was not offered in layers, or this layer was marked ready already), out_of_range (the
  // send has no such layer).
  error_info layer_ready(const std::string& request_id, std::uint32_t layer);

  // Bounded by cancel_timeout_ms; never waits for the transport.
  cancel_result cancel(const std::string& request_id);
  // Decode side: tells `peer` that this node will not fetch `request_id` (e.g. its decode found
  // the blocks in its own prefix cache), so the prefill releases them at once without a
  // transfer: cancelled_before_advertise. not_cancellable once a fetch has started (cancel the
  // receive instead), not_found if the peer has no such offer (yet). Bounded by
  // cancel_timeout_ms; errors: not_connected, peer_unreachable, stopped.
  result<cancel_result> decline(const std::string& request_id, peer_id peer);
  // Events since the last poll(). Never blocks.
  std::vector<transfer_event> poll();
  // Like poll(), but waits at most `timeout` for the first event (for an engine's own event
  // loop; returns empty on timeout).
  std::vector<transfer_event> wait_events(std::chrono::milliseconds timeout);
  // Never blocks.
  health_snapshot health() const;
  // Waits at most `timeout` until `pred(health())` holds, waking on every change of the
  // counters and flags (not of ms_since_progress alone); true if it held.
  bool wait_health(const std::function<bool(const health_snapshot&)>& pred,
                   std::chrono::milliseconds timeout) const;
  // The UCX transports the endpoint to a receiving peer really uses, e.g. {"posix"} or {"tcp"}
  // (diagnostics; blocks up to 2 s). Empty when this node has not sent to that peer yet.
  std::vector<std::string> transports_to(std::uint64_t peer_epoch) const;
  // Epochs of the peers this node has put data to.
  std::vector<std::uint64_t> sent_to_peers() const;
  // What GET /metrics serves (Prometheus text format 0.0.4): health's counters, transfers by
  // side and outcome, bytes, peers, and histograms of queue wait and transfer time per side.
  // For an engine that exports its own metrics; never blocks on an actor.
  std::string metrics() const;
  // The port of the HTTP endpoint (node_config::metrics_listen); 0 while it is off.
  std::uint16_t metrics_port() const noexcept;

  // Stops accepting work, waits up to `drain_timeout` for transfers in flight, then cancels the
  // rest, tears the actors and the transport down. After it returns no memory is touched, and
  // every request has had its terminal and its *released* event (poll() still returns them).
  void stop(std::chrono::milliseconds drain_timeout = std::chrono::milliseconds{1000});

  struct impl;

 private:
  friend struct node_access;  // the node's own actors and the test library (internal)
  explicit node(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace kvferry
