// The batched gather/scatter kernel (cuda_copy_kernel.hpp): one thread block per piece of a
// device-resident table, so one launch serves thousands of scattered 16 KiB KV blocks.
//
// Why a table in device memory rather than kv_convert.cu's pointers in the launch parameters:
// a gather of a few thousand blocks would take a launch per ~170 pieces in 4 KiB of parameters,
// each launch too small to keep every SM busy; with the table, one launch covers the whole copy
// and the GPU is full. The engine uploads the table on its stream right before the launch.
//
// Each thread moves several 16-byte words per loop trip, loading them all before storing any, so
// that every thread has several loads in flight: a 16 KiB piece is one trip of 4 words for each
// of the 256 threads, which is what keeps HBM busy with small pieces.
#include "gpu/cuda_copy_kernel.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

namespace kvferry::gpu {

namespace {

static_assert(sizeof(copy_piece) == 24, "the kernel reads pieces as three 64-bit words");

constexpr unsigned unroll = 4;

// Copies `n` bytes in words of W with every thread of the block; `d` and `s` are equally
// misaligned with respect to sizeof(W). Bytes up to the first W boundary go one by one, then
// whole words, then the tail.
template <typename W>
__device__ void copy_words(unsigned char* __restrict__ d, const unsigned char* __restrict__ s,
                           std::uint64_t n) {
  const std::uint64_t tid = threadIdx.x;
  const std::uint64_t stride = blockDim.x;
  std::uint64_t head = (sizeof(W) - (reinterpret_cast<std::uintptr_t>(s) % sizeof(W))) % sizeof(W);
  if (head > n) head = n;
  for (std::uint64_t i = tid; i < head; i += stride) d[i] = s[i];
  d += head;
  s += head;
  n -= head;
  const std::uint64_t words = n / sizeof(W);
  const W* __restrict__ ws = reinterpret_cast<const W*>(s);
  W* __restrict__ wd = reinterpret_cast<W*>(d);
  std::uint64_t i = tid;
  for (; i + (unroll - 1) * stride < words; i += unroll * stride) {
    W v[unroll];
#pragma unroll
    for (unsigned k = 0; k < unroll; ++k) v[k] = ws[i + k * stride];
#pragma unroll
    for (unsigned k = 0; k < unroll; ++k) wd[i + k * stride] = v[k];
  }
  for (; i < words; i += stride) wd[i] = ws[i];
  for (std::uint64_t j = words * sizeof(W) + tid; j < n; j += stride) d[j] = s[j];
}

__global__ void __launch_bounds__(piece_copy_threads)
    piece_copy_kernel(const copy_piece* __restrict__ table) {
  const copy_piece p = table[blockIdx.x];
  auto* d = reinterpret_cast<unsigned char*>(p.dst);
  const auto* s = reinterpret_cast<const unsigned char*>(p.src);
  // The widest word both sides can be aligned to at once: the lowest set bit of src ^ dst.
  const std::uint64_t relative = (p.src ^ p.dst) & 15u;
  if (relative == 0) {
    copy_words<uint4>(d, s, p.bytes);
  } else if ((relative & 7u) == 0) {
    copy_words<uint2>(d, s, p.bytes);
  } else if ((relative & 3u) == 0) {
    copy_words<unsigned>(d, s, p.bytes);
  } else {
    copy_words<unsigned char>(d, s, p.bytes);
  }
}

}  // namespace

std::optional<std::string> launch_piece_copy(const copy_piece* table, std::size_t count,
                                             std::size_t max_per_launch, void* stream) {
  auto* st = static_cast<cudaStream_t>(stream);
  for (const launch_range& l : split_launches(count, max_per_launch)) {
    const copy_piece* first = table + l.first;
    void* args[] = {&first};
    // cudaLaunchKernel reports this launch's own error, not whatever an earlier call left.
    const cudaError_t e =
        cudaLaunchKernel(reinterpret_cast<const void*>(&piece_copy_kernel),
                         dim3(static_cast<unsigned>(l.count)), dim3(piece_copy_threads), args, 0,
                         st);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // as in cuda_probe.cpp: later runtime calls must not see it
      return std::string("launch of the copy kernel for pieces ") + std::to_string(l.first) +
             ".." + std::to_string(l.first + l.count - 1) + ": " + cudaGetErrorName(e) + ": " +
             cudaGetErrorString(e);
    }
  }
  return std::nullopt;
}

}  // namespace kvferry::gpu
