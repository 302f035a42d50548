// The copy-engine contract: submit a gather/scatter copy, learn when it is done. No CAF here.
//
// Used for staging: device memory <-> registered host staging buffers (this UCX build has no
// CUDA transports), or host layouts that need gathering. The CPU implementation runs memcpy on
// a worker thread; the CUDA implementation (when the build found CUDA) uses streams and events.
#pragma once

#include "core/descriptor.hpp"
#include "kvferry/errc.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace kvferry::gpu {

// Called exactly once per submitted copy, on the engine's own thread, after every segment was
// copied (errc::none) or the copy failed. Must not block, must not throw (an exception is caught
// and dropped by the engine, which keeps serving later copies), and must not destroy the engine.
// `detail` is empty on success, otherwise says what failed. An empty function is allowed.
using copy_done_fn = std::function<void(errc code, const std::string& detail)>;

class copy_engine {
 public:
  virtual ~copy_engine() = default;  // waits for submitted copies to finish; then no callbacks
  // Queues a copy of all segments, in order. Returns a ticket (> 0, increasing). Invalid
  // segments (null pointer with non-zero size; for the CPU engine also overlapping source and
  // destination) fail that copy through `done` with errc::invalid_argument, before any byte of
  // it is written. Thread-safe; may be called from a `done` callback.
  virtual std::uint64_t submit(std::vector<copy_op> segments, copy_done_fn done) = 0;
  // Copies submitted and not yet completed (a copy completes when its `done` has returned).
  virtual std::size_t pending() const = 0;
  // Waits at most `timeout` until nothing is pending; true if that happened. Not from a `done`.
  virtual bool wait_idle(std::chrono::milliseconds timeout) const = 0;
  virtual std::string name() const = 0;  // "cpu" or "cuda:<device>"
};

// memcpy on one worker thread.
std::unique_ptr<copy_engine> make_cpu_copy_engine();

// Number of usable CUDA devices: 0 when the build has no CUDA or no driver/device is present.
int cuda_device_count() noexcept;

}  // namespace kvferry::gpu
