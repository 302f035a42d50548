// The batched gather/scatter kernel of the CUDA copy engine, for the engine and for the
// benchmark (gpu/standalone). Includes no CUDA header, so code built by the host compiler alone
// can call it; it exists only in builds that found CUDA.
#pragma once

#include "gpu/copy_plan.hpp"

#include <cstddef>
#include <optional>
#include <string>

namespace kvferry::gpu {

#ifdef KVFERRY_WITH_CUDA
// Queues on `stream` (a cudaStream_t; nullptr: the default stream) the copy of every piece of
// `table`, a device-readable array of `count` pieces whose addresses the current device can
// dereference, in launches of at most `max_per_launch` pieces (one thread block per piece).
// Gather (scattered sources into one contiguous range), scatter (the reverse) and any mix are
// the same kernel: each block copies its own piece with the widest accesses that both sides'
// alignment allows (16, 8, 4 bytes, or single bytes). Pieces must not overlap each other's
// destinations: they run in parallel.
//
// Returns nothing when every launch was queued, otherwise the CUDA error of the first launch
// that failed (the ones before it are queued). Errors while the kernel runs (an illegal
// address) surface at the next synchronization, as usual for CUDA.
std::optional<std::string> launch_piece_copy(const copy_piece* table, std::size_t count,
                                             std::size_t max_per_launch, void* stream);

// The threads of one block of the kernel.
constexpr unsigned piece_copy_threads = 256;
#endif

}  // namespace kvferry::gpu
