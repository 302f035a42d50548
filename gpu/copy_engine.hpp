// The copy-engine contract: submit a gather/scatter copy, learn when it is done. No CAF here.
//
// Used for staging: device memory <-> registered host staging buffers (this UCX build has no
// CUDA transports), or host layouts that need gathering. The CPU implementation runs memcpy on
// a worker thread; the CUDA implementation (when the build found CUDA) uses a stream and events
// (gpu/cuda_copy_engine.cpp). Both plan copies the same way (gpu/copy_plan.hpp).
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
  // segments (null pointer with non-zero size, or a segment whose source and destination
  // overlap: check_segments in copy_plan.hpp) fail that copy through `done` with
  // errc::invalid_argument, before any byte of it is written. Thread-safe; may be called from a
  // `done` callback.
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

// The CUDA copy engine of `device`: copies between any memory the device can reach (its own
// memory, pinned or registered host memory, managed memory; pageable host memory and other
// devices' memory through cudaMemcpyAsync). A copy of one contiguous run (after merging
// segments that continue each other) is one cudaMemcpyAsync; a copy of many runs is one batched
// gather/scatter kernel launch (or a few) on the engine's stream. The engine's thread issues the
// work and polls a CUDA event per copy, so submit() never blocks on the device; `done` runs on
// that thread, once per copy, in submission order. CUDA failures fail that copy through `done`
// with a message naming the CUDA error (errc::out_of_memory for allocations, errc::unsupported
// for a missing driver or device, errc::transport_error otherwise) and the engine keeps serving;
// after an error that breaks the device context (an illegal address in any kernel of the
// process) every later copy fails, with the same error named. Only the memory a copy's segments
// name is touched, but the engine cannot tell a live allocation from a dead one: as with the CPU
// engine, pointers must be valid for their sizes.
//
// Returns nullptr, with the reason in `*error` (when not null), when the build has no CUDA
// ("this build has no CUDA"), when there is no usable device (the CUDA error named), when
// `device` is not one of them, or when the stream cannot be created. Creating the engine does
// not change the calling thread's current device.
std::unique_ptr<copy_engine> make_cuda_copy_engine(int device, std::string* error = nullptr);

// Page-locks the host range [ptr, ptr + bytes) and maps it for every device (cudaHostRegister),
// so that copies to and from it run at full speed and the kernel can reach it; the engines then
// find it without asking the driver. Returns errc::none, or the error with the reason in
// `*error`: errc::invalid_argument for a null or empty range or one that overlaps a range already
// pinned, errc::out_of_memory when the OS refuses to lock more memory, errc::unsupported without
// CUDA, a driver or a device, errc::transport_error for any other CUDA error.
errc pin_host_range(void* ptr, std::size_t bytes, std::string* error = nullptr);
// Undoes pin_host_range(ptr, ...): `ptr` must be the start of a range pinned by it
// (errc::invalid_argument otherwise). No copy may still use the range.
errc unpin_host_range(void* ptr, std::string* error = nullptr);

}  // namespace kvferry::gpu
