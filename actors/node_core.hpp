// node_core: what the facade and the actors of one node share (regions, the request registry,
// the poll() queue, counters, the current child actors), and request_owner, the one exit path
// of every request actor. Internal: includes CAF through messages.hpp.
#pragma once

#include "actors/event_sink.hpp"
#include "actors/messages.hpp"
#include "actors/node.hpp"
#include "actors/transfer_handle.hpp"
#include "config/node_config.hpp"
#include "gpu/copy_engine.hpp"
#include "transport/engine.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace kvferry {

struct registered_region {
  void* base = nullptr;
  std::size_t bytes = 0;
  memory_kind kind = memory_kind::host;
  std::shared_ptr<transport::memory_registration> registration;
};

// The children of the health supervisor, as currently running (a restart replaces one).
struct node_children {
  transport_actor transport;
  buffer_pool_actor pool;
  sender_actor sender;
  receiver_actor receiver;
};

enum class request_side : std::uint8_t { send, receive };

struct node_core {
  node_core(node_config cfg, std::uint64_t node_epoch);

  const node_config config;
  const std::uint64_t epoch;
  std::shared_ptr<transport::engine> engine;
  std::shared_ptr<detail::event_sink> events = std::make_shared<detail::event_sink>();
  // The buffer pool's staging buffers (allocated through the engine at start, kept for the
  // node's lifetime so a restarted pool reuses them).
  std::vector<std::shared_ptr<transport::memory_registration>> staging;
  // Copies into staging buffers (CPU today; the CUDA engine for device memory later).
  std::shared_ptr<gpu::copy_engine> copier;

  // -- regions ---------------------------------------------------------------------------------
  region_id add_region(registered_region r);
  // The region, or nullptr; the pointer stays valid until the node stops (regions are never
  // removed while a node runs).
  const registered_region* find_region(region_id id) const;
  // Resolves engine block spans to local (addr, bytes) pairs; checks ids and ranges.
  result<std::vector<std::pair<std::uint64_t, std::uint64_t>>> resolve_blocks(
      const std::vector<block_span>& blocks, std::vector<region_id>* regions_used = nullptr) const;

  // -- children --------------------------------------------------------------------------------
  node_children children() const;
  void set_children(node_children c);

  // -- request registry ------------------------------------------------------------------------
  // Reserves `id` for a new request; false when the id is in use (F12: never doubled).
  bool reserve(const std::string& id, std::shared_ptr<detail::handle_state> handle);
  // Attaches the owning actor to a reserved id.
  void attach_owner(const std::string& id, caf::actor owner);
  // The owning actor of `id` (invalid if none), and whether `id` finished recently.
  caf::actor owner_of(const std::string& id, bool* recently_finished) const;
  // Removes `id` if `handle` still owns it (called by request_owner once the request is
  // terminal and released, or when its actor ends; a newer request may own the id by then).
  void unregister(const std::string& id, const detail::handle_state* handle);
  // Owners of every registered request (stop() uses it).
  std::vector<caf::actor> all_owners() const;

  // -- peers we sent to (diagnostics) -------------------------------------------------------------
  void note_peer(std::uint64_t peer_epoch);
  std::vector<std::uint64_t> peers() const;

  // -- counters (health) -----------------------------------------------------------------------
  std::atomic<std::uint64_t> in_flight{0}, succeeded{0}, failed{0}, cancelled{0}, unreleased{0},
      restarts{0}, bytes_sent{0}, bytes_received{0}, poisoned{0};
  // steady_clock nanoseconds of the last request that reached a terminal state, or of the
  // moment work became pending on an idle node.
  std::atomic<std::int64_t> last_progress_ns{0};
  std::atomic<bool> stalled{false};  // global progress deadline exceeded with work pending
  std::atomic<bool> accepting{true};
  // Every change of the counters and flags above is announced here (node::wait_health).
  std::mutex health_mtx;
  std::condition_variable health_cv;
  std::uint64_t health_changes = 0;
  void notify_health() {
    {
      std::lock_guard<std::mutex> guard{health_mtx};
      ++health_changes;
    }
    health_cv.notify_all();
  }
  std::atomic<std::uint16_t> port{0};  // where the sender is published
  // The health supervisor, which lives as long as the node: fetches carry it so that peers
  // watch this node through one actor (fetch_msg::anchor). Set once at start.
  caf::actor_addr anchor;
  std::atomic<bool> unhealthy{false};

 private:
  mutable std::shared_mutex regions_mtx_;
  std::vector<registered_region> regions_;  // region_id = index + 1

  mutable std::mutex children_mtx_;
  node_children children_;

  struct entry {
    std::shared_ptr<detail::handle_state> handle;
    caf::actor owner;
  };
  mutable std::mutex registry_mtx_;
  std::unordered_map<std::string, entry> registry_;
  std::deque<std::string> recent_order_;             // bounded memory of finished ids
  std::unordered_set<std::string> recent_finished_;

  mutable std::mutex peers_mtx_;
  std::vector<std::uint64_t> peers_;
};

// The single exit path of a request actor: finish() delivers the terminal result exactly once,
// release() the *released* event exactly once; the destructor is the backstop (an actor that
// dies without finishing fails its request; memory never proven quiescent is not released).
class request_owner {
 public:
  request_owner(std::shared_ptr<node_core> core, std::shared_ptr<detail::handle_state> handle,
                request_side side);
  ~request_owner();
  request_owner(const request_owner&) = delete;
  request_owner& operator=(const request_owner&) = delete;

  const std::string& id() const { return handle_->request_id(); }
  node_core& core() { return *core_; }
  bool terminal() const noexcept { return terminal_; }
  void set_in_flight();
  void finish(transfer_result r);
  void release();
  // The usual ending: finish, and release when the memory is proven quiescent.
  void conclude(transfer_result r, bool quiescent) {
    finish(std::move(r));
    if (quiescent)
      release();
  }

 private:
  std::shared_ptr<node_core> core_;
  std::shared_ptr<detail::handle_state> handle_;
  request_side side_;
  bool terminal_ = false;
  bool released_ = false;
};

// Builds a terminal result.
transfer_result make_result(transfer_status s, errc code = errc::none, std::string msg = {},
                            std::uint64_t bytes = 0);
// Turns a CAF error (ours or CAF's own) into a terminal failed/cancelled result.
transfer_result result_from_error(const caf::error& err);
// What an exception says: what() for a std::exception, a fixed text for anything else.
std::string describe_exception(std::exception_ptr ep);
// The result of a request whose actor was told to exit (the node is stopping).
transfer_result stopped_result(const caf::error& exit_reason);

}  // namespace kvferry
