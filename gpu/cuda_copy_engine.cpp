// The CUDA copy engine and the pinning helpers (copy_engine.hpp), for builds that found CUDA.
// Runtime API only, like cuda_probe.cpp: a machine without a driver loads the binary and gets
// errors, never a crash.
//
//   submit() --push--> incoming --worker--> check --plan--> enqueue on the stream + record event
//                                                                     |
//   done(code) <--in submission order-- poll the oldest copy's event <-+
//
// Contract details beyond copy_engine.hpp:
// - One worker thread per engine does every CUDA call of the engine (it alone made the device
//   current) and runs every `done`. It never waits on the device while copies are in flight: it
//   polls the oldest copy's event every `poll_interval` and takes new submissions in between.
// - Copies run on one non-blocking stream, so they execute, and complete, in submission order.
// - A copy whose shape suits the kernel (copy_plan.hpp) still goes through cudaMemcpyAsync when a
//   pointer is one the kernel cannot dereference (pageable host memory, another device's memory):
//   the kernel would fault and take the whole device context with it.
// - The kernel's piece table is filled in a pinned host buffer from the engine's pool, copied to
//   a stream-ordered allocation (cudaMallocAsync) and freed on the stream after the launch: no
//   synchronization anywhere. The pinned buffer returns to the pool when the copy's event fires.
// - A copy that fails after part of it was queued completes only once the queued part has run
//   (its event fires), so its memory is not in use when `done` says it failed.
// - The destructor lets the worker finish every queued and in-flight copy (including copies
//   submitted by callbacks meanwhile), then destroys the stream. As with the CPU engine it must
//   not run on the worker thread.
#include "gpu/copy_engine.hpp"

#include "gpu/copy_plan.hpp"
#include "gpu/device_buffer.hpp"
#include "gpu/copy_queue.hpp"
#include "gpu/cuda_copy_kernel.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <thread>
#include <utility>

namespace kvferry::gpu {

namespace {

using namespace std::chrono_literals;

// How often the worker looks at the oldest copy's event while copies are in flight. A 16 KiB
// pinned memcpy takes a few microseconds, a staged KV transfer hundreds: 20 us keeps the added
// latency small without turning the worker into a spinning core.
constexpr auto poll_interval = 20us;

// Device memory is mapped in 2 MiB pages (the allocation granularity of every CUDA allocator on
// current GPUs), host memory is pinned in whole pages of at least 4 KiB: an answer about one
// address holds for its whole granule, which is what lets a resolver serve thousands of blocks
// of one allocation with a single driver lookup.
constexpr std::uint64_t device_granule = std::uint64_t{2} << 20;
constexpr std::uint64_t host_page = 4096;

// Pinned piece tables smaller than this are rounded up, so small copies share buffers.
constexpr std::size_t min_table_pieces = 4096;
// Free pinned tables kept for reuse; more are freed (cudaFreeHost may synchronize, so rarely).
constexpr std::size_t max_free_tables = 32;

pinned_ranges& pinned_registry() {
  static pinned_ranges ranges;
  return ranges;
}

std::string cuda_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

// Errors after which the CUDA context of the process is unusable: every later call returns them.
bool breaks_context(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
    case cudaErrorLaunchTimeout:
      return true;
    default:
      return false;
  }
}

// The error text with what it means for later copies.
std::string describe(cudaError_t e) {
  std::string text = cuda_text(e);
  if (breaks_context(e)) {
    text += " (this error breaks the process's CUDA context: every later CUDA call fails until "
            "the process restarts)";
  }
  return text;
}

errc errc_of(cudaError_t e) {
  switch (e) {
    case cudaErrorMemoryAllocation:
      return errc::out_of_memory;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorCallRequiresNewerDriver:
    case cudaErrorSystemDriverMismatch:
      return errc::unsupported;
    default:
      return errc::transport_error;
  }
}

// The lookup behind every engine's pointer_resolver: pin_host_range's own ranges first (no
// driver call), then cudaPointerGetAttributes on the calling thread's current device.
bool lookup_pointer(std::uint64_t addr, pointer_range* out, std::string* error) {
  if (pinned_registry().find(addr, out)) return true;
  cudaPointerAttributes a{};
  const cudaError_t e = cudaPointerGetAttributes(&a, ptr_of(addr));
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    *error = "cudaPointerGetAttributes: " + describe(e);
    return false;
  }
  pointer_info info;
  std::uint64_t granule = host_page;
  switch (a.type) {
    case cudaMemoryTypeDevice:
      info.kind = pointer_kind::device;
      info.device = a.device;
      granule = device_granule;
      break;
    case cudaMemoryTypeManaged:
      info.kind = pointer_kind::managed;
      info.device = a.device;
      granule = device_granule;
      break;
    case cudaMemoryTypeHost:
      // Pinned, but without an address on this device (pinned by another context without the
      // portable flag): only a memcpy reaches it.
      if (a.devicePointer != nullptr) {
        info.kind = pointer_kind::pinned_host;
        info.device_offset = addr_of(a.devicePointer) - addr;
      }
      break;
    default:  // cudaMemoryTypeUnregistered: pageable
      break;
  }
  out->info = info;
  out->begin = addr & ~(granule - 1);
  out->end = out->begin + granule;
  return true;
}

// A pinned host buffer for piece tables.
struct pinned_table {
  copy_piece* pieces = nullptr;
  std::size_t capacity = 0;
};

struct copy_job {
  std::uint64_t ticket = 0;
  std::vector<copy_op> segments;
  copy_done_fn done;
  // Set by start_copy():
  errc code = errc::none;
  std::string detail;
  cudaEvent_t event = nullptr;  // fires when the queued work is done; null: nothing queued
  pinned_table table;           // in use until the event fires
};

class cuda_copy_engine final : public copy_engine {
 public:
  explicit cuda_copy_engine(int device)
      : device_(device), prefix_("cuda:" + std::to_string(device) + ": ") {}

  // Starts the worker, which makes the device current on itself and creates the stream. Empty on
  // success, otherwise why it failed (the worker has then ended).
  std::string start() {
    auto result = ready_.get_future();
    worker_ = std::thread([this] { run(); });
    std::string problem = result.get();
    if (!problem.empty()) worker_.join();
    return problem;
  }

  ~cuda_copy_engine() override {
    if (!worker_.joinable()) return;
    queue_.stop();
    worker_.join();
  }

  cuda_copy_engine(const cuda_copy_engine&) = delete;
  cuda_copy_engine& operator=(const cuda_copy_engine&) = delete;

  std::uint64_t submit(std::vector<copy_op> segments, copy_done_fn done) override {
    return queue_.push(std::move(segments), std::move(done));
  }

  std::size_t pending() const override { return queue_.pending(); }

  bool wait_idle(std::chrono::milliseconds timeout) const override {
    return queue_.wait_idle(timeout);
  }

  std::string name() const override { return "cuda:" + std::to_string(device_); }

 private:
  void run() {
    cudaError_t e = cudaSetDevice(device_);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      ready_.set_value("cudaSetDevice: " + describe(e));
      return;
    }
    e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      ready_.set_value("cudaStreamCreateWithFlags: " + describe(e));
      return;
    }
    ready_.set_value({});
    serve();
    // Everything completed; what is left are resources. Errors are ignored: after a broken
    // context they all fail, and there is no one to tell.
    for (cudaEvent_t ev : free_events_) (void)cudaEventDestroy(ev);
    for (const pinned_table& t : free_tables_) (void)cudaFreeHost(t.pieces);
    (void)cudaStreamDestroy(stream_);
    (void)cudaGetLastError();
  }

  void serve() {
    std::deque<copy_job> in_flight;  // the worker's alone: oldest first
    std::unique_lock<std::mutex> lock(queue_.mutex);
    for (;;) {
      std::deque<copy_job> batch;
      batch.swap(queue_.jobs);
      lock.unlock();
      for (copy_job& job : batch) {
        start_copy(job);
        in_flight.push_back(std::move(job));
      }
      batch.clear();
      const std::size_t finished = complete_ready(in_flight);
      lock.lock();
      if (!queue_.jobs.empty()) continue;
      if (in_flight.empty()) {
        if (queue_.stopping) return;  // and everything submitted has completed
        queue_.wake.wait(lock, [this] { return queue_.stopping || !queue_.jobs.empty(); });
      } else if (finished == 0) {
        queue_.wake.wait_for(lock, poll_interval, [this] { return !queue_.jobs.empty(); });
      }
    }
  }

  // Completes, in order, the oldest copies whose work is done; returns how many.
  std::size_t complete_ready(std::deque<copy_job>& in_flight) {
    std::size_t finished = 0;
    while (!in_flight.empty()) {
      copy_job& front = in_flight.front();
      if (front.event != nullptr) {
        const cudaError_t e = cudaEventQuery(front.event);
        if (e == cudaErrorNotReady) break;
        if (e == cudaSuccess) {
          free_events_.push_back(front.event);
        } else {
          (void)cudaGetLastError();
          (void)cudaEventDestroy(front.event);
          (void)cudaGetLastError();
          if (front.code == errc::none) {
            front.code = errc_of(e);
            front.detail = prefix_ + "the copy failed on the device: " + describe(e);
          }
        }
        front.event = nullptr;
      }
      release_table(front.table);
      copy_job job = std::move(front);
      in_flight.pop_front();
      finish(job);
      ++finished;
    }
    return finished;
  }

  void finish(copy_job& job) {
    if (job.done) {
      try {
        job.done(job.code, job.detail);
      } catch (...) {
        // Dropped on purpose, as in the CPU engine: callbacks must not throw; this is a backstop.
      }
    }
    job = copy_job{};  // drop the callback's captures outside the lock
    queue_.completed();
  }

  void fail(copy_job& job, errc code, std::string detail) {
    if (job.code != errc::none) return;  // the first failure is the one reported
    job.code = code;
    job.detail = prefix_ + std::move(detail);
  }

  void fail(copy_job& job, const std::string& what, cudaError_t e) {
    (void)cudaGetLastError();  // later runtime calls on this thread must not see it
    fail(job, errc_of(e), what + ": " + describe(e));
  }

  // Queues the job's work and its event, or fails it. Never writes a byte of a refused copy.
  void start_copy(copy_job& job) {
    const std::string problem = check_segments(job.segments);
    if (!problem.empty()) {
      fail(job, errc::invalid_argument, problem);
      return;
    }
    copy_plan plan = plan_copy(job.segments, limits_);
    if (plan.method == copy_method::nothing) return;

    std::vector<copy_piece> ranges;
    if (plan.method == copy_method::kernel && !translate(job, plan, &ranges)) return;
    if (!take_event(job)) return;
    const bool queued = plan.method == copy_method::kernel ? queue_kernel(job, ranges)
                                                           : queue_memcpys(job, plan);
    if (!queued) {  // nothing of it reached the stream
      free_events_.push_back(job.event);
      job.event = nullptr;
      return;
    }
    const cudaError_t e = cudaEventRecord(job.event, stream_);
    if (e != cudaSuccess) {
      fail(job, "cudaEventRecord", e);
      // Without the event there is no other way to learn that the queued part has run.
      (void)cudaStreamSynchronize(stream_);
      (void)cudaGetLastError();
      (void)cudaEventDestroy(job.event);
      (void)cudaGetLastError();
      job.event = nullptr;
    }
  }

  // The device addresses of the kernel's ranges; false when the job failed. A pointer the kernel
  // cannot dereference turns the plan into memcpy_each.
  bool translate(copy_job& job, copy_plan& plan, std::vector<copy_piece>* ranges) {
    pointer_resolver resolver(lookup_pointer);
    ranges->reserve(plan.segments.size());
    for (const planned_segment& s : plan.segments) {
      pointer_info src;
      pointer_info dst;
      std::string why;
      if (!resolver.resolve(s.op.src, &src, &why) || !resolver.resolve(s.op.dst.addr, &dst, &why)) {
        fail(job, errc::transport_error, segments_name(s) + ": " + why);
        return false;
      }
      if (!kernel_can_access(src, device_) || !kernel_can_access(dst, device_)) {
        plan.method = copy_method::memcpy_each;
        ranges->clear();
        return true;
      }
      ranges->push_back(copy_piece{s.op.src + src.device_offset, s.op.dst.addr + dst.device_offset,
                                   s.op.dst.bytes});
    }
    return true;
  }

  bool take_event(copy_job& job) {
    if (!free_events_.empty()) {
      job.event = free_events_.back();
      free_events_.pop_back();
      return true;
    }
    const cudaError_t e = cudaEventCreateWithFlags(&job.event, cudaEventDisableTiming);
    if (e != cudaSuccess) {
      job.event = nullptr;
      fail(job, "cudaEventCreateWithFlags", e);
      return false;
    }
    return true;
  }

  // True when some of the work reached the stream (then the event must be recorded).
  bool queue_memcpys(copy_job& job, const copy_plan& plan) {
    bool queued = false;
    for (const planned_segment& s : plan.segments) {
      const cudaError_t e = cudaMemcpyAsync(ptr_of(s.op.dst.addr), ptr_of(s.op.src),
                                            s.op.dst.bytes, cudaMemcpyDefault, stream_);
      if (e != cudaSuccess) {
        fail(job, "cudaMemcpyAsync of " + segments_name(s), e);
        return queued;
      }
      queued = true;
    }
    return queued;
  }

  bool queue_kernel(copy_job& job, const std::vector<copy_piece>& ranges) {
    const std::vector<copy_piece> pieces = split_pieces(ranges, limits_.max_piece_bytes);
    const std::size_t bytes = pieces.size() * sizeof(copy_piece);
    if (!take_table(job, pieces.size())) return false;
    std::memcpy(job.table.pieces, pieces.data(), bytes);
    void* device_table = nullptr;
    cudaError_t e = cudaMallocAsync(&device_table, bytes, stream_);
    if (e != cudaSuccess) {
      fail(job, "cudaMallocAsync of the " + std::to_string(bytes) + "-byte table of " +
                    std::to_string(pieces.size()) + " pieces",
           e);
      return false;
    }
    e = cudaMemcpyAsync(device_table, job.table.pieces, bytes, cudaMemcpyHostToDevice, stream_);
    if (e != cudaSuccess) {
      fail(job, "cudaMemcpyAsync of the piece table", e);
    } else if (auto launch = launch_piece_copy(static_cast<const copy_piece*>(device_table),
                                               pieces.size(), limits_.max_pieces_per_launch,
                                               stream_)) {
      fail(job, errc::transport_error, *launch);
    }
    e = cudaFreeAsync(device_table, stream_);
    if (e != cudaSuccess) fail(job, "cudaFreeAsync of the piece table", e);
    return true;  // the allocation at least is on the stream
  }

  bool take_table(copy_job& job, std::size_t pieces) {
    auto fit = std::find_if(free_tables_.begin(), free_tables_.end(),
                            [&](const pinned_table& t) { return t.capacity >= pieces; });
    if (fit != free_tables_.end()) {
      job.table = *fit;
      free_tables_.erase(fit);
      return true;
    }
    std::size_t capacity = min_table_pieces;
    while (capacity < pieces) capacity *= 2;
    void* p = nullptr;
    const cudaError_t e = cudaHostAlloc(&p, capacity * sizeof(copy_piece), cudaHostAllocDefault);
    if (e != cudaSuccess) {
      fail(job, "cudaHostAlloc of a " + std::to_string(capacity * sizeof(copy_piece)) +
                    "-byte piece table",
           e);
      return false;
    }
    job.table = pinned_table{static_cast<copy_piece*>(p), capacity};
    return true;
  }

  void release_table(pinned_table& t) {
    if (t.pieces == nullptr) return;
    free_tables_.push_back(t);
    t = pinned_table{};
    if (free_tables_.size() > max_free_tables) {
      // Drop the smallest: the large ones are what big copies need again.
      auto smallest = std::min_element(
          free_tables_.begin(), free_tables_.end(),
          [](const pinned_table& a, const pinned_table& b) { return a.capacity < b.capacity; });
      (void)cudaFreeHost(smallest->pieces);
      (void)cudaGetLastError();
      free_tables_.erase(smallest);
    }
  }

  static std::string segments_name(const planned_segment& s) {
    std::string name = s.first == s.last
                           ? "segment " + std::to_string(s.first)
                           : "segments " + std::to_string(s.first) + ".." + std::to_string(s.last);
    return name + " (" + std::to_string(s.op.dst.bytes) + " bytes)";
  }

  const int device_;
  const std::string prefix_;  // "cuda:<device>: ", the start of every failure's detail
  const copy_limits limits_{};
  // Set once by the worker after its setup. A member, not a local of start(): set_value may
  // still be returning when start() has its answer.
  std::promise<std::string> ready_;
  cudaStream_t stream_ = nullptr;
  // The worker's alone:
  std::vector<cudaEvent_t> free_events_;
  std::vector<pinned_table> free_tables_;

  copy_queue<copy_job> queue_;
  std::thread worker_;  // last: started by start(), after every other member is constructed
};

std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

}  // namespace

std::unique_ptr<copy_engine> make_cuda_copy_engine(int device, std::string* error) {
  auto refuse = [&](const std::string& why) -> std::unique_ptr<copy_engine> {
    if (error) *error = "CUDA copy engine for device " + std::to_string(device) + ": " + why;
    return nullptr;
  };
  if (device < 0) return refuse("not a device number");
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return refuse("no CUDA device: cudaGetDeviceCount: " + cuda_text(e));
  }
  if (count <= 0) return refuse("no CUDA device: cudaGetDeviceCount found none");
  if (device >= count) {
    return refuse("no such device: this machine has " + std::to_string(count) +
                  " CUDA device(s)");
  }
  auto engine = std::make_unique<cuda_copy_engine>(device);
  std::string problem = engine->start();
  if (!problem.empty()) return refuse(problem);
  return engine;
}

errc pin_host_range(void* ptr, std::size_t bytes, std::string* error) {
  auto refuse = [&](errc code, const std::string& why) {
    if (error) {
      *error = "pin_host_range(" + hex(ptr) + ", " + std::to_string(bytes) + " bytes): " + why;
    }
    return code;
  };
  if (ptr == nullptr) return refuse(errc::invalid_argument, "null pointer");
  if (bytes == 0) return refuse(errc::invalid_argument, "empty range");
  cudaError_t e = cudaHostRegister(ptr, bytes, cudaHostRegisterDefault);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    if (e == cudaErrorHostMemoryAlreadyRegistered) {
      return refuse(errc::invalid_argument,
                    "the range overlaps memory that is already pinned: cudaHostRegister: " +
                        cuda_text(e));
    }
    return refuse(errc_of(e), "cudaHostRegister: " + describe(e));
  }
  void* device_ptr = nullptr;
  e = cudaHostGetDevicePointer(&device_ptr, ptr, 0);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    (void)cudaHostUnregister(ptr);
    (void)cudaGetLastError();
    return refuse(errc_of(e), "cudaHostGetDevicePointer: " + describe(e));
  }
  if (!pinned_registry().add(addr_of(ptr), bytes, addr_of(device_ptr) - addr_of(ptr))) {
    (void)cudaHostUnregister(ptr);
    (void)cudaGetLastError();
    return refuse(errc::invalid_argument, "the range overlaps a range already pinned");
  }
  return errc::none;
}

errc unpin_host_range(void* ptr, std::string* error) {
  auto refuse = [&](errc code, const std::string& why) {
    if (error) *error = "unpin_host_range(" + hex(ptr) + "): " + why;
    return code;
  };
  if (ptr == nullptr) return refuse(errc::invalid_argument, "null pointer");
  if (!pinned_registry().remove(addr_of(ptr))) {
    return refuse(errc::invalid_argument, "not the start of a range pinned by pin_host_range");
  }
  const cudaError_t e = cudaHostUnregister(ptr);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return refuse(errc_of(e), "cudaHostUnregister: " + describe(e));
  }
  return errc::none;
}

namespace {

// cudaMalloc'd memory on one device; copies are cudaMemcpy on the caller's thread, which is
// switched to the buffer's device for the call and back.
class cuda_buffer final : public device_buffer {
 public:
  cuda_buffer(int device, void* ptr, std::size_t bytes) : device_(device), ptr_(ptr), bytes_(bytes) {}
  ~cuda_buffer() override {
    on_device([&] { return cudaFree(ptr_); });
  }
  void* data() const noexcept override { return ptr_; }
  std::size_t bytes() const noexcept override { return bytes_; }
  error_info write(std::size_t offset, const void* src, std::size_t n) override {
    if (offset > bytes_ || n > bytes_ - offset)
      return {errc::out_of_range, "a write past the end of the device buffer"};
    return copy("cudaMemcpy host->device", [&] {
      return cudaMemcpy(static_cast<char*>(ptr_) + offset, src, n, cudaMemcpyHostToDevice);
    });
  }
  error_info read(std::size_t offset, void* dst, std::size_t n) const override {
    if (offset > bytes_ || n > bytes_ - offset)
      return {errc::out_of_range, "a read past the end of the device buffer"};
    return copy("cudaMemcpy device->host", [&] {
      return cudaMemcpy(dst, static_cast<const char*>(ptr_) + offset, n, cudaMemcpyDeviceToHost);
    });
  }

 private:
  template <class F>
  cudaError_t on_device(F&& f) const {
    int previous = 0;
    (void)cudaGetDevice(&previous);
    cudaError_t e = cudaSetDevice(device_);
    if (e == cudaSuccess)
      e = f();
    (void)cudaSetDevice(previous);
    if (e != cudaSuccess)
      (void)cudaGetLastError();
    return e;
  }
  template <class F>
  error_info copy(const char* what, F&& f) const {
    const cudaError_t e = on_device(std::forward<F>(f));
    if (e != cudaSuccess)
      return {errc_of(e), std::string(what) + ": " + describe(e)};
    return {};
  }

  int device_;
  void* ptr_;
  std::size_t bytes_;
};

}  // namespace

std::unique_ptr<device_buffer> make_cuda_buffer(int device, std::size_t bytes, std::string* error) {
  int previous = 0;
  (void)cudaGetDevice(&previous);
  void* ptr = nullptr;
  cudaError_t e = cudaSetDevice(device);
  if (e == cudaSuccess)
    e = cudaMalloc(&ptr, bytes);
  (void)cudaSetDevice(previous);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    if (error)
      *error = "cudaMalloc of " + std::to_string(bytes) + " bytes on cuda:" +
               std::to_string(device) + ": " + describe(e);
    return nullptr;
  }
  return std::make_unique<cuda_buffer>(device, ptr, bytes);
}

result<device_copy_rates> measure_copy_limits(int device, std::size_t bytes) {
  using out_t = result<device_copy_rates>;
  int previous = 0;
  (void)cudaGetDevice(&previous);
  void* host = nullptr;
  void* a = nullptr;
  void* b = nullptr;
  device_copy_rates out;
  std::string failed;
  auto check = [&](cudaError_t e, const char* what) {
    if (e != cudaSuccess && failed.empty())
      failed = std::string(what) + ": " + describe(e);
    return e == cudaSuccess;
  };
  // Best of three timed copies, after one untimed: GB/s.
  auto best = [&](const char* what, auto&& copy) {
    double gbps = 0;
    for (int run = 0; run < 4 && failed.empty(); ++run) {
      const auto t0 = std::chrono::steady_clock::now();
      if (!check(copy(), what) || !check(cudaDeviceSynchronize(), what)) break;
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (run > 0 && s > 0) gbps = std::max(gbps, static_cast<double>(bytes) / s / 1e9);
    }
    return gbps;
  };
  if (check(cudaSetDevice(device), "cudaSetDevice") &&
      check(cudaMallocHost(&host, bytes), "cudaMallocHost") &&
      check(cudaMalloc(&a, bytes), "cudaMalloc") && check(cudaMalloc(&b, bytes), "cudaMalloc")) {
    std::memset(host, 1, bytes);
    out.host_to_device = best("cudaMemcpy host->device",
                              [&] { return cudaMemcpy(a, host, bytes, cudaMemcpyHostToDevice); });
    out.device_to_host = best("cudaMemcpy device->host",
                              [&] { return cudaMemcpy(host, a, bytes, cudaMemcpyDeviceToHost); });
    out.device_to_device = best("cudaMemcpy device->device",
                                [&] { return cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice); });
  }
  if (b) (void)cudaFree(b);
  if (a) (void)cudaFree(a);
  if (host) (void)cudaFreeHost(host);
  (void)cudaSetDevice(previous);
  (void)cudaGetLastError();
  if (!failed.empty())
    return out_t{errc::unsupported, "copy limits of cuda:" + std::to_string(device) + ": " + failed};
  return out_t{out};
}

}  // namespace kvferry::gpu
