// fake_engine: a transport::engine without UCX, for tests that decide when and how every put
// completes. No CAF here (usable from transport-level and actor-level tests alike).
//
//   auto eng = std::make_shared<testing::fake_engine>(on_peer_error);
//   core->engine = eng;                        // what the actors see
//   ... the transport actor posts a batch ...
//   auto op = eng->last_put().op;              // peer, rkeys, ops and bytes of the batch
//   CHECK(eng->cancel_requested(op));          // did anyone ask to cancel it?
//   eng->complete(op, errc::cancelled);        // its completion callback runs here, now
//
// The contract of transport/engine.hpp is kept where it is a promise to the caller:
//   - every put's completion callback is invoked exactly once: complete()/fail() refuse an
//     operation that already completed (they return false), and the destructor completes what is
//     still pending with errc::stopped, as the real engine's teardown does;
//   - cancel() never completes anything by itself: the completion still comes, exactly once,
//     when the test says (errc::cancelled, or the real outcome if the puts "won the race").
// Nothing happens by itself, ever. Where the real engine fails operations as a consequence of
// something (disconnect(), replace_worker(), an endpoint error), the fake only records the call;
// the test plays the consequence with fail_peer() and peer_error(), in the order it wants.
//
// Threads: completion and peer-error callbacks run on the thread that calls complete(), fail(),
// complete_all(), fail_peer() or peer_error() (with a deterministic CAF scheduler, the test
// thread), never under the fake's lock, so a callback may call back into the fake. Every method
// is safe to call from any thread.
#pragma once

#include "transport/engine.hpp"

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace kvferry::testing {

// One put() as the fake engine saw it.
struct posted_put {
  std::uint64_t op = 0;            // the id put() returned
  transport::put_batch batch;      // peer, rkeys, ops as posted
  std::uint64_t bytes = 0;         // sum of the ops' bytes
  bool cancel_requested = false;   // cancel(op) was called while it was pending
  bool completed = false;
  errc outcome = errc::none;       // once completed: what the callback was given
  std::string detail;
};

struct connect_call {
  std::uint64_t peer = 0;
  std::vector<std::uint8_t> worker_address;
};

// Bytes in the shapes UCX 1.13 packs, which transport/wire_check accepts as every fetch's must be,
// carrying `tag` so that tests can tell them apart: a worker address without devices (version 1,
// the tag in its uuid) and an rkey without memory domains (the tag in its system-device trailer).
std::vector<std::uint8_t> fake_worker_address(std::uint32_t tag);
std::vector<std::uint8_t> fake_rkey(std::uint32_t tag);

class fake_engine final : public transport::engine {
 public:
  explicit fake_engine(transport::peer_error_fn on_peer_error = nullptr);
  // Completes every pending put with errc::stopped (on this thread), like the real teardown.
  // With CAF: destroy it while the actor system still runs (the callbacks send messages).
  ~fake_engine() override;
  fake_engine(const fake_engine&) = delete;
  fake_engine& operator=(const fake_engine&) = delete;

  // -- transport::engine -------------------------------------------------------------------------

  // {'f','a','k','e', n}: n counts replace_worker() calls, so the address changes with them.
  std::vector<std::uint8_t> worker_address() const override;
  // A registration of [ptr, ptr+bytes) (nothing is mapped); invalid_argument for nullptr/0.
  result<std::shared_ptr<transport::memory_registration>> register_memory(
    void* ptr, std::size_t bytes) override;
  // Zero-filled heap memory (calloc), freed with the last reference to the registration;
  // invalid_argument for 0 bytes.
  result<std::shared_ptr<transport::memory_registration>> allocate_memory(
    std::size_t bytes) override;
  result<std::shared_ptr<transport::memory_registration>> register_device_memory(
    void*, std::size_t) override {
    return {errc::unsupported, "the fake engine has no device memory"};
  }
  void connect(std::uint64_t peer, std::vector<std::uint8_t> worker_address) override;
  void disconnect(std::uint64_t peer) override;
  // Records the batch and keeps `done` until the test completes it. Op ids are 1, 2, 3, ...
  // Throws std::runtime_error (before taking the batch) if throw_on_next_put() asked for it.
  std::uint64_t put(transport::put_batch batch, transport::completion_fn done) override;
  // Records the request; completes nothing (unknown or finished ids are recorded and ignored).
  void cancel(std::uint64_t op_id) override;
  // What set_endpoint_transports() gave for connected peers ({"fake"} by default); empty for a
  // peer never connected or disconnected since.
  std::vector<std::string> endpoint_transports(std::uint64_t peer) override;
  transport::engine_stats stats() const override;
  // Opened and closed by receives as on a real engine; nothing writes through them here.
  std::shared_ptr<transport::receive_windows> windows() const override { return windows_; }
  // Records the reason and changes worker_address(); fails and reports nothing by itself.
  void replace_worker(std::string reason) override;

  // -- what was posted ---------------------------------------------------------------------------

  std::vector<posted_put> puts() const;               // every put so far, in post order
  std::optional<posted_put> find(std::uint64_t op) const;
  posted_put last_put() const;                        // throws std::logic_error if none
  std::vector<std::uint64_t> pending() const;         // not completed yet, in post order
  std::size_t pending_count() const;
  bool cancel_requested(std::uint64_t op) const;      // false for unknown ids
  std::vector<std::uint64_t> cancel_calls() const;    // every cancel() argument, in order

  // -- the test completes ------------------------------------------------------------------------

  // Invokes op's completion callback with `code` (errc::none: every byte written and flushed).
  // False, and nothing is invoked, for an unknown or already completed op.
  bool complete(std::uint64_t op, errc code = errc::none, const std::string& detail = {});
  // complete() with an error; throws std::invalid_argument for errc::none.
  bool fail(std::uint64_t op, errc code, const std::string& detail);
  // Completes every pending put, in post order; returns how many.
  std::size_t complete_all(errc code = errc::none, const std::string& detail = {});
  // Completes every pending put to `peer` with `code` (what an endpoint error, disconnect() or
  // replace_worker() does to in-flight puts in the real engine); returns how many.
  std::size_t fail_peer(std::uint64_t peer, errc code, const std::string& detail);
  // Invokes the peer_error_fn given at construction (if any) with these arguments.
  void peer_error(std::uint64_t peer, errc code, const std::string& detail);

  // -- other calls seen --------------------------------------------------------------------------

  std::vector<connect_call> connects() const;         // in call order
  std::vector<std::uint64_t> disconnects() const;     // in call order
  std::vector<std::string> worker_replacements() const;  // the reasons, in call order
  std::size_t registrations() const;                  // register/allocate calls that succeeded

  // -- knobs -------------------------------------------------------------------------------------

  // The next put() throws std::runtime_error(what) without taking the batch (the transport
  // actor's "engine threw while posting" path).
  void throw_on_next_put(std::string what);
  void set_endpoint_transports(std::vector<std::string> names);

 private:
  struct record {
    posted_put put;
    transport::completion_fn done;
  };
  record* find_locked(std::uint64_t op);
  const record* find_locked(std::uint64_t op) const;
  // Marks the ops completed under the lock, then invokes their callbacks outside it.
  std::size_t complete_where(const std::vector<std::uint64_t>& ops, errc code,
                             const std::string& detail);

  transport::peer_error_fn on_peer_error_;
  mutable std::mutex mtx_;
  std::vector<record> records_;  // index = op - 1
  std::vector<std::uint64_t> cancels_;
  std::vector<connect_call> connects_;
  std::vector<std::uint64_t> disconnects_;
  std::vector<std::uint64_t> connected_;
  std::vector<std::string> replacements_;
  std::vector<std::string> transports_{"fake"};
  std::optional<std::string> throw_next_put_;
  std::size_t registrations_ = 0;
  std::uint64_t completed_ = 0;
  std::uint64_t bytes_put_ = 0;
  std::shared_ptr<transport::receive_windows> windows_ =
    std::make_shared<transport::receive_windows>();
};

}  // namespace kvferry::testing
