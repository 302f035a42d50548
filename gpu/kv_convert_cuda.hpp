// TP conversion of KV blocks on the GPU: the same runs as convert_blocks_cpu (kv_layout.hpp),
// done by a kernel, with byte-identical results. Includes no CUDA header, so code built by the
// host compiler alone can call it; it exists only in builds that found CUDA.
#pragma once

#include "gpu/kv_layout.hpp"

#include <optional>
#include <string>
#include <vector>

namespace kvferry::gpu {

#ifdef KVFERRY_WITH_CUDA
// Queues on `stream` (a cudaStream_t; nullptr: the default stream) the copies of
// plan_conversion(src, dst) from src_blocks[i] to dst_blocks[i] for every i. The pointers are
// device pointers (or any memory the current device can address); the vectors themselves are
// read before the call returns, so they need not outlive it. Asynchronous: the copies are done
// when the stream has reached this point. Writes only the bytes of the heads both ranks own.
//
// Returns nothing when every kernel was queued (or nothing had to be copied), otherwise the CUDA
// error, e.g. when no device or driver is present (the copies go in launches of up to 240
// blocks: when a later launch fails, the earlier ones are already queued). Errors during
// execution surface at the next synchronization, as usual for CUDA. Misuse is not a run-time
// condition: when check_blocks() finds a problem, throws std::invalid_argument with its message
// before any CUDA call.
std::optional<std::string> convert_blocks_cuda(const kv_layout& src, const kv_layout& dst,
                                               const std::vector<const void*>& src_blocks,
                                               const std::vector<void*>& dst_blocks,
                                               void* stream);
#endif

}  // namespace kvferry::gpu
