// Copy bandwidths on one GPU, for the CUDA copy engine's targets: pinned cudaMemcpy host <->
// device, device-to-device cudaMemcpy, and the batched gather/scatter kernel over 16 KiB blocks
// (the target: gather and scatter device <-> device at least 0.8 x the device-to-device
// memcpy), plus the same copies submitted through the engine (planning, pointer lookups and the
// table upload included). Measures and prints; asserts nothing.
//
//   cuda_copy_bench [--blocks N] [--block-bytes B] [--reps R]
//
// Bandwidth is bytes copied per second (each byte counted once, although a device-to-device copy
// reads and writes it), in GB/s of 10^9 bytes. Kernel and memcpy times come from CUDA events
// around `reps` back-to-back launches after a warm-up; engine times are wall clock from the first
// submit to wait_idle over `reps` copies in flight together. Exit status 0, 1 when a CUDA call
// failed, 77 when there is no CUDA device (or no CUDA in the build).
#include "gpu/copy_engine.hpp"

#ifdef KVFERRY_WITH_CUDA
#include "gpu/cuda_copy_kernel.hpp"

#include <cuda_runtime_api.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#ifndef KVFERRY_WITH_CUDA
int main() {
  std::string error;
  (void)kvferry::gpu::make_cuda_copy_engine(0, &error);
  std::printf("cuda_copy_bench: SKIP: %s\n", error.c_str());
  return 77;
}
#else

namespace {

using kvferry::addr_of;
using kvferry::copy_op;
using kvferry::errc;
using kvferry::gpu::copy_piece;

void must(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::printf("cuda_copy_bench: %s: %s: %s\n", what, cudaGetErrorName(e), cudaGetErrorString(e));
  std::exit(1);
}

struct options {
  std::size_t blocks = 16384;       // 256 MiB of 16 KiB blocks
  std::size_t block_bytes = 16384;
  int reps = 20;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> unsigned long long {
      if (i + 1 >= argc) {
        std::printf("cuda_copy_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::strtoull(argv[++i], nullptr, 10);
    };
    if (a == "--blocks") {
      o.blocks = value();
    } else if (a == "--block-bytes") {
      o.block_bytes = value();
    } else if (a == "--reps") {
      o.reps = static_cast<int>(value());
    } else {
      std::printf("usage: cuda_copy_bench [--blocks N] [--block-bytes B] [--reps R]\n");
      std::exit(2);
    }
  }
  if (o.blocks == 0 || o.block_bytes == 0 || o.reps <= 0) {
    std::printf("cuda_copy_bench: blocks, block bytes and reps must be positive\n");
    std::exit(2);
  }
  return o;
}

// Seconds per run of `enqueue` (which queues one copy on `stream`), by CUDA events around
// `reps` runs after two warm-up runs.
double time_on_stream(cudaStream_t stream, int reps, const std::function<void()>& enqueue) {
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  must(cudaEventCreate(&start), "cudaEventCreate");
  must(cudaEventCreate(&stop), "cudaEventCreate");
  enqueue();
  enqueue();
  must(cudaStreamSynchronize(stream), "warm-up");
  must(cudaEventRecord(start, stream), "cudaEventRecord");
  for (int i = 0; i < reps; ++i) enqueue();
  must(cudaEventRecord(stop, stream), "cudaEventRecord");
  must(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0;
  must(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  must(cudaEventDestroy(start), "cudaEventDestroy");
  must(cudaEventDestroy(stop), "cudaEventDestroy");
  return static_cast<double>(ms) / 1e3 / reps;
}

double gbps(std::size_t bytes, double seconds) {
  return static_cast<double>(bytes) / seconds / 1e9;
}

void report(const char* what, std::size_t bytes, double seconds) {
  std::printf("%-52s %9.1f GB/s  (%8.1f us per %zu MiB)\n", what, gbps(bytes, seconds),
              seconds * 1e6, bytes >> 20);
  std::fflush(stdout);
}

// A piece table in device memory, uploaded once.
struct device_table {
  copy_piece* ptr = nullptr;
  std::size_t count = 0;
  explicit device_table(const std::vector<copy_piece>& pieces) : count(pieces.size()) {
    must(cudaMalloc(reinterpret_cast<void**>(&ptr), pieces.size() * sizeof(copy_piece)),
         "cudaMalloc table");
    must(cudaMemcpy(ptr, pieces.data(), pieces.size() * sizeof(copy_piece),
                    cudaMemcpyHostToDevice),
         "cudaMemcpy table");
  }
  ~device_table() { (void)cudaFree(ptr); }
  device_table(const device_table&) = delete;
  device_table& operator=(const device_table&) = delete;
};

// Wall-clock seconds per copy for `reps` copies of `segments` in flight on `engine` together.
double time_engine(kvferry::gpu::copy_engine& engine, const std::vector<copy_op>& segments,
                   int reps) {
  int failed = 0;
  std::string first_failure;
  auto done = [&](errc code, const std::string& detail) {
    if (code != errc::none && failed++ == 0) first_failure = detail;
  };
  engine.submit(segments, done);  // warm-up: the pinned table pool, events, lookups
  engine.wait_idle(std::chrono::minutes(1));
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) engine.submit(segments, done);
  if (!engine.wait_idle(std::chrono::minutes(2))) {
    std::printf("cuda_copy_bench: engine copies did not finish within 2 minutes\n");
    std::exit(1);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (failed != 0) {
    std::printf("cuda_copy_bench: %d engine copies failed: %s\n", failed, first_failure.c_str());
    std::exit(1);
  }
  return s / reps;
}

}  // namespace

int main(int argc, char** argv) {
  const options opt = parse(argc, argv);
  std::string error;
  if (kvferry::gpu::cuda_device_count() == 0) {
    (void)kvferry::gpu::make_cuda_copy_engine(0, &error);
    std::printf("cuda_copy_bench: SKIP: %s\n", error.c_str());
    return 77;
  }
  must(cudaSetDevice(0), "cudaSetDevice");
  cudaDeviceProp prop{};
  must(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  const std::size_t bytes = opt.blocks * opt.block_bytes;
  std::printf("device 0: %s, sm_%d%d, %d SMs; %zu blocks of %zu bytes (%zu MiB), %d reps\n",
              prop.name, prop.major, prop.minor, prop.multiProcessorCount, opt.blocks,
              opt.block_bytes, bytes >> 20, opt.reps);

  // The blocks live scattered in a pool twice their size, in random order, as in a paged cache.
  void* pool = nullptr;
  void* contiguous = nullptr;
  void* host = nullptr;
  must(cudaMalloc(&pool, 2 * bytes), "cudaMalloc pool");
  must(cudaMalloc(&contiguous, bytes), "cudaMalloc contiguous");
  must(cudaMemset(pool, 0x5a, 2 * bytes), "cudaMemset");
  must(cudaMemset(contiguous, 0xa5, bytes), "cudaMemset");
  host = std::malloc(bytes);
  if (host == nullptr) {
    std::printf("cuda_copy_bench: malloc of %zu bytes failed\n", bytes);
    return 1;
  }
  std::memset(host, 0, bytes);
  if (kvferry::gpu::pin_host_range(host, bytes, &error) != errc::none) {
    std::printf("cuda_copy_bench: %s\n", error.c_str());
    return 1;
  }
  std::vector<std::size_t> slot(2 * opt.blocks);
  std::iota(slot.begin(), slot.end(), 0);
  std::shuffle(slot.begin(), slot.end(), std::mt19937(1));
  slot.resize(opt.blocks);

  auto* pool_b = static_cast<std::uint8_t*>(pool);
  auto* cont_b = static_cast<std::uint8_t*>(contiguous);
  auto* host_b = static_cast<std::uint8_t*>(host);
  std::vector<copy_piece> gather_dev, scatter_dev, gather_host, scatter_host;
  std::vector<copy_op> gather_dev_ops, gather_host_ops, scatter_host_ops;
  for (std::size_t i = 0; i < opt.blocks; ++i) {
    const std::uint64_t block = addr_of(pool_b + slot[i] * opt.block_bytes);
    const std::uint64_t d = addr_of(cont_b + i * opt.block_bytes);
    const std::uint64_t h = addr_of(host_b + i * opt.block_bytes);
    gather_dev.push_back({block, d, opt.block_bytes});
    scatter_dev.push_back({d, block, opt.block_bytes});
    gather_host.push_back({block, h, opt.block_bytes});
    scatter_host.push_back({h, block, opt.block_bytes});
    gather_dev_ops.push_back({block, {d, opt.block_bytes, 0}});
    gather_host_ops.push_back({block, {h, opt.block_bytes, 0}});
    scatter_host_ops.push_back({h, {block, opt.block_bytes, 0}});
  }
  const kvferry::gpu::copy_limits limits;
  auto pieces = [&](const std::vector<copy_piece>& ranges) {
    return kvferry::gpu::split_pieces(ranges, limits.max_piece_bytes);
  };
  const device_table t_gather_dev(pieces(gather_dev));
  const device_table t_scatter_dev(pieces(scatter_dev));
  const device_table t_gather_host(pieces(gather_host));
  const device_table t_scatter_host(pieces(scatter_host));

  cudaStream_t stream = nullptr;
  must(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  auto memcpy_of = [&](void* dst, const void* src) {
    return [=] { must(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream), "memcpy"); };
  };
  auto kernel_of = [&](const device_table& t) {
    return [&t, &limits, stream] {
      if (auto e = kvferry::gpu::launch_piece_copy(t.ptr, t.count, limits.max_pieces_per_launch,
                                                   stream)) {
        std::printf("cuda_copy_bench: %s\n", e->c_str());
        std::exit(1);
      }
    };
  };

  std::printf("\n-- cudaMemcpyAsync, one contiguous range --\n");
  const double h2d = time_on_stream(stream, opt.reps, memcpy_of(contiguous, host));
  report("memcpy host->device (pinned)", bytes, h2d);
  const double d2h = time_on_stream(stream, opt.reps, memcpy_of(host, contiguous));
  report("memcpy device->host (pinned)", bytes, d2h);
  const double d2d = time_on_stream(stream, opt.reps, memcpy_of(contiguous, pool));
  report("memcpy device->device", bytes, d2d);

  std::printf("\n-- batched copy kernel, %zu blocks of %zu bytes --\n", opt.blocks,
              opt.block_bytes);
  const double g_dev = time_on_stream(stream, opt.reps, kernel_of(t_gather_dev));
  report("gather kernel device blocks->device", bytes, g_dev);
  const double s_dev = time_on_stream(stream, opt.reps, kernel_of(t_scatter_dev));
  report("scatter kernel device->device blocks", bytes, s_dev);
  const double g_host = time_on_stream(stream, opt.reps, kernel_of(t_gather_host));
  report("gather kernel device blocks->pinned host", bytes, g_host);
  const double s_host = time_on_stream(stream, opt.reps, kernel_of(t_scatter_host));
  report("scatter kernel pinned host->device blocks", bytes, s_host);

  std::printf("\n-- through the CUDA copy engine (submit to done) --\n");
  auto engine = kvferry::gpu::make_cuda_copy_engine(0, &error);
  if (!engine) {
    std::printf("cuda_copy_bench: %s\n", error.c_str());
    return 1;
  }
  const double e_dev = time_engine(*engine, gather_dev_ops, opt.reps);
  report("engine gather device blocks->device", bytes, e_dev);
  const double e_ghost = time_engine(*engine, gather_host_ops, opt.reps);
  report("engine gather device blocks->pinned staging", bytes, e_ghost);
  const double e_shost = time_engine(*engine, scatter_host_ops, opt.reps);
  report("engine scatter pinned staging->device blocks", bytes, e_shost);
  engine.reset();

  std::printf("\n-- ratios (target: gather and scatter >= 0.80 x device->device memcpy) --\n");
  std::printf("gather kernel / memcpy device->device:  %.2f\n", d2d / g_dev);
  std::printf("scatter kernel / memcpy device->device: %.2f\n", d2d / s_dev);
  std::printf("gather kernel to host / memcpy device->host:  %.2f\n", d2h / g_host);
  std::printf("scatter kernel from host / memcpy host->device: %.2f\n", h2d / s_host);
  std::printf("engine gather / memcpy device->device:  %.2f\n", d2d / e_dev);

  must(cudaStreamDestroy(stream), "cudaStreamDestroy");
  (void)kvferry::gpu::unpin_host_range(host);
  std::free(host);
  (void)cudaFree(pool);
  (void)cudaFree(contiguous);
  return 0;
}
#endif
