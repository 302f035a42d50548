// The KV-cache layout both sides of a transfer agree on, and the conversion of KV blocks between
// tensor-parallel shapes (heterogeneous TP: a prefill with TP = a feeding a decode with TP = b).
// Standard library only: no CAF, no UCX, no CUDA (the CUDA kernel is gpu/kv_convert_cuda.hpp).
//
// The layout. A model has `total_heads` KV heads; with tensor parallelism of `tp_size`, rank r
// owns the contiguous heads [r * total_heads / tp_size, (r + 1) * total_heads / tp_size). One
// block of one rank's cache, for one layer, holds
//
//   [kv][local_heads][tokens_per_block][head_dim]   elements of element_bytes each, row-major
//
// that is, K of every local head, then V of every local head, and inside a head all its tokens.
// This is the per-layer block shape of vLLM-style paged caches in the heads-major ("HND")
// arrangement (e.g. FlashInfer's paged cache with kv_layout "HND": [page][2][heads][tokens][dim]),
// with K and V of one block adjacent. Heads-major is what makes TP conversion cheap: one head's
// [tokens][head_dim] is contiguous, and so are consecutive heads, so moving any range of heads is
// one contiguous run per K and V. A tokens-major ("NHD") cache, or one that keeps K and V in
// separate tensors, is a different layout and needs a different plan.
//
// A "block" below is always one layer's block of one rank: a caller moving L layers of N blocks
// passes L * N block pointers (the `layers` field only has to agree between the two sides).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kvferry::gpu {

// Heads [begin, end) of the model, by global head number.
struct head_span {
  std::uint32_t begin = 0;
  std::uint32_t end = 0;
};

struct kv_layout {
  std::uint32_t layers = 0;
  std::uint32_t kv = 2;  // 2: K and V; 1: a cache with a single tensor per layer
  std::uint32_t total_heads = 0;  // the model's KV heads, before tensor parallelism
  std::uint32_t tokens_per_block = 0;
  std::uint32_t head_dim = 0;
  std::uint32_t element_bytes = 0;  // 2 for fp16/bf16, 1 for fp8, ...
  std::uint32_t tp_size = 1;
  std::uint32_t tp_rank = 0;

  // The helpers below assume check() passed; on an invalid layout they return 0 (or an empty
  // span) rather than divide by zero, and block_bytes() may have wrapped around.
  std::uint32_t local_heads() const noexcept;   // total_heads / tp_size
  head_span head_range() const noexcept;        // the heads this rank owns
  std::uint64_t head_bytes() const noexcept;    // one head of K (or V): tokens * head_dim * bytes
  std::uint64_t block_bytes() const noexcept;   // one block of one layer for this rank
};

// The first problem with `l`, or nothing when it is usable: a zero field, kv other than 1 or 2,
// total_heads not divisible by tp_size, tp_rank out of range, or a block size that does not fit
// in 64 bits.
std::optional<std::string> check(const kv_layout& l);

// True when blocks of `a` and `b` can be converted into each other: the same layers, kv,
// total_heads, tokens_per_block, head_dim and element_bytes (only tp_size and tp_rank may differ).
// Otherwise, when `why` is not null, sets it to the first field that differs, with both values.
// Compares fields only: it does not check() either layout.
bool compatible(const kv_layout& a, const kv_layout& b, std::string* why = nullptr);

// One contiguous copy inside a block: `bytes` from src_offset of a source block to dst_offset of
// a destination block.
struct copy_run {
  std::uint64_t src_offset = 0;
  std::uint64_t dst_offset = 0;
  std::uint64_t bytes = 0;
};

inline bool operator==(const copy_run& a, const copy_run& b) noexcept {
  return a.src_offset == b.src_offset && a.dst_offset == b.dst_offset && a.bytes == b.bytes;
}

// The runs that move, from a block of rank `src` to the block of rank `dst` at the same position,
// every head both ranks own, in increasing offsets. Runs are maximal (no two are adjacent in both
// blocks): at most one per K and V, and a single run of the whole block when both ranks own the
// same heads. Empty when the ranks share no head. Both layouts must pass check() and be
// compatible(); otherwise throws std::invalid_argument naming the problem (a misuse, not a
// run-time condition: call check() and compatible() on layouts from outside first).
std::vector<copy_run> plan_conversion(const kv_layout& src, const kv_layout& dst);

// The ranks of the TP shape `src` (its tp_rank is ignored) that own some of the heads of rank
// `dst`, in increasing order: the prefill ranks a decode rank has to receive from. Same
// preconditions (and exception) as plan_conversion.
std::vector<std::uint32_t> source_ranks(const kv_layout& src, const kv_layout& dst);

// The first problem with converting src_blocks[i] to dst_blocks[i] for every i, or nothing: the
// layouts (as plan_conversion wants them), the two counts differ, a pointer is null, or a
// destination block (dst.block_bytes() from its pointer) overlaps a source block or another
// destination block. Source blocks may overlap each other: they are only read. Pointers are only
// compared, never dereferenced, so device pointers can be checked too.
std::optional<std::string> check_blocks(const kv_layout& src, const kv_layout& dst,
                                        const std::vector<const void*>& src_blocks,
                                        const std::vector<void*>& dst_blocks);

// The CPU reference: applies plan_conversion(src, dst) to every pair (src_blocks[i],
// dst_blocks[i]) with memcpy. Writes only the bytes of the heads both ranks own; the rest of
// every destination block is left as it was. Throws std::invalid_argument with check_blocks()'s
// message before writing anything when that finds a problem.
void convert_blocks_cpu(const kv_layout& src, const kv_layout& dst,
                        const std::vector<const void*>& src_blocks,
                        const std::vector<void*>& dst_blocks);

// Fills the blocks of one whole decode rank `dst` from a prefill of TP shape `src` (its tp_rank
// is ignored): from every rank r in source_ranks(src, dst), the heads r owns, so every byte of
// every destination block is written. src_blocks_by_rank has src.tp_size entries;
// src_blocks_by_rank[r] holds rank r's blocks, one per destination block, for every r in
// source_ranks() (entries of other ranks are not read and may be empty). Throws
// std::invalid_argument naming the rank and the problem before writing anything when the
// arguments are not usable (as check_blocks(), with overlaps checked across all ranks).
void assemble_rank_cpu(const kv_layout& src, const kv_layout& dst,
                       const std::vector<std::vector<const void*>>& src_blocks_by_rank,
                       const std::vector<void*>& dst_blocks);

// Heterogeneous TP through the transfer itself (no conversion pass afterwards): a prefill rank
// offers each of its blocks as kv * local_heads spans, one per head of K, then one per head of V
// (head_spans); a decode rank fetches from each source rank only the spans of the heads it owns
// (transfer_options::fetch_ranges), each into the place its own layout keeps that head
// (plan_tp_fetch). The sender coalesces spans adjacent on both sides into one put, so a block
// moves as the runs plan_conversion names, and the heads land converted.

// A byte range inside a region: an offset from the region's start and a size.
struct region_span {
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
};

// The spans of the blocks of rank `src` at `block_offsets` (each block's offset in its region),
// in offer order: block by block; inside a block K's heads, then V's, each head_bytes().
// Throws std::invalid_argument when check(src) finds a problem.
std::vector<region_span> head_spans(const kv_layout& src,
                                    const std::vector<std::uint64_t>& block_offsets);

// What decode rank `dst` fetches of the offer head_spans(src, <n blocks>) of prefill rank
// src.tp_rank: `ranges` (first, count) of the offer's spans, ascending and disjoint, and one
// destination per fetched span, in order: into the block at dst_block_offsets[i] (block i of the
// offer lands in block i of the destination). Empty when the two ranks share no head. Same
// preconditions (and exception) as plan_conversion.
struct tp_fetch {
  std::vector<std::pair<std::uint32_t, std::uint32_t>> ranges;
  std::vector<region_span> destinations;
};
tp_fetch plan_tp_fetch(const kv_layout& src, const kv_layout& dst,
                       const std::vector<std::uint64_t>& dst_block_offsets);

}  // namespace kvferry::gpu
