// The UCX engine behind transport::engine. Internal to transport/.
//
// Threads: the caller's threads only post work (asio::post) and read atomics; everything that
// touches the worker, an endpoint, an rkey or a request runs on the progress thread. UCX
// callbacks never act: they queue what happened (completed_, failed_eps_, acks_) and the
// progress cycle handles it after ucp_worker_progress returned, so no user callback runs inside
// ucp_worker_progress. One exception: a peer's data message is copied into registered memory
// and acknowledged (one ucp_am_send_nbx) inside its callback, the only place its payload and
// reply endpoint are valid.
//
// Progress cycle (progress thread):
//
//     +--> drain ucp_worker_progress --> handle queued completions / endpoint failures --+
//     |      (budget exhausted: post a new cycle, let other handlers run)               |
//     +------------- something was handled, or ucp_worker_arm == UCS_ERR_BUSY <----------+
//                                  ucp_worker_arm == UCS_OK --> async_wait on the event fd
//
// A put batch:
//
//   posting --(window full)--> waiting --(requests done)--> posting ...
//      | all chunks posted, or cancel / peer failure / stop (stop_posting)
//      v
//   draining (outstanding requests complete: success, error or UCS_ERR_CANCELED; data
//      |       messages acknowledged, unless the peer's endpoint failed)
//      v
//   flushing (ucp_ep_flush_nbx: remote visibility, proof that nothing writes any more)
//      v
//   finished: done(code) exactly once
//
// A peer being dropped (disconnect, endpoint error, replaced, engine stop): out of peers_ into
// closing_, its batches are failed, and once they all finished (or close_grace passed) its rkeys
// are destroyed and the endpoint is closed in FORCE mode.
#pragma once

#include "transport/device_landing.hpp"
#include "transport/engine.hpp"
#include "transport/memory.hpp"
#include "transport/shm_guard.hpp"
#include "transport/ucx_handles.hpp"
#include "transport/wedge_detector.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace kvferry::transport::detail {

// Tuning. A large put is posted in chunks with a bounded window per batch, so that cancel()
// stops a transfer within a window's worth of bytes (UCX 1.13 cannot cancel a posted put).
inline constexpr std::size_t chunk_bytes = std::size_t{4} << 20;
// A data message (see engine.hpp) carries at most this much; each is acknowledged. Over tcp,
// large messages go fastest (1 MiB blocks: 0.8 GB/s at 256 KiB against 0.3 at 8 KiB, 16 in
// flight); over shared memory, messages that fit one 8 KiB queue element (larger ones are
// reassembled by UCX, an extra copy: 64 MiB, 16 in flight: 4.6 GB/s against 2.8).
inline constexpr std::size_t message_bytes = std::size_t{256} << 10;
inline constexpr std::size_t message_bytes_shm = 8192 - 256;  // room for UCX's headers and ours
// Active message ids of the data messages and their acknowledgements.
inline constexpr unsigned am_data_id = 0x6b76;
inline constexpr unsigned am_ack_id = 0x6b77;

// The user headers of the two messages (fixed size, host byte order: both ends run kvferry on
// the same architecture, and a header of any other size is dropped).
struct data_header {
  std::uint64_t batch = 0;   // the sender's batch id, echoed in the acknowledgement
  std::uint64_t addr = 0;    // where the payload goes in the receiver's registered memory
  std::uint64_t window = 0;  // the receive window it must lie in (put_batch::window)
};
struct ack_header {
  std::uint64_t batch = 0;
  std::uint64_t bytes = 0;    // the payload bytes written, or refused
  std::uint64_t refused = 0;  // 1: nothing was written (no open window holds the range)
};
inline constexpr std::size_t window_bytes = std::size_t{32} << 20;
inline constexpr std::size_t window_requests = 256;
inline constexpr std::size_t rkey_cache_limit = 1024;       // per peer
inline constexpr int progress_budget = 1024;                // ucp_worker_progress calls per cycle
inline constexpr std::chrono::milliseconds close_grace{2000};   // wait for a closing peer's ops
inline constexpr std::chrono::milliseconds stop_deadline{5000}; // wait for all ops on stop
inline constexpr std::chrono::milliseconds query_timeout{2000}; // endpoint_transports()
inline constexpr std::chrono::milliseconds worker_flush_timeout{1000};  // last step of stop

using shared_rkey = std::shared_ptr<std::remove_pointer_t<ucp_rkey_h>>;

class engine_impl;
struct batch_state;

// A new worker of `context`: the worker, its address and its event fd (owned by UCX).
struct worker_parts {
  ucx::worker_ptr worker;
  std::vector<std::uint8_t> address;
  int event_fd = -1;
};
result<worker_parts> create_worker(ucp_context_h context);

// One UCX request of a batch (a put chunk, a data message or the flush); user_data of its
// callback.
struct pending_request {
  engine_impl* owner = nullptr;
  batch_state* batch = nullptr;
  ucx::request req;
  std::size_t bytes = 0;  // 0 for the flush
  bool is_flush = false;
  data_header header;     // a data message's, alive until its send completes
  ucs_status_t status = UCS_INPROGRESS;
};

// An acknowledgement on its way out: user_data of its send's callback.
struct leaving_ack {
  engine_impl* engine = nullptr;
  ack_header header;
};

// An acknowledgement received, handled after ucp_worker_progress returned.
struct ack {
  ack_header header;
  ucp_ep_h from = nullptr;  // compared, never dereferenced
};

struct peer_state {
  std::uint64_t key = 0;
  std::vector<std::uint8_t> address;
  ucx::endpoint ep;
  // Unpacked rkeys by packed bytes (after ep: destroyed first), each with the extents of the
  // shared-memory segments it maps (shm_guard; empty unless the peer is on this host).
  struct cached_rkey {
    shared_rkey rkey;
    std::vector<shm_extent> extents;
  };
  std::map<std::vector<std::uint8_t>, cached_rkey> rkeys;
  std::unordered_set<std::uint64_t> batches;                // ids of unfinished batches
  std::size_t message_bytes = 0;  // data message size for this endpoint; 0 until first needed
  std::string transport_names;    // its UCX transports ("posix", "tcp"...); empty until known
  bool closing = false;
  bool closed = false;
  std::unique_ptr<boost::asio::steady_timer> close_timer;
};

struct batch_state {
  std::uint64_t id = 0;
  peer_state* peer = nullptr;
  completion_fn done;
  std::vector<shared_rkey> rkeys;  // by put_batch::rkeys index
  std::vector<copy_op> ops;
  std::vector<bool> mapped;        // by op: a UCX put into mapped memory, else data messages
  std::size_t next_op = 0;      // posting cursor
  std::size_t next_offset = 0;
  std::size_t outstanding_puts = 0;
  std::size_t outstanding_bytes = 0;
  std::size_t unacknowledged = 0;  // data message bytes sent and not acknowledged yet
  std::uint64_t window = 0;        // put_batch::window, named by each data message
  std::unordered_map<pending_request*, std::unique_ptr<pending_request>> pending;
  bool stop_posting = false;
  bool flush_started = false;
  bool flush_done = false;
  bool finished = false;
  errc error = errc::none;  // the first error
  std::string detail;
};

class engine_impl final : public engine {
 public:
  engine_impl(shared_context context, worker_parts worker, const engine_options& options,
              peer_error_fn on_peer_error);
  ~engine_impl() override;

  std::vector<std::uint8_t> worker_address() const override;
  result<std::shared_ptr<memory_registration>> register_memory(void* ptr,
                                                                std::size_t bytes) override;
  result<std::shared_ptr<memory_registration>> allocate_memory(std::size_t bytes) override;
  result<std::shared_ptr<memory_registration>> register_device_memory(void* ptr,
                                                                       std::size_t bytes) override;
  void connect(std::uint64_t peer, std::vector<std::uint8_t> worker_address) override;
  void disconnect(std::uint64_t peer) override;
  std::uint64_t put(put_batch batch, completion_fn done) override;
  void cancel(std::uint64_t op_id) override;
  std::vector<std::string> endpoint_transports(std::uint64_t peer) override;
  engine_stats stats() const override;
  std::shared_ptr<receive_windows> windows() const override { return windows_; }
  void replace_worker(std::string reason) override;

 private:
  // UCX callbacks: queue only.
  static void on_request_done(void* request, ucs_status_t status, void* user_data) noexcept;
  static void on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status) noexcept;
  static void on_worker_flushed(void* request, ucs_status_t status, void* user_data) noexcept;
  // The two active messages (engine_put.cpp). A data message is copied and acknowledged inside
  // the callback, the one exception to "queue only": its payload and reply endpoint are valid
  // only there. An acknowledgement is queued like everything else.
  static ucs_status_t on_data_message(void* arg, const void* header, std::size_t header_length,
                                      void* data, std::size_t length,
                                      const ucp_am_recv_param_t* param) noexcept;
  static ucs_status_t on_ack_message(void* arg, const void* header, std::size_t header_length,
                                     void* data, std::size_t length,
                                     const ucp_am_recv_param_t* param) noexcept;
  static void on_ack_sent(void* request, ucs_status_t status, void* user_data) noexcept;
  // Sends a data message's answer (acknowledgement or refusal) back through its reply endpoint.
  void answer(ucp_ep_h reply_ep, const ack_header& header) noexcept;
  // A data message for device memory: copied out of UCX's buffer into the landing
  // (device_landing.hpp), through the window it names. False when the window refused it.
  bool copy_to_device(const data_header& h, const void* data, std::size_t length);
  // Hands what the landing gathered to the copy engine. Before anything on this thread waits
  // for a receive window's copies (lose_all), and at the end of every progress pass.
  void flush_landing() noexcept;
  void install_am_handlers();

  // Posting from any thread; false (nothing posted) once the engine stops accepting work.
  template <class F>
  bool post(F&& f);

  // Progress (engine.cpp).
  void cycle();
  bool handle_queues();
  void housekeeping();
  void wait_for_events();
  void begin_shutdown();
  void flush_worker();
  void finish_shutdown(bool forced);
  void do_replace_worker(const std::string& reason);
  // Moves every peer to closing_ (failing its batches); returns their keys.
  std::vector<std::uint64_t> close_all_peers(errc code, const std::string& detail);
  void abandon_all(errc code, const std::string& detail);

  // Peers (engine_peers.cpp).
  void do_connect(std::uint64_t key, std::vector<std::uint8_t> address);
  void do_disconnect(std::uint64_t key);
  void on_ep_failed(ucp_ep_h ep, ucs_status_t status);
  void begin_close(std::unique_ptr<peer_state> peer, errc code, const std::string& detail);
  void maybe_complete_close(peer_state& peer);
  void force_close(peer_state& peer);
  std::vector<std::string> transports_now(std::uint64_t key);
  void update_peer_count();

  // Batches (engine_put.cpp).
  void do_put(std::uint64_t id, put_batch batch, completion_fn done);
  void do_cancel(std::uint64_t id);
  void on_completed(pending_request* request);
  void advance(batch_state& batch);
  void post_puts(batch_state& batch);
  // Posts one chunk of the op at the cursor (a put or a data message); false when posting
  // failed at once (recorded in the batch).
  bool post_chunk(batch_state& batch, ucp_ep_h ep, const copy_op& op, std::size_t length);
  void on_ack(const ack& a);
  // How a batch that succeeded went, for its completion's detail: the endpoint's UCX transports
  // and the path ("posix put", "tcp am", "cma put+am").
  std::string path_of(const batch_state& batch);
  // The data message size for `peer`'s endpoint (message_bytes or message_bytes_shm).
  std::size_t message_limit(peer_state& peer);
  void post_flush(batch_state& batch);
  // The record of one UCX request of `batch` (a put chunk of `bytes`, or the flush), and the
  // parameters that make UCX call on_request_done with it.
  std::unique_ptr<pending_request> new_record(batch_state& batch, std::size_t bytes,
                                              bool is_flush);
  static ucp_request_param_t callback_param(pending_request* record);
  void fail_batch(batch_state& batch, errc code, const std::string& detail);
  void finish(batch_state& batch);
  void abandon(batch_state& batch, errc code, const std::string& detail);
  void deliver(completion_fn& done, errc code, const std::string& detail);

  // Declaration order is destruction order reversed: the worker outlives peers and batches,
  // the io_context outlives the timers inside peers.
  shared_context context_;
  ucx::worker_ptr worker_;
  mutable std::mutex address_mutex_;
  std::vector<std::uint8_t> address_;  // guarded by address_mutex_ (replaced with the worker)
  peer_error_fn on_peer_error_;
  wedge_detector wedge_;

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  boost::asio::posix::stream_descriptor event_fd_;  // UCX owns the fd: released, never closed
  boost::asio::steady_timer stop_timer_;
  boost::asio::steady_timer poll_timer_;  // only if ucp_worker_arm fails
  // While work is outstanding, a sleep on the event fd is also bounded by this timer: a wake-up
  // can be lost (see watch_lost_wakeups in engine.cpp). Its interval backs off while it finds
  // nothing and drops to the minimum once it finds what no wake-up announced.
  boost::asio::steady_timer watch_timer_;
  std::chrono::microseconds watch_interval_{watch_interval_max};
  bool watch_armed_ = false;
  bool watch_woke_ = false;  // this cycle was started by the watch timer
  void arm_watch();
  void watch_lost_wakeups(bool found_work);
  static constexpr std::chrono::microseconds watch_interval_min{100};
  static constexpr std::chrono::microseconds watch_interval_max{50000};
  std::atomic<std::uint64_t> lost_wakeups_{0};
  bool waiting_ = false;
  std::uint64_t wait_generation_ = 0;  // a wait on a replaced worker's fd is stale
  bool cycle_posted_ = false;
  bool stopping_ = false;
  bool stopped_ = false;
  ucx::request worker_flush_;  // the last step of stop: see flush_worker()
  bool worker_flush_started_ = false;
  bool worker_flushed_ = false;

  std::unordered_map<std::uint64_t, std::unique_ptr<peer_state>> peers_;
  // This host's shared-memory system id (from our worker address); 0 until first asked.
  std::uint64_t own_shm_id();
  std::uint64_t own_shm_id_ = 0;
  std::list<std::unique_ptr<peer_state>> closing_;
  std::unordered_map<std::uint64_t, std::unique_ptr<batch_state>> batches_;
  std::vector<pending_request*> completed_;
  std::vector<std::pair<ucp_ep_h, ucs_status_t>> failed_eps_;
  std::vector<ack> acks_;
  // Acknowledgements UCX has queued and not sent yet (written by the progress thread only;
  // atomic for stats()).
  std::atomic<std::size_t> acks_leaving_{0};
  // Puts and data messages UCX holds (every batch's outstanding_puts): see the wedge check.
  std::size_t sends_waiting_ = 0;
  // Where peers' data messages may write: this engine's registrations (memory.hpp).
  std::shared_ptr<writable_ranges> writable_ = std::make_shared<writable_ranges>();
  std::shared_ptr<receive_windows> windows_ = std::make_shared<receive_windows>();
  // Device memory (register_device_memory): written through landing_'s copies only; null
  // without engine_options::device_copy. Flushed at the end of every progress pass.
  std::shared_ptr<writable_ranges> device_ = std::make_shared<writable_ranges>();
  std::unique_ptr<device_landing> landing_;
  // The registration whose rkey a device range hands out (a host page nothing writes): a
  // peer's engine finds it cannot map it and sends data messages. Made on first use.
  std::mutex device_rkey_mutex_;
  std::shared_ptr<memory_registration> device_rkey_;

  std::mutex accept_mutex_;
  bool accepting_ = true;
  std::atomic<std::uint64_t> next_id_{1};
  std::atomic<std::uint64_t> ops_started_{0};
  std::atomic<std::uint64_t> ops_completed_{0};
  std::atomic<std::uint64_t> bytes_put_{0};
  std::atomic<std::uint64_t> peer_count_{0};
  std::atomic<std::uint64_t> worker_replacements_{0};
  std::atomic<std::uint64_t> writes_refused_{0};

  std::thread::id progress_thread_id_;
  std::thread thread_;  // last: started when everything above exists
};

template <class F>
bool engine_impl::post(F&& f) {
  std::lock_guard<std::mutex> lock(accept_mutex_);
  if (!accepting_) {
    return false;
  }
  boost::asio::post(io_, [this, f = std::forward<F>(f)]() mutable {
    f();
    cycle();
  });
  return true;
}

}  // namespace kvferry::transport::detail
