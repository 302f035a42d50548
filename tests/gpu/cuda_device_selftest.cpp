// Self-contained checks of the CUDA copy engine and the layout-conversion kernel on a real GPU.
// Needs only CUDA and the standard library (no doctest): it is built by gpu/standalone on GPU
// machines that have none of Debian's packages, and run there by bench/device-check.sh; the
// kvferry build runs it too (ctest), where it skips without a device.
//
// Exit status: 0 every check passed; 1 some check failed (each failure printed with its line);
// 77 skipped: no CUDA in the build, or no usable device (the reason printed). A copy that never
// completes ends the program with status 1 after 60 s rather than hanging it.
//
// Every result is compared with a host reference byte for byte: copies against the same
// segments applied by the CPU copy engine to host mirrors (so destination bytes outside the
// segments are checked to be untouched too), the layout conversion against convert_blocks_cpu.
// The last section breaks the CUDA context on purpose (an illegal address), so it runs last.
#include "gpu/copy_engine.hpp"

#ifdef KVFERRY_WITH_CUDA
#include "gpu/cuda_copy_kernel.hpp"
#include "gpu/kv_convert_cuda.hpp"
#include "gpu/kv_layout.hpp"
#include "tests/gpu/layout_fixture.hpp"

#include <cuda_runtime_api.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

constexpr int exit_skipped = 77;

}  // namespace

#ifndef KVFERRY_WITH_CUDA
int main() {
  std::string error;
  (void)kvferry::gpu::make_cuda_copy_engine(0, &error);
  std::printf("cuda_device_selftest: SKIP: %s\n", error.c_str());
  return exit_skipped;
}
#else

namespace {

int checks = 0;
int failures = 0;

void expect(bool ok, const char* what, int line, const std::string& detail = {}) {
  ++checks;
  if (ok) return;
  ++failures;
  std::printf("FAIL line %d: %s%s%s\n", line, what, detail.empty() ? "" : ": ", detail.c_str());
  std::fflush(stdout);
}

#define EXPECT(cond, ...) expect(static_cast<bool>(cond), #cond, __LINE__, ##__VA_ARGS__)

using kvferry::addr_of;
using kvferry::copy_op;
using kvferry::errc;
using kvferry::gpu::copy_engine;
using namespace std::chrono_literals;

std::string cuda_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

// A CUDA call the test itself needs: a failure ends the program (status 1) with the call named.
void must(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::printf("FAIL: %s: %s\n", what, cuda_text(e).c_str());
  std::printf("cuda_device_selftest: %d checks, %d failed, aborted\nRESULT: FAIL\n", checks,
              failures + 1);
  std::exit(1);
}

class device_buffer {
 public:
  explicit device_buffer(std::size_t bytes) : bytes_(bytes) {
    must(cudaMalloc(&ptr_, bytes), "cudaMalloc");
  }
  ~device_buffer() { (void)cudaFree(ptr_); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  std::uint8_t* get() const { return static_cast<std::uint8_t*>(ptr_); }
  std::size_t size() const { return bytes_; }
  void upload(const std::vector<std::uint8_t>& from) {
    must(cudaMemcpy(ptr_, from.data(), bytes_, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  std::vector<std::uint8_t> download() const {
    std::vector<std::uint8_t> out(bytes_);
    must(cudaMemcpy(out.data(), ptr_, bytes_, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return out;
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// Host memory pinned with pin_host_range for its lifetime.
class pinned_vector {
 public:
  explicit pinned_vector(std::size_t bytes, std::uint8_t fill = 0) : data_(bytes, fill) {
    std::string error;
    if (kvferry::gpu::pin_host_range(data_.data(), data_.size(), &error) != errc::none) {
      std::printf("FAIL: %s\nRESULT: FAIL\n", error.c_str());
      std::exit(1);
    }
  }
  ~pinned_vector() { (void)kvferry::gpu::unpin_host_range(data_.data()); }
  pinned_vector(const pinned_vector&) = delete;
  pinned_vector& operator=(const pinned_vector&) = delete;
  std::vector<std::uint8_t>& bytes() { return data_; }
  std::uint8_t* get() { return data_.data(); }

 private:
  std::vector<std::uint8_t> data_;
};

std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<std::uint8_t> out(n);
  for (auto& b : out) b = static_cast<std::uint8_t>(gen());
  return out;
}

copy_op seg(const void* dst, const void* src, std::size_t bytes) {
  return copy_op{addr_of(src), {addr_of(dst), bytes, 0}};
}

struct outcome {
  errc code = errc::internal_error;
  std::string detail;
};

// Submits and waits (bounded) for `done`; a copy that never completes ends the program.
outcome run_copy(copy_engine& engine, std::vector<copy_op> segments) {
  auto result = std::make_shared<std::promise<outcome>>();
  auto f = result->get_future();
  engine.submit(std::move(segments), [result](errc code, const std::string& detail) {
    result->set_value(outcome{code, detail});
  });
  if (f.wait_for(60s) != std::future_status::ready) {
    std::printf("FAIL: a copy did not complete within 60 s (engine %s, %zu pending)\n"
                "RESULT: FAIL\n",
                engine.name().c_str(), engine.pending());
    std::fflush(stdout);
    std::_Exit(1);
  }
  return f.get();
}

// The same segments moved from (device or host) buffers to their host mirrors.
struct mirror {
  std::uint64_t from = 0;
  std::uint64_t to = 0;
  std::uint64_t bytes = 0;
};

std::uint64_t mirrored(const std::vector<mirror>& m, std::uint64_t addr) {
  for (const auto& x : m) {
    if (addr >= x.from && addr < x.from + x.bytes) return addr - x.from + x.to;
  }
  std::printf("FAIL: address outside every mirrored buffer\nRESULT: FAIL\n");
  std::exit(1);
}

// What the CPU engine makes of `segments` when every address is replaced by its host mirror.
void cpu_reference(const std::vector<copy_op>& segments, const std::vector<mirror>& m) {
  std::vector<copy_op> host;
  for (const auto& s : segments) {
    if (s.dst.bytes == 0) continue;
    host.push_back(copy_op{mirrored(m, s.src), {mirrored(m, s.dst.addr), s.dst.bytes, 0}});
  }
  auto cpu = kvferry::gpu::make_cpu_copy_engine();
  const outcome o = run_copy(*cpu, std::move(host));
  if (o.code != errc::none) {
    std::printf("FAIL: the CPU reference refused the copy: %s\nRESULT: FAIL\n", o.detail.c_str());
    std::exit(1);
  }
}

// --- sections -------------------------------------------------------------------------------

void single_segment_copies(copy_engine& engine) {
  const std::size_t n = 3 << 20;
  const auto data = random_bytes(n, 1);
  pinned_vector pinned(n);
  std::memcpy(pinned.get(), data.data(), n);
  device_buffer a(n);
  device_buffer b(n);
  std::vector<std::uint8_t> pageable(n, 0);
  // pinned -> device, device -> device, device -> pageable: three cudaMemcpyAsync.
  for (auto [dst, src] : {std::pair<void*, const void*>{a.get(), pinned.get()},
                          std::pair<void*, const void*>{b.get(), a.get()},
                          std::pair<void*, const void*>{pageable.data(), b.get()}}) {
    const outcome o = run_copy(engine, {seg(dst, src, n)});
    EXPECT(o.code == errc::none, o.detail);
    EXPECT(o.detail.empty(), o.detail);
  }
  EXPECT(pageable == data);
  // Segments that continue each other on both sides become one memcpy too.
  std::vector<copy_op> runs;
  for (std::size_t off = 0; off < n; off += 16384) {
    runs.push_back(
        seg(pageable.data() + off, a.get() + off, std::min<std::size_t>(16384, n - off)));
  }
  std::fill(pageable.begin(), pageable.end(), 0);
  EXPECT(run_copy(engine, runs).code == errc::none);
  EXPECT(pageable == data);
}

// KV blocks in device memory <-> a pinned staging chunk: the engine's reason to exist.
void gather_scatter_staging(copy_engine& engine) {
  constexpr std::size_t block = 16384;
  constexpr std::size_t pool_blocks = 2048;
  constexpr std::size_t moved = 1000;
  const auto pool_init = random_bytes(block * pool_blocks, 2);
  device_buffer pool(block * pool_blocks);
  pool.upload(pool_init);
  pinned_vector staging(block * moved, 0xEE);

  std::vector<std::size_t> order(pool_blocks);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(3));
  order.resize(moved);

  std::vector<copy_op> gather;
  for (std::size_t i = 0; i < moved; ++i) {
    gather.push_back(seg(staging.get() + i * block, pool.get() + order[i] * block, block));
  }
  std::vector<std::uint8_t> pool_mirror = pool_init;
  std::vector<std::uint8_t> staging_mirror(block * moved, 0xEE);
  const std::vector<mirror> m{{addr_of(pool.get()), addr_of(pool_mirror.data()), pool.size()},
                              {addr_of(staging.get()), addr_of(staging_mirror.data()),
                               staging.bytes().size()}};
  outcome o = run_copy(engine, gather);
  EXPECT(o.code == errc::none, o.detail);
  cpu_reference(gather, m);
  EXPECT(staging.bytes() == staging_mirror, "gather of 1000 16 KiB blocks into pinned staging");

  // Scatter new bytes from staging into other blocks of the pool (reversed order).
  const auto fresh = random_bytes(block * moved, 4);
  std::memcpy(staging.get(), fresh.data(), fresh.size());
  std::memcpy(staging_mirror.data(), fresh.data(), fresh.size());
  std::vector<copy_op> scatter;
  for (std::size_t i = 0; i < moved; ++i) {
    scatter.push_back(seg(pool.get() + order[moved - 1 - i] * block, staging.get() + i * block,
                          block));
  }
  o = run_copy(engine, scatter);
  EXPECT(o.code == errc::none, o.detail);
  cpu_reference(scatter, m);
  EXPECT(pool.download() == pool_mirror, "scatter from pinned staging; other blocks untouched");
}

// Device to device, random sizes (empty, tiny, over the 32 KiB piece size) and offsets (every
// relative alignment: 16, 8, 4, 1-byte paths), destinations disjoint: the kernel path.
void gather_scatter_device_mixed(copy_engine& engine) {
  std::mt19937 gen(5);
  const std::size_t n = 8 << 20;
  const auto a_init = random_bytes(n, 6);
  const auto b_init = random_bytes(n, 7);
  device_buffer a(n);
  device_buffer b(n);
  a.upload(a_init);
  b.upload(b_init);
  std::vector<std::uint8_t> a_mirror = a_init;
  std::vector<std::uint8_t> b_mirror = b_init;
  const std::vector<mirror> m{{addr_of(a.get()), addr_of(a_mirror.data()), n},
                              {addr_of(b.get()), addr_of(b_mirror.data()), n}};
  for (int round = 0; round < 4; ++round) {
    std::vector<copy_op> segments;
    std::size_t cursor = gen() % 64;
    while (true) {
      const std::size_t bytes = gen() % 5 == 0 ? gen() % 100000 : gen() % 3000;
      if (cursor + bytes >= n) break;
      const std::size_t from = gen() % (n - bytes);
      // Alternate directions: a -> b and b -> a, destinations disjoint within each buffer, and
      // no source inside a destination (that would be the ordered path, checked below).
      if (round % 2 == 0) {
        segments.push_back(seg(b.get() + cursor, a.get() + from, bytes));
      } else {
        segments.push_back(seg(a.get() + cursor, b.get() + from, bytes));
      }
      cursor += bytes + gen() % 64;
    }
    std::shuffle(segments.begin(), segments.end(), gen);
    const outcome o = run_copy(engine, segments);
    EXPECT(o.code == errc::none, o.detail);
    cpu_reference(segments, m);
    EXPECT(a.download() == a_mirror, "round " + std::to_string(round));
    EXPECT(b.download() == b_mirror, "round " + std::to_string(round));
  }
}

// Segments that read what earlier ones wrote must see it: the ordered path.
void ordered_segments(copy_engine& engine) {
  const std::size_t n = 1 << 20;
  const auto init = random_bytes(n, 8);
  device_buffer a(n);
  a.upload(init);
  std::vector<std::uint8_t> mirror_bytes = init;
  const std::vector<mirror> m{{addr_of(a.get()), addr_of(mirror_bytes.data()), n}};
  std::vector<copy_op> chain;
  for (std::size_t i = 0; i < 16; ++i) {  // block i -> i + 1, 16 times: block 0 reaches 16
    chain.push_back(seg(a.get() + (i + 1) * 4096, a.get() + i * 4096, 4096));
  }
  chain.push_back(seg(a.get() + 100 * 4096 + 3, a.get() + 16 * 4096, 5000));
  const outcome o = run_copy(engine, chain);
  EXPECT(o.code == errc::none, o.detail);
  cpu_reference(chain, m);
  const auto got = a.download();
  EXPECT(got == mirror_bytes);
  EXPECT(std::memcmp(got.data() + 16 * 4096, init.data(), 4096) == 0);
}

// Pageable host memory cannot be reached by the kernel: a many-segment copy still works
// (through cudaMemcpyAsync); so does managed memory (through the kernel).
void pageable_and_managed(copy_engine& engine) {
  const std::size_t n = 2 << 20;
  const auto init = random_bytes(n, 9);
  device_buffer a(n);
  a.upload(init);
  std::vector<std::uint8_t> pageable(n, 0);
  std::vector<copy_op> gather;
  for (std::size_t i = 0; i < 64; ++i) {
    gather.push_back(seg(pageable.data() + i * 8192, a.get() + (63 - i) * 8192, 8192));
  }
  outcome o = run_copy(engine, gather);
  EXPECT(o.code == errc::none, o.detail);
  bool same = true;
  for (std::size_t i = 0; i < 64; ++i) {
    same =
        same && std::memcmp(pageable.data() + i * 8192, init.data() + (63 - i) * 8192, 8192) == 0;
  }
  EXPECT(same, "gather into pageable memory");

  void* managed = nullptr;
  must(cudaMallocManaged(&managed, n), "cudaMallocManaged");
  std::memset(managed, 0, n);
  auto* mp = static_cast<std::uint8_t*>(managed);
  gather.clear();
  for (std::size_t i = 0; i < 64; ++i)
    gather.push_back(seg(mp + i * 8192, a.get() + (63 - i) * 8192, 8192));
  o = run_copy(engine, gather);
  EXPECT(o.code == errc::none, o.detail);
  EXPECT(std::memcmp(managed, pageable.data(), 64 * 8192) == 0, "gather into managed memory");
  must(cudaFree(managed), "cudaFree managed");
}

// More pieces than one launch takes (65535): several launches of one copy.
void many_launches(copy_engine& engine) {
  const std::size_t count = 70000;
  const std::size_t n = count * 64;
  const auto init = random_bytes(n, 10);
  device_buffer a(n);
  device_buffer b(n);
  a.upload(init);
  std::vector<copy_op> segments;
  for (std::size_t i = 0; i < count; ++i) {
    segments.push_back(seg(b.get() + i * 64, a.get() + (count - 1 - i) * 64, 64));
  }
  const outcome o = run_copy(engine, segments);
  EXPECT(o.code == errc::none, o.detail);
  const auto got = b.download();
  bool same = true;
  for (std::size_t i = 0; i < count && same; ++i) {
    same = std::memcmp(got.data() + i * 64, init.data() + (count - 1 - i) * 64, 64) == 0;
  }
  EXPECT(same, "70000 reversed 64-byte segments");
}

// The contract: exactly once, on the engine's thread (one thread), in submission order; pending
// and wait_idle; the destructor drains; throwing callbacks; submitting from a callback.
void contract(int device) {
  std::string error;
  const std::size_t n = 1 << 20;
  device_buffer a(n);
  device_buffer b(n);
  a.upload(random_bytes(n, 11));
  constexpr int submits = 1000;
  std::vector<std::atomic<int>> calls(submits);
  std::mutex order_mutex;
  std::vector<int> order;
  std::atomic<int> on_caller{0};
  std::atomic<int> errors{0};
  std::thread::id callback_thread;
  std::atomic<int> other_threads{0};
  const auto caller = std::this_thread::get_id();
  {
    auto engine = kvferry::gpu::make_cuda_copy_engine(device, &error);
    EXPECT(engine != nullptr, error);
    if (!engine) return;
    for (int i = 0; i < submits; ++i) {
      std::vector<copy_op> segments;
      if (i % 2 == 0) {
        segments.push_back(seg(b.get() + (i % 256) * 4096, a.get() + i * 1024, 1024));
      } else {  // two segments: the kernel path
        segments.push_back(seg(b.get() + (i % 256) * 4096, a.get() + i * 512, 512));
        segments.push_back(seg(b.get() + (i % 256) * 4096 + 1024, a.get(), 512));
      }
      engine->submit(std::move(segments), [&, i](errc code, const std::string&) {
        if (std::this_thread::get_id() == caller) ++on_caller;
        {
          std::lock_guard<std::mutex> lock(order_mutex);
          if (order.empty()) callback_thread = std::this_thread::get_id();
          if (std::this_thread::get_id() != callback_thread) ++other_threads;
          order.push_back(i);
        }
        if (code != errc::none) ++errors;
        ++calls[i];
      });
    }
    EXPECT(engine->wait_idle(60s));
    EXPECT(engine->pending() == 0);
  }
  bool once = true;
  for (auto& c : calls) once = once && c == 1;
  EXPECT(once, "every done exactly once");
  EXPECT(errors == 0);
  EXPECT(on_caller == 0);
  EXPECT(other_threads == 0, "every done on the same (the engine's) thread");
  EXPECT(std::is_sorted(order.begin(), order.end()), "done in submission order");

  // The destructor drains: 300 copies queued, then the engine goes away at once.
  std::atomic<int> completed{0};
  {
    auto engine = kvferry::gpu::make_cuda_copy_engine(device, &error);
    if (!engine) return;
    for (int i = 0; i < 300; ++i) {
      engine->submit({seg(b.get(), a.get(), n)}, [&](errc code, const std::string&) {
        if (code == errc::none) ++completed;
      });
    }
  }
  EXPECT(completed == 300,
         std::to_string(completed.load()) + " of 300 before the destructor returned");

  // Throwing callbacks do not stop later copies; a callback may submit, also while draining.
  std::atomic<int> second{0};
  {
    auto engine = kvferry::gpu::make_cuda_copy_engine(device, &error);
    if (!engine) return;
    engine->submit({}, [](errc, const std::string&) { throw std::runtime_error("callback bug"); });
    engine->submit({}, [](errc, const std::string&) { throw 42; });
    EXPECT(run_copy(*engine, {seg(b.get(), a.get(), 4096)}).code == errc::none);
    auto* raw = engine.get();
    engine->submit({}, [&, raw](errc, const std::string&) {
      raw->submit({seg(b.get(), a.get(), 4096), seg(b.get() + 8192, a.get(), 4096)},
                  [&](errc code, const std::string&) {
                    if (code == errc::none) ++second;
                  });
    });
  }
  EXPECT(second == 1);

  // An empty done function is allowed.
  auto engine = kvferry::gpu::make_cuda_copy_engine(device, &error);
  if (!engine) return;
  engine->submit({seg(b.get(), a.get(), 4096)}, nullptr);
  EXPECT(engine->wait_idle(60s));
}

void refusals(copy_engine& engine, int device) {
  const std::size_t n = 1 << 16;
  device_buffer a(n);
  device_buffer b(n);
  a.upload(random_bytes(n, 12));
  must(cudaMemset(b.get(), 0xEE, n), "cudaMemset");
  // A valid segment before the bad one: nothing of a refused copy is written.
  outcome o = run_copy(engine, {seg(b.get(), a.get(), 4096), seg(b.get() + 4096, a.get(), 16),
                                seg(nullptr, a.get(), 16)});
  EXPECT(o.code == errc::invalid_argument);
  EXPECT(o.detail == "cuda:" + std::to_string(device) + ": segment 2: null dst with 16 bytes",
         o.detail);
  o = run_copy(engine, {seg(b.get(), nullptr, 1)});
  EXPECT(o.code == errc::invalid_argument, o.detail);
  o = run_copy(engine, {seg(a.get() + 1, a.get(), 8)});
  EXPECT(o.code == errc::invalid_argument, o.detail);
  EXPECT(o.detail.find("overlap") != std::string::npos, o.detail);
  EXPECT(b.download() == std::vector<std::uint8_t>(n, 0xEE), "nothing written by refused copies");
  o = run_copy(engine, {seg(nullptr, nullptr, 0)});
  EXPECT(o.code == errc::none, o.detail);
  o = run_copy(engine, {});
  EXPECT(o.code == errc::none, o.detail);

  std::string error;
  int count = 0;
  must(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  EXPECT(kvferry::gpu::make_cuda_copy_engine(count, &error) == nullptr);
  EXPECT(error.find("no such device") != std::string::npos, error);

  std::vector<std::uint8_t> host(1 << 16);
  EXPECT(kvferry::gpu::pin_host_range(host.data(), host.size(), &error) == errc::none, error);
  EXPECT(kvferry::gpu::pin_host_range(host.data() + 8192, 100, &error) == errc::invalid_argument);
  EXPECT(error.find("already pinned") != std::string::npos, error);
  EXPECT(kvferry::gpu::unpin_host_range(host.data() + 8192, &error) == errc::invalid_argument);
  EXPECT(kvferry::gpu::unpin_host_range(host.data(), &error) == errc::none, error);
  EXPECT(kvferry::gpu::unpin_host_range(host.data(), &error) == errc::invalid_argument);
}

// Device memory full: the kernel's table cannot be allocated -> out_of_memory through done; the
// engine then serves the same copy once memory is back.
void out_of_memory(copy_engine& engine, int device) {
  const std::size_t count = 200000;
  device_buffer a(count);
  device_buffer b(count);
  a.upload(random_bytes(count, 13));
  std::vector<copy_op> segments;
  for (std::size_t i = 0; i < count; ++i)
    segments.push_back(seg(b.get() + count - 1 - i, a.get() + i, 1));

  // Nothing cached in the stream-ordered pool, then every byte taken.
  must(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  cudaMemPool_t pool = nullptr;
  must(cudaDeviceGetDefaultMemPool(&pool, device), "cudaDeviceGetDefaultMemPool");
  must(cudaMemPoolTrimTo(pool, 0), "cudaMemPoolTrimTo");
  std::vector<void*> filler;
  for (std::size_t chunk = std::size_t{1} << 30; chunk >= (std::size_t{1} << 20);) {
    void* p = nullptr;
    if (cudaMalloc(&p, chunk) == cudaSuccess) {
      filler.push_back(p);
    } else {
      (void)cudaGetLastError();
      chunk /= 2;
    }
  }
  std::size_t free_bytes = 0;
  std::size_t total = 0;
  (void)cudaMemGetInfo(&free_bytes, &total);
  std::printf("     device memory filled: %zu allocations, %zu bytes left of %zu\n", filler.size(),
              free_bytes, total);
  outcome o = run_copy(engine, segments);
  EXPECT(o.code == errc::out_of_memory, std::string(kvferry::to_string(o.code)) + ": " + o.detail);
  EXPECT(o.detail.find("cudaErrorMemoryAllocation") != std::string::npos, o.detail);
  std::printf("     out of memory: %s\n", o.detail.c_str());
  for (void* p : filler) (void)cudaFree(p);
  o = run_copy(engine, segments);
  EXPECT(o.code == errc::none, o.detail);
  const auto got = b.download();
  const auto init = a.download();
  bool same = true;
  for (std::size_t i = 0; i < count; ++i) same = same && got[count - 1 - i] == init[i];
  EXPECT(same, "the same copy after memory came back");
}

// --- the layout conversion kernel against the CPU reference (as kv_convert_cuda_tests.cpp) ----

using kvferry::gpu::kv_layout;

constexpr auto make_layout = kvferry::gpu::testing::layout_of;

struct convert_case {
  std::uint32_t heads, tokens, dim, element_bytes, a, b;
  std::size_t blocks, src_gap, dst_gap;
};

// "" or the first difference between GPU and CPU over whole destination buffers (gaps too).
std::string convert_case_differs(const convert_case& c, cudaStream_t stream) {
  std::mt19937 gen(c.heads * 7919u + c.a * 131u + c.b);
  const kv_layout src0 = make_layout(c.heads, c.tokens, c.dim, c.element_bytes, c.a, 0);
  const std::size_t sblock = src0.block_bytes();
  const std::size_t stotal = c.src_gap + c.blocks * (sblock + c.src_gap);
  std::vector<std::vector<std::uint8_t>> host_src;
  std::vector<std::unique_ptr<device_buffer>> dev_src;
  for (std::uint32_t i = 0; i < c.a; ++i) {
    host_src.push_back(random_bytes(stotal, static_cast<std::uint32_t>(gen())));
    dev_src.push_back(std::make_unique<device_buffer>(stotal));
    dev_src.back()->upload(host_src.back());
  }
  for (std::uint32_t j = 0; j < c.b; ++j) {
    const kv_layout dst = make_layout(c.heads, c.tokens, c.dim, c.element_bytes, c.b, j);
    const std::size_t dblock = dst.block_bytes();
    const std::size_t dtotal = c.dst_gap + c.blocks * (dblock + c.dst_gap);
    std::vector<std::uint8_t> host_dst(dtotal, 0xEE);
    device_buffer dev_dst(dtotal);
    dev_dst.upload(host_dst);
    std::vector<void*> cpu_out, gpu_out;
    for (std::size_t k = 0; k < c.blocks; ++k) {
      cpu_out.push_back(host_dst.data() + c.dst_gap + k * (dblock + c.dst_gap));
      gpu_out.push_back(dev_dst.get() + c.dst_gap + k * (dblock + c.dst_gap));
    }
    for (std::uint32_t i : kvferry::gpu::source_ranks(src0, dst)) {
      const std::string where = "TP " + std::to_string(c.a) + " rank " + std::to_string(i) +
                                " -> TP " + std::to_string(c.b) + " rank " + std::to_string(j);
      const kv_layout src = make_layout(c.heads, c.tokens, c.dim, c.element_bytes, c.a, i);
      std::vector<const void*> cpu_in, gpu_in;
      for (std::size_t k = 0; k < c.blocks; ++k) {
        cpu_in.push_back(host_src[i].data() + c.src_gap + k * (sblock + c.src_gap));
        gpu_in.push_back(dev_src[i]->get() + c.src_gap + k * (sblock + c.src_gap));
      }
      kvferry::gpu::convert_blocks_cpu(src, dst, cpu_in, cpu_out);
      if (auto e = kvferry::gpu::convert_blocks_cuda(src, dst, gpu_in, gpu_out, stream)) {
        return where + ": " + *e;
      }
      const cudaError_t e = cudaStreamSynchronize(stream);
      if (e != cudaSuccess) return where + ": kernel failed: " + cuda_text(e);
      const auto back = dev_dst.download();
      for (std::size_t o = 0; o < dtotal; ++o) {
        if (back[o] != host_dst[o]) {
          return where + ": byte " + std::to_string(o) + ": GPU " + std::to_string(back[o]) +
                 ", CPU " + std::to_string(host_dst[o]);
        }
      }
    }
  }
  return "";
}

void layout_conversion() {
  cudaStream_t stream = nullptr;
  must(cudaStreamCreate(&stream), "cudaStreamCreate");
  const convert_case cases[] = {
      {8, 16, 128, 2, 2, 4, 300, 0, 0},    // bf16 heads, two launches of at most 240 blocks
      {8, 16, 128, 2, 4, 2, 250, 16, 48},
      {8, 16, 128, 2, 2, 2, 10, 0, 0},     // identity: one run of the whole block
      {8, 16, 128, 2, 1, 8, 9, 0, 16},
      {8, 16, 128, 2, 8, 1, 9, 16, 0},
      {12, 3, 5, 1, 3, 6, 500, 3, 7},      // 15-byte heads, misaligned blocks: the byte path
      {12, 3, 5, 1, 4, 6, 500, 5, 5},      // equally misaligned: 16-byte path with head and tail
      {12, 3, 5, 1, 6, 4, 241, 1, 17},
      {6, 1, 1, 4, 2, 3, 33, 5, 0},
      {6, 1, 1, 4, 3, 2, 33, 0, 5},
  };
  for (const convert_case& c : cases) {
    const std::string d = convert_case_differs(c, stream);
    EXPECT(d.empty(), "heads " + std::to_string(c.heads) + ", TP " + std::to_string(c.a) +
                          " -> " + std::to_string(c.b) + ": " + d);
  }
  must(cudaStreamDestroy(stream), "cudaStreamDestroy");
}

// Breaks the context on purpose: the copy kernel writing to address 0x10. Afterwards every copy
// fails through done with the error named, the engine keeps answering, and goes away cleanly.
void broken_context(int device) {
  std::string error;
  auto engine = kvferry::gpu::make_cuda_copy_engine(device, &error);
  EXPECT(engine != nullptr, error);
  if (!engine) return;
  device_buffer a(1 << 20);
  device_buffer b(1 << 20);
  EXPECT(run_copy(*engine, {seg(b.get(), a.get(), 4096)}).code == errc::none);

  const kvferry::gpu::copy_piece bad{addr_of(a.get()), 0x10, 4096};
  device_buffer table(sizeof bad);
  must(cudaMemcpy(table.get(), &bad, sizeof bad, cudaMemcpyHostToDevice), "cudaMemcpy table");
  cudaStream_t stream = nullptr;
  must(cudaStreamCreate(&stream), "cudaStreamCreate");
  auto launch = kvferry::gpu::launch_piece_copy(
      reinterpret_cast<const kvferry::gpu::copy_piece*>(table.get()), 1, 65535, stream);
  EXPECT(!launch.has_value(), launch.value_or(""));
  const cudaError_t e = cudaStreamSynchronize(stream);
  std::printf("     the faulting kernel: %s\n", cuda_text(e).c_str());
  EXPECT(e != cudaSuccess, "a write to address 0x10 must fail");
  const std::string name = cudaGetErrorName(e);

  for (auto segments : {std::vector<copy_op>{seg(b.get(), a.get(), 4096)},
                        std::vector<copy_op>{seg(b.get(), a.get(), 512),
                                             seg(b.get() + 4096, a.get() + 8192, 512)}}) {
    const outcome o = run_copy(*engine, segments);
    std::printf("     a copy after it: %s: %s\n", kvferry::to_string(o.code), o.detail.c_str());
    EXPECT(o.code == errc::transport_error, kvferry::to_string(o.code));
    EXPECT(o.detail.rfind("cuda:" + std::to_string(device) + ": ", 0) == 0, o.detail);
    EXPECT(o.detail.find(name) != std::string::npos, o.detail);
    EXPECT(o.detail.find("breaks the process's CUDA context") != std::string::npos, o.detail);
  }
  EXPECT(engine->wait_idle(10s));
  EXPECT(engine->pending() == 0);
  engine.reset();  // must return
  (void)cudaStreamDestroy(stream);
}

template <typename F>
void section(const char* name, F&& body) {
  const int before = failures;
  const int checks_before = checks;
  const auto start = std::chrono::steady_clock::now();
  body();
  const double ms = std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - start).count();
  std::printf("%s %s (%d checks, %.0f ms)\n", failures == before ? "ok  " : "FAIL", name,
              checks - checks_before, ms);
  std::fflush(stdout);
}

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::string error;
  if (kvferry::gpu::cuda_device_count() == 0) {
    (void)kvferry::gpu::make_cuda_copy_engine(0, &error);
    std::printf("cuda_device_selftest: SKIP: %s\n", error.c_str());
    return exit_skipped;
  }
  const int device = 0;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) == cudaSuccess) {
    std::printf("device %d: %s, sm_%d%d, %.1f GiB\n", device, prop.name, prop.major, prop.minor,
                static_cast<double>(prop.totalGlobalMem) / (1u << 30));
  }
  must(cudaSetDevice(device), "cudaSetDevice");
  auto engine = kvferry::gpu::make_cuda_copy_engine(device, &error);
  if (!engine) {
    std::printf("FAIL: make_cuda_copy_engine: %s\nRESULT: FAIL\n", error.c_str());
    return 1;
  }
  EXPECT(engine->name() == "cuda:0", engine->name());

  copy_engine& e = *engine;
  section("single segments: cudaMemcpyAsync pinned/device/pageable",
          [&] { single_segment_copies(e); });
  section("gather/scatter: 1000 16 KiB device blocks <-> pinned staging",
          [&] { gather_scatter_staging(e); });
  section("gather/scatter: device <-> device, mixed sizes and alignments",
          [&] { gather_scatter_device_mixed(e); });
  section("interfering segments run in order", [&] { ordered_segments(e); });
  section("pageable and managed memory in many-segment copies",
          [&] { pageable_and_managed(e); });
  section("one copy over several launches", [&] { many_launches(e); });
  section("contract: once, engine thread, order, drain, throwing callbacks",
          [&] { contract(device); });
  section("refusals: invalid segments, device numbers, pinning", [&] { refusals(e, device); });
  section("layout conversion kernel == CPU reference, byte for byte",
          [&] { layout_conversion(); });
  section("out of device memory fails the copy; the engine keeps serving",
          [&] { out_of_memory(e, device); });
  engine.reset();
  std::printf("     (the next section breaks the CUDA context on purpose, so it runs last)\n");
  section("an illegal address fails later copies with the error named",
          [&] { broken_context(device); });

  std::printf("cuda_device_selftest: %d checks, %d failed\nRESULT: %s\n", checks, failures,
              failures == 0 ? "PASS" : "FAIL");
  return failures == 0 ? 0 : 1;
}
#endif
