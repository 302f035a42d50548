// kvferry::node — the engine-facing facade of one kvferry node. No CAF in this header.
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

#include "actors/transfer_handle.hpp"
#include "config/node_config.hpp"
#include "transport/result.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace kvferry {

namespace transport {
class fault_plan;
}

using region_id = std::uint32_t;

enum class memory_kind : std::uint8_t { host, cuda };

// `bytes` at `offset` inside a registered region.
struct block_span {
  region_id region = 0;
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
};

// A connected peer node (from connect()).
struct peer_id {
  std::uint64_t value = 0;
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
};

enum class cancel_result : std::uint8_t {
  not_found,                   // no such request on this node (never seen, or long finished)
  already_complete,            // it had reached a terminal state; nothing to do
  cancelled_before_advertise,  // nothing was exposed to the peer: cancelled, memory released
  cancel_requested_in_flight,  // the transport is being stopped; a terminal event follows
  backend_unhealthy,           // the owning actor did not answer within cancel_timeout_ms
  not_cancellable,             // the request is in a state that cannot be cancelled
};
const char* to_string(cancel_result r) noexcept;

struct health_snapshot {
  // False while the supervisor's restart budget is spent, while no request reached a terminal
  // state for progress_deadline_ms with work pending (true again once one does), or while the
  // quarantine budget is full.
  bool healthy = true;
  bool stalled = false;               // the global progress deadline is exceeded right now
  std::uint64_t ms_since_progress = 0;  // since a request last reached a terminal state
  std::uint64_t in_flight = 0;    // requests not yet terminal
  std::uint64_t succeeded = 0;
  std::uint64_t failed = 0;
  std::uint64_t cancelled = 0;
  std::uint64_t unreleased = 0;   // terminal requests whose memory is not (yet) released:
                                  // quarantined until the transport proves quiescence
  std::uint64_t poisoned = 0;     // staging slots taken out of service
  bool quarantine_full = false;   // unreleased + poisoned reached quarantine_budget
  std::uint64_t restarts = 0;     // child actors restarted by the supervisor
  std::uint64_t worker_replacements = 0;  // wedged UCX workers replaced (transport/wedge_detector.hpp)
  std::uint64_t bytes_sent = 0;   // bytes this node put to peers
  std::uint64_t bytes_received = 0;
  std::string to_string() const;  // one line, e.g. for the demo's summary
};

class node {
 public:
  // Starts a node: UCX transport, actors, and the entry actor published on
  // listen_host:listen_port. Errors name what failed (UCX, bind, configuration).
  static result<std::unique_ptr<node>> start(const node_config& config);
  // Test-only: the same, with the real transport wrapped by a fault-injection plan
  // (transport/fault_plan.hpp).
  static result<std::unique_ptr<node>> start(const node_config& config,
                                             std::shared_ptr<transport::fault_plan> faults);

  ~node();  // stop() with a short drain if the engine did not call it
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  // The port the entry actor listens on (useful with listen_port = 0).
  std::uint16_t port() const noexcept;
  const node_config& config() const noexcept;
  // This node's incarnation: new on every start.
  std::uint64_t epoch() const noexcept;

  // Registers engine-owned memory for transfers (host memory; cuda needs a CUDA build).
  result<region_id> register_region(void* ptr, std::size_t bytes,
                                    memory_kind kind = memory_kind::host);
  // Lets the transport allocate `bytes` of host memory for transfers (the fast path: peers on
  // the same host map it directly). Zero-filled and faulted in; lives until the node stops.
  result<region_id> allocate_region(std::size_t bytes);
  // Base address of a region (registered or allocated); nullptr for an unknown id.
  void* region_base(region_id r) const noexcept;

  // Connects to a peer node's entry actor (set-up call: blocks up to connect_timeout_ms).
  result<peer_id> connect(const std::string& host, std::uint16_t port);

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

  // Bounded by cancel_timeout_ms; never waits for the transport.
  cancel_result cancel(const std::string& request_id);
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

  // Test hooks: crash a child actor ("transport", "pool", "sender", "receiver"), or the actor
  // owning a request (as an exception inside it would).
  void crash_child_for_testing(const std::string& child);
  void crash_request_for_testing(const std::string& request_id);

  // Stops accepting work, waits up to `drain_timeout` for transfers in flight, then cancels the
  // rest, tears the actors and the transport down. After it returns no memory is touched.
  void stop(std::chrono::milliseconds drain_timeout = std::chrono::milliseconds{1000});

  struct impl;

 private:
  explicit node(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace kvferry
