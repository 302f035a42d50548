// device_landing: where peers' data messages for device memory wait for their copy. No UCX, no
// CAF here.
//
// A data message's payload lives in UCX's buffer only during its callback, and device memory is
// reached only through a copy engine, so the payload must first land in a host buffer of ours.
// One copy per message made a copy engine call (and, for CUDA, a pageable-memory copy and an
// event) per 8 KiB shared-memory message: on an H200 that capped device-memory receives at
// 0.3-0.9 GB/s where host memory took 4-6 GB/s. Here messages are gathered instead:
//
//   append(dst, payload, finish) --copy into the current buffer--> batch: segments + finishes
//   flush() (end of each progress pass; a full buffer) --> one copy of all its segments
//   copy done --> every finish of the batch, in order; the buffer is free again
//
// The buffers (`buffers` of `buffer_bytes` each, allocated on first need) are page-aligned and
// pinned through the optional `pin` hook, so that a CUDA copy engine can take a whole batch in
// one kernel launch. They are also the back-pressure: append() waits while every buffer is in a
// copy, as the progress thread did before for a backlog of the same size.
//
// Thread model: append() and flush() on one thread (the engine's progress thread); copies end on
// any thread (the copy engine's). The owner must flush before it waits for the windows whose
// copies it holds (receive_windows::close and lose_all wait for them): a batch not yet flushed
// would never finish. A copy in flight keeps the buffers alive (not the landing, which holds the
// copy engine: the copy engine's own thread must never drop its last reference).
#pragma once

#include "core/descriptor.hpp"
#include "kvferry/errc.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace kvferry::transport {

class device_landing {
 public:
  // Called once a message's bytes were written to device memory (empty error) or could not be.
  using finish_fn = std::function<void(const std::string& error)>;
  // Starts a copy of `segments` (host source, device destination) without waiting for it and
  // calls `done` exactly once when it ended (errc::none: written), on any thread.
  using submit_fn = std::function<void(std::vector<copy_op> segments,
                                       std::function<void(errc code, const std::string& detail)> done)>;

  struct options {
    submit_fn submit;                            // required
    std::size_t buffer_bytes = std::size_t{1} << 20;
    std::size_t buffers = 32;
    std::function<bool(void* ptr, std::size_t bytes)> pin;  // optional: true when pinned
    std::function<void(void* ptr)> unpin;                   // undoes a successful pin
  };

  struct stats {
    std::size_t buffers_allocated = 0;
    std::size_t buffers_pinned = 0;
    std::size_t buffers_free = 0;  // allocated, not holding a batch
    std::uint64_t copies = 0;      // batches handed to `submit`
    std::uint64_t messages = 0;    // payloads appended
    std::size_t waiting = 0;       // append() calls waiting for a free buffer now
  };

  explicit device_landing(options o);
  // A batch never flushed is failed (its finishes are told the engine stopped).
  ~device_landing();
  device_landing(const device_landing&) = delete;
  device_landing& operator=(const device_landing&) = delete;

  // Copies [data, data+length) into the current batch for device address `dst`, flushing the
  // batch first when it has no room, and waiting for a free buffer when every one is in a copy.
  // Takes `finish` in every case: it is called exactly once, by the copy's end, or here, with
  // the reason, if the payload could not be kept (no memory). Never throws.
  void append(std::uint64_t dst, const void* data, std::size_t length, finish_fn finish) noexcept;
  // Hands the current batch to the copy engine; nothing when it is empty. Never throws: a batch
  // that cannot be handed over fails its messages.
  void flush() noexcept;

  stats counts() const;

 private:
  struct buffer;
  struct pool;  // the buffers, shared with the copies in flight
  struct batch {
    buffer* where = nullptr;
    std::size_t used = 0;
    std::vector<copy_op> segments;
    std::vector<finish_fn> finishes;
  };

  options options_;
  std::shared_ptr<pool> pool_;
  batch current_;  // the appending thread's alone
};

}  // namespace kvferry::transport
