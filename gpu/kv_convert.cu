// The CUDA side of the TP conversion (kv_convert_cuda.hpp): one thread block per (block, run)
// pair, each copying its run with 16-byte loads where source and destination share their
// alignment, bytes otherwise.
//
// The block pointers travel in the kernel parameters, in chunks of `chunk_blocks` blocks per
// launch, rather than in a device array: nothing to allocate, nothing to free after the stream
// reaches the copy, no stream synchronization, and the caller's vectors may go away as soon as
// the call returns (parameters are captured at launch). The chunk keeps the parameters under
// the 4 KiB every CUDA version accepts; a launch per 240 blocks is noise next to the copies.
#include "gpu/kv_convert_cuda.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>

namespace kvferry::gpu {

namespace {

// A run as the kernel sees it (copy_run's host header is not device code).
struct device_run {
  std::uint64_t src_offset;
  std::uint64_t dst_offset;
  std::uint64_t bytes;
};

// plan_conversion never yields more runs than kv planes, and check() allows kv <= 2.
constexpr unsigned max_runs = 2;
constexpr unsigned chunk_blocks = 240;
constexpr unsigned threads_per_block = 256;

struct launch_params {
  device_run runs[max_runs];
  unsigned run_count;
  unsigned block_count;  // blocks in this chunk, <= chunk_blocks
  const unsigned char* src[chunk_blocks];
  unsigned char* dst[chunk_blocks];
};
static_assert(sizeof(launch_params) <= 4096, "kernel parameters must stay within 4 KiB");

// Copies `n` bytes with all threads of the block. When source and destination are equally
// misaligned, the bytes up to the first 16-byte boundary go one by one, then 16-byte vectors,
// then the tail; otherwise every byte goes alone (no wider access is aligned on both sides).
__device__ void copy_run_bytes(unsigned char* d, const unsigned char* s, std::uint64_t n) {
  const std::uint64_t tid = threadIdx.x;
  const std::uint64_t stride = blockDim.x;
  const auto sa = reinterpret_cast<std::uintptr_t>(s);
  const auto da = reinterpret_cast<std::uintptr_t>(d);
  if (((sa ^ da) & 15u) != 0) {
    for (std::uint64_t i = tid; i < n; i += stride) d[i] = s[i];
    return;
  }
  std::uint64_t head = (16u - (sa & 15u)) & 15u;
  if (head > n) head = n;
  for (std::uint64_t i = tid; i < head; i += stride) d[i] = s[i];
  d += head;
  s += head;
  n -= head;
  const std::uint64_t vectors = n / 16;
  const auto* vs = reinterpret_cast<const uint4*>(s);
  auto* vd = reinterpret_cast<uint4*>(d);
  for (std::uint64_t i = tid; i < vectors; i += stride) vd[i] = vs[i];
  for (std::uint64_t i = vectors * 16 + tid; i < n; i += stride) d[i] = s[i];
}

// __grid_constant__: the parameters are read in place (indexed by blockIdx), not copied to
// per-thread local memory.
__global__ void __launch_bounds__(threads_per_block)
    convert_kernel(const __grid_constant__ launch_params p) {
  const unsigned b = blockIdx.x;
  const device_run run = p.runs[blockIdx.y];
  copy_run_bytes(p.dst[b] + run.dst_offset, p.src[b] + run.src_offset, run.bytes);
}

std::string cuda_problem(const char* what, cudaError_t e) {
  return std::string("convert_blocks_cuda: ") + what + ": " + cudaGetErrorName(e) + ": " +
         cudaGetErrorString(e);
}

}  // namespace

std::optional<std::string> convert_blocks_cuda(const kv_layout& src, const kv_layout& dst,
                                               const std::vector<const void*>& src_blocks,
                                               const std::vector<void*>& dst_blocks,
                                               void* stream) {
  if (auto p = check_blocks(src, dst, src_blocks, dst_blocks)) {
    throw std::invalid_argument("convert_blocks_cuda: " + *p);
  }
  const std::vector<copy_run> plan = plan_conversion(src, dst);
  if (plan.size() > max_runs) {
    // Unreachable while check() caps kv at 2; a guard should kv ever grow.
    throw std::invalid_argument("convert_blocks_cuda: " + std::to_string(plan.size()) +
                                " runs per block, the kernel takes at most " +
                                std::to_string(max_runs));
  }
  if (plan.empty() || dst_blocks.empty()) return std::nullopt;

  launch_params p{};
  for (std::size_t r = 0; r < plan.size(); ++r) {
    p.runs[r] = device_run{plan[r].src_offset, plan[r].dst_offset, plan[r].bytes};
  }
  p.run_count = static_cast<unsigned>(plan.size());
  auto* s = static_cast<cudaStream_t>(stream);
  for (std::size_t first = 0; first < dst_blocks.size(); first += chunk_blocks) {
    const std::size_t n = std::min<std::size_t>(chunk_blocks, dst_blocks.size() - first);
    p.block_count = static_cast<unsigned>(n);
    for (std::size_t i = 0; i < n; ++i) {
      p.src[i] = static_cast<const unsigned char*>(src_blocks[first + i]);
      p.dst[i] = static_cast<unsigned char*>(dst_blocks[first + i]);
    }
    void* args[] = {&p};
    // cudaLaunchKernel reports this launch's own error, not whatever an earlier call left.
    const cudaError_t e =
        cudaLaunchKernel(reinterpret_cast<const void*>(&convert_kernel),
                         dim3(p.block_count, p.run_count), dim3(threads_per_block), args, 0, s);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // as in cuda_probe.cpp: later runtime calls must not see it
      return cuda_problem(("launch for blocks " + std::to_string(first) + ".." +
                           std::to_string(first + n - 1))
                              .c_str(),
                          e);
    }
  }
  return std::nullopt;
}

}  // namespace kvferry::gpu
