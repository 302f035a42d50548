// transport::engine — the only code that talks to UCX. No CAF here.
//
// One engine owns a UCP context, one worker, and a progress thread running a Boost.Asio loop on
// the worker's event fd (progress, arm, progress again on UCS_ERR_BUSY, wait). Every UCX call
// that touches the worker or an endpoint runs on that thread; the public calls below post work
// to it and return at once (except the few marked "blocking", which wait on the progress thread
// for a bounded time and are meant for set-up, not the hot path).
//
// Completion contract: the callback of put() is invoked exactly once, on the progress thread,
// after every UCX request of the batch (puts, data messages and the final flush) has completed,
// and every data message was acknowledged by the peer unless its endpoint failed — with
// success, an error, or UCS_ERR_CANCELED after cancel(). Only then may the local memory of the
// batch be reused, and, on success or cancel, its remote memory: that callback is the
// transport's proof of quiescence.
//
// How bytes move: a put whose remote memory this host can map (a same-host peer's UCX-allocated
// pool) is a UCX put, a copy into the mapping. Every other put is sent as active messages that
// the peer's engine copies into its own registered memory and acknowledges. UCX 1.13 emulates
// such puts itself, but its emulation aborts the receiving process when the acknowledgement
// cannot be sent because the putting peer just died (ucp_put_handler: "unexpected error"), and
// writes wherever the message says; kvferry's data messages are refused outside the
// receive window open for them (receive_windows.hpp) — registered memory a receive in flight
// named — and their acknowledgements report a failed endpoint instead of aborting. A refused
// message is answered as refused, which fails its batch.
#pragma once

#include "core/descriptor.hpp"
#include "kvferry/errc.hpp"
#include "kvferry/result.hpp"
#include "transport/receive_windows.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace kvferry::transport {

struct engine_options {
  // Which UCX transports to use: "shm" (shared memory: posix/sysv/cma + self), "tcp" (tcp + self),
  // or "" / "auto" for UCX's own choice. Applied with ucp_config_modify, so users never need to
  // export UCX_* variables (an explicit UCX_TLS in the environment still wins).
  std::string tls = "auto";
  // UCX 1.13 drops shared memory when endpoints use UCP_ERR_HANDLING_MODE_PEER unless these are
  // switched on (docs/design.md, platform facts). Always on in kvferry; a switch for tests only.
  bool shm_error_handling = true;
  // UCX keepalive interval; 0 keeps UCX's default (20 s).
  unsigned keepalive_interval_ms = 0;
  // How long the worker may look wedged (arm answers BUSY, progress finds nothing) before it is
  // replaced; see wedge_detector.hpp. 0 switches detection off; so does tls "tcp" (no shared
  // memory, nothing that wedges that way).
  unsigned wedge_timeout_ms = 500;
  // How peers' data messages reach device memory (register_device_memory): starts a copy of
  // `segments` (host source, device destination) without waiting for it, and calls `done`
  // exactly once when it ended (errc::none: written), on any thread. Empty: device memory is
  // refused. The node passes its copy engine here. Messages are gathered into host buffers
  // first, a copy per buffer rather than per message (device_landing.hpp).
  std::function<void(std::vector<copy_op> segments,
                     std::function<void(errc code, const std::string& detail)> done)>
    device_copy;
  // Optional: page-locks the host buffers those copies read from (true: done), so that a CUDA
  // copy engine reads them with one kernel launch; `unpin_host` undoes it before they are freed.
  // The node passes gpu::pin_host_range when its copy engine is CUDA's.
  std::function<bool(void* ptr, std::size_t bytes)> pin_host;
  std::function<void(void* ptr)> unpin_host;
};

// A registered memory range (ucp_mem_map). Destroying it unmaps the memory; keep it alive for
// as long as any operation may touch the range.
class memory_registration {
 public:
  virtual ~memory_registration() = default;
  virtual void* base() const noexcept = 0;
  virtual std::size_t bytes() const noexcept = 0;
  // The packed remote key (ucp_rkey_pack), for a peer to write into this range.
  virtual const std::vector<std::uint8_t>& packed_rkey() const noexcept = 0;
  // True when UCX allocated the memory (allocate_memory), false for registered user memory.
  virtual bool ucx_allocated() const noexcept = 0;
};

struct put_batch {
  std::uint64_t peer = 0;                         // a key given to connect()
  std::vector<std::vector<std::uint8_t>> rkeys;  // packed remote keys used by ops
  // Each op: dst.bytes from local address src to dst.addr in the remote region whose packed
  // rkey is rkeys[dst.key].
  std::vector<copy_op> ops;
  // The token of the receive window the peer opened for these writes (its fetch carries it):
  // every data message names it, and the peer copies only into that window (receive_windows).
  std::uint64_t window = 0;
};

// Exactly-once completion of a put batch: errc::none when every byte was written and flushed.
// `detail` says what went wrong, or, on success, how the bytes went: the endpoint's UCX
// transports and the path, "put" (UCX RMA into memory the peer registered with UCX) or "am"
// (kvferry's data messages), e.g. "posix put", "tcp am", "cma put+am".
using completion_fn = std::function<void(errc code, const std::string& detail)>;
// An endpoint error reported by UCX (peer died, connection reset). Called on the progress thread.
using peer_error_fn = std::function<void(std::uint64_t peer, errc code, const std::string& detail)>;

struct engine_stats {
  std::uint64_t ops_started = 0;
  std::uint64_t ops_completed = 0;   // completion callbacks delivered (any outcome)
  std::uint64_t ops_in_flight = 0;
  std::uint64_t bytes_put = 0;       // bytes of puts that completed successfully
  std::uint64_t peers = 0;           // live endpoints
  std::uint64_t worker_replacements = 0;  // wedged (or asked) workers replaced by a new one
  std::uint64_t writes_refused = 0;  // peers' data messages outside an open receive window
  // Times the engine found work that no wake-up announced (a shared-memory peer in another
  // network namespace cannot wake this one); the engine then polls while work is outstanding.
  std::uint64_t lost_wakeups = 0;
  // Acknowledgements of peers' data messages queued and not yet sent: while any is, the engine
  // polls rather than sleeps, so an idle engine must show 0.
  std::uint64_t acks_leaving = 0;
};

class engine {
 public:
  virtual ~engine() = default;

  // Creates context + worker + progress thread. Errors name the UCX call that failed.
  static result<std::unique_ptr<engine>> start(const engine_options& options,
                                                peer_error_fn on_peer_error);

  // This worker's address (ucp_worker_get_address), for peers to connect(). It changes when the
  // worker is replaced, so ask again for each message that carries it. Thread-safe.
  virtual std::vector<std::uint8_t> worker_address() const = 0;

  // Registers user memory [ptr, ptr+bytes) for local and remote access. Thread-safe.
  virtual result<std::shared_ptr<memory_registration>> register_memory(void* ptr,
                                                                        std::size_t bytes) = 0;
  // Lets UCX allocate and register `bytes` (peers on the same host can then map it directly,
  // the fast shared-memory path). Thread-safe.
  virtual result<std::shared_ptr<memory_registration>> allocate_memory(std::size_t bytes) = 0;
  // Declares [ptr, ptr+bytes) device memory, which UCX cannot reach here: it is never given to
  // UCX. Its packed rkey makes a peer's engine write there with data messages, which this engine
  // copies out of UCX's buffer and hands to engine_options::device_copy (receive_windows.hpp:
  // closing the window waits for those copies). Sending from device memory is the node's
  // business (it stages through host buffers). errc::unsupported without device_copy.
  virtual result<std::shared_ptr<memory_registration>> register_device_memory(void* ptr,
                                                                               std::size_t bytes) = 0;

  // Creates (or keeps) an endpoint to a peer worker, in PEER error mode. Non-blocking; an
  // unusable address or a later failure is reported through on_peer_error and fails that
  // peer's in-flight and future operations until connect() is called again with a new address.
  virtual void connect(std::uint64_t peer, std::vector<std::uint8_t> worker_address) = 0;
  // Closes the endpoint to a peer (in-flight operations complete with an error first).
  virtual void disconnect(std::uint64_t peer) = 0;

  // Posts every put of the batch, then a flush of the endpoint; `done` is called exactly once
  // (see the completion contract above). Returns an operation id for cancel(). Non-blocking.
  virtual std::uint64_t put(put_batch batch, completion_fn done) = 0;
  // Asks UCX to cancel the operation's outstanding requests. Non-blocking; the completion
  // callback still fires exactly once (errc::cancelled, or the real outcome if it won the race).
  // Unknown or finished ids are ignored.
  virtual void cancel(std::uint64_t op_id) = 0;

  // Blocking (bounded, set-up/diagnostics only): the UCX transports the endpoint to `peer`
  // really uses for RMA, e.g. "posix", "sysv", "cma", "tcp"; empty when there is no endpoint.
  virtual std::vector<std::string> endpoint_transports(std::uint64_t peer) = 0;

  virtual engine_stats stats() const = 0;

  // The receive windows peers' data messages must name (receive_windows.hpp): a receive opens
  // one over its destination before its fetch goes out, and closing it proves that no data
  // message writes there any more. Thread-safe.
  virtual std::shared_ptr<receive_windows> windows() const = 0;

  // Replaces the UCX worker by a new one, as the engine does by itself when it finds its worker
  // wedged. Every endpoint is dropped: in-flight puts complete with errc::peer_failed (exactly
  // once, as always), each connected peer is reported through on_peer_error, and peers must
  // connect again (to us: with the new worker_address()). Registered memory and its packed
  // rkeys stay valid (they belong to the context). Non-blocking.
  virtual void replace_worker(std::string reason) = 0;
};

}  // namespace kvferry::transport
