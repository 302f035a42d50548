// The KV layout, the TP conversion plan, and its CPU reference (see kv_layout.hpp).
//
// The plan is interval arithmetic on head numbers: rank s of the source owns [s0, s1), rank d of
// the destination owns [d0, d1); they share [max(s0, d0), min(s1, d1)). Inside one K (or V)
// plane both blocks store their heads in increasing order, back to back, so the shared heads are
// one contiguous run in each; the K and V runs touch in both blocks only when both ranks own the
// same heads, and then coalesce into one run of the whole block.
#include "gpu/kv_layout.hpp"

#include "core/descriptor.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <tuple>
#include <utility>

namespace kvferry::gpu {

namespace {

constexpr std::uint64_t max_u64 = std::numeric_limits<std::uint64_t>::max();

// a * b, or nothing when that does not fit in 64 bits.
std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) {
  if (b != 0 && a > max_u64 / b) return std::nullopt;
  return a * b;
}

// The problem with converting between `src` and `dst` layouts, or nothing.
std::optional<std::string> check_pair(const kv_layout& src, const kv_layout& dst) {
  if (auto p = check(src)) return "source layout: " + *p;
  if (auto p = check(dst)) return "destination layout: " + *p;
  std::string why;
  if (!compatible(src, dst, &why)) return "layouts are not compatible: " + why;
  return std::nullopt;
}

void require_pair(const kv_layout& src, const kv_layout& dst, const char* fn) {
  if (auto p = check_pair(src, dst)) throw std::invalid_argument(std::string(fn) + ": " + *p);
}

std::vector<copy_run> plan_unchecked(const kv_layout& src, const kv_layout& dst) {
  const head_span s = src.head_range();
  const head_span d = dst.head_range();
  const std::uint32_t first = std::max(s.begin, d.begin);
  const std::uint32_t last = std::min(s.end, d.end);
  std::vector<copy_run> runs;
  if (first >= last) return runs;
  // compatible() made head_bytes equal on both sides; check() made every offset below fit.
  const std::uint64_t hb = src.head_bytes();
  const std::uint64_t bytes = std::uint64_t{last - first} * hb;
  for (std::uint32_t k = 0; k < src.kv; ++k) {
    const std::uint64_t so = (std::uint64_t{k} * src.local_heads() + (first - s.begin)) * hb;
    const std::uint64_t dof = (std::uint64_t{k} * dst.local_heads() + (first - d.begin)) * hb;
    if (!runs.empty()) {
      copy_run& prev = runs.back();
      if (prev.src_offset + prev.bytes == so && prev.dst_offset + prev.bytes == dof) {
        prev.bytes += bytes;
        continue;
      }
    }
    runs.push_back(copy_run{so, dof, bytes});
  }
  return runs;
}

// One block's address range, for the overlap check.
struct extent {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  bool is_dst = false;
  std::size_t index = 0;
  std::uint32_t rank = 0;  // the source rank (assemble_rank_cpu names it)
};

std::string extent_text(const extent& e, bool name_rank) {
  std::string s = (e.is_dst ? "destination block " : "source block ") + std::to_string(e.index);
  if (name_rank && !e.is_dst) s += " of source rank " + std::to_string(e.rank);
  return s;
}

// Adds `count` blocks of `bytes` at `ptrs`; a problem when one is null or wraps around.
template <typename Ptr>
std::optional<std::string> add_extents(const std::vector<Ptr>& ptrs, std::uint64_t bytes,
                                       bool is_dst, std::uint32_t rank, bool name_rank,
                                       std::vector<extent>* out) {
  for (std::size_t i = 0; i < ptrs.size(); ++i) {
    extent e{addr_of(ptrs[i]), 0, is_dst, i, rank};
    if (ptrs[i] == nullptr) return extent_text(e, name_rank) + " is null";
    if (e.begin > max_u64 - bytes) {
      return extent_text(e, name_rank) + " runs past the end of the address space";
    }
    e.end = e.begin + bytes;
    out->push_back(e);
  }
  return std::nullopt;
}

// The first overlap of a destination block with any other block, or nothing. Sorted by start,
// a block overlaps an earlier one exactly when it starts before that one's end, so keeping the
// furthest-reaching source and destination block seen so far finds every overlap that matters
// (source with source is allowed: they are only read).
std::optional<std::string> find_overlap(std::vector<extent> all, bool name_rank) {
  std::sort(all.begin(), all.end(),
            [](const extent& a, const extent& b) { return a.begin < b.begin; });
  const extent* reach_src = nullptr;
  const extent* reach_dst = nullptr;
  for (const extent& e : all) {
    const extent* hit = nullptr;
    if (reach_dst != nullptr && e.begin < reach_dst->end) hit = reach_dst;
    if (hit == nullptr && e.is_dst && reach_src != nullptr && e.begin < reach_src->end) {
      hit = reach_src;
    }
    if (hit != nullptr) {
      // Name the destination first: it is the block that would be corrupted.
      const extent& d = e.is_dst ? e : *hit;
      const extent& o = e.is_dst ? *hit : e;
      return extent_text(d, name_rank) + " overlaps " + extent_text(o, name_rank);
    }
    const extent*& reach = e.is_dst ? reach_dst : reach_src;
    if (reach == nullptr || e.end > reach->end) reach = &e;
  }
  return std::nullopt;
}

void apply(const std::vector<copy_run>& runs, const std::vector<const void*>& src_blocks,
           const std::vector<void*>& dst_blocks) {
  for (std::size_t i = 0; i < dst_blocks.size(); ++i) {
    const auto* s = static_cast<const unsigned char*>(src_blocks[i]);
    auto* d = static_cast<unsigned char*>(dst_blocks[i]);
    for (const copy_run& r : runs) std::memcpy(d + r.dst_offset, s + r.src_offset, r.bytes);
  }
}

}  // namespace

std::uint32_t kv_layout::local_heads() const noexcept {
  return tp_size == 0 ? 0 : total_heads / tp_size;
}

head_span kv_layout::head_range() const noexcept {
  if (tp_size == 0 || tp_rank >= tp_size) return {};
  // tp_rank * local_heads rather than tp_rank * total_heads / tp_size: equal when check()
  // passed, and it cannot overflow 32 bits.
  const std::uint32_t n = local_heads();
  return head_span{tp_rank * n, tp_rank * n + n};
}

std::uint64_t kv_layout::head_bytes() const noexcept {
  return std::uint64_t{tokens_per_block} * head_dim * element_bytes;
}

std::uint64_t kv_layout::block_bytes() const noexcept {
  return std::uint64_t{kv} * local_heads() * head_bytes();
}

std::optional<std::string> check(const kv_layout& l) {
  const std::pair<const char*, std::uint32_t> fields[] = {
      {"layers", l.layers},       {"kv", l.kv},
      {"total_heads", l.total_heads}, {"tokens_per_block", l.tokens_per_block},
      {"head_dim", l.head_dim},   {"element_bytes", l.element_bytes},
      {"tp_size", l.tp_size}};
  for (const auto& [name, value] : fields) {
    if (value == 0) return std::string(name) + " is 0";
  }
  if (l.kv > 2) {
    return "kv is " + std::to_string(l.kv) + " (must be 2 for K and V, or 1 for one tensor)";
  }
  if (l.total_heads % l.tp_size != 0) {
    return "total_heads " + std::to_string(l.total_heads) + " is not divisible by tp_size " +
           std::to_string(l.tp_size);
  }
  if (l.tp_rank >= l.tp_size) {
    return "tp_rank " + std::to_string(l.tp_rank) + " is out of range for tp_size " +
           std::to_string(l.tp_size);
  }
  // Every factor is below 2^32, so the first product fits; check the rest.
  std::optional<std::uint64_t> bytes = std::uint64_t{l.kv} * l.local_heads();
  for (std::uint64_t f : {std::uint64_t{l.tokens_per_block}, std::uint64_t{l.head_dim},
                          std::uint64_t{l.element_bytes}}) {
    bytes = checked_mul(*bytes, f);
    if (!bytes) break;
  }
  if (!bytes) {
    return "block size " + std::to_string(l.kv) + " x " + std::to_string(l.local_heads()) +
           " heads x " + std::to_string(l.tokens_per_block) + " tokens x " +
           std::to_string(l.head_dim) + " x " + std::to_string(l.element_bytes) +
           " bytes does not fit in 64 bits";
  }
  return std::nullopt;
}

bool compatible(const kv_layout& a, const kv_layout& b, std::string* why) {
  const std::tuple<const char*, std::uint32_t, std::uint32_t> fields[] = {
      {"layers", a.layers, b.layers},
      {"kv", a.kv, b.kv},
      {"total_heads", a.total_heads, b.total_heads},
      {"tokens_per_block", a.tokens_per_block, b.tokens_per_block},
      {"head_dim", a.head_dim, b.head_dim},
      {"element_bytes", a.element_bytes, b.element_bytes}};
  for (const auto& [name, x, y] : fields) {
    if (x != y) {
      if (why != nullptr) {
        *why = std::string(name) + " differs: " + std::to_string(x) + " vs " + std::to_string(y);
      }
      return false;
    }
  }
  return true;
}

std::vector<copy_run> plan_conversion(const kv_layout& src, const kv_layout& dst) {
  require_pair(src, dst, "plan_conversion");
  return plan_unchecked(src, dst);
}

std::vector<std::uint32_t> source_ranks(const kv_layout& src, const kv_layout& dst) {
  kv_layout s = src;
  s.tp_rank = 0;  // ignored: any rank in range makes the pair checkable
  require_pair(s, dst, "source_ranks");
  const head_span d = dst.head_range();
  const std::uint32_t n = s.local_heads();
  std::vector<std::uint32_t> ranks;
  for (std::uint32_t r = d.begin / n; r < s.tp_size && r * n < d.end; ++r) ranks.push_back(r);
  return ranks;
}

std::optional<std::string> check_blocks(const kv_layout& src, const kv_layout& dst,
                                        const std::vector<const void*>& src_blocks,
                                        const std::vector<void*>& dst_blocks) {
  if (auto p = check_pair(src, dst)) return p;
  if (src_blocks.size() != dst_blocks.size()) {
    return std::to_string(src_blocks.size()) + " source blocks for " +
           std::to_string(dst_blocks.size()) + " destination blocks";
  }
  std::vector<extent> all;
  all.reserve(src_blocks.size() * 2);
  if (auto p = add_extents(src_blocks, src.block_bytes(), false, src.tp_rank, false, &all)) {
    return p;
  }
  if (auto p = add_extents(dst_blocks, dst.block_bytes(), true, 0, false, &all)) return p;
  return find_overlap(std::move(all), false);
}

void convert_blocks_cpu(const kv_layout& src, const kv_layout& dst,
                        const std::vector<const void*>& src_blocks,
                        const std::vector<void*>& dst_blocks) {
  if (auto p = check_blocks(src, dst, src_blocks, dst_blocks)) {
    throw std::invalid_argument("convert_blocks_cpu: " + *p);
  }
  apply(plan_unchecked(src, dst), src_blocks, dst_blocks);
}

void assemble_rank_cpu(const kv_layout& src, const kv_layout& dst,
                       const std::vector<std::vector<const void*>>& src_blocks_by_rank,
                       const std::vector<void*>& dst_blocks) {
  const auto fail = [](const std::string& what) {
    throw std::invalid_argument("assemble_rank_cpu: " + what);
  };
  const std::vector<std::uint32_t> ranks = source_ranks(src, dst);  // checks the layouts
  if (src_blocks_by_rank.size() != src.tp_size) {
    fail(std::to_string(src_blocks_by_rank.size()) + " source ranks given for tp_size " +
         std::to_string(src.tp_size));
  }
  // Validate everything, across all ranks, before the first byte is written.
  std::vector<extent> all;
  for (std::uint32_t r : ranks) {
    const auto& blocks = src_blocks_by_rank[r];
    if (blocks.size() != dst_blocks.size()) {
      fail("source rank " + std::to_string(r) + " has " + std::to_string(blocks.size()) +
           " blocks for " + std::to_string(dst_blocks.size()) + " destination blocks");
    }
    kv_layout s = src;
    s.tp_rank = r;
    if (auto p = add_extents(blocks, s.block_bytes(), false, r, true, &all)) fail(*p);
  }
  if (auto p = add_extents(dst_blocks, dst.block_bytes(), true, 0, true, &all)) fail(*p);
  if (auto p = find_overlap(std::move(all), true)) fail(*p);

  for (std::uint32_t r : ranks) {
    kv_layout s = src;
    s.tp_rank = r;
    apply(plan_unchecked(s, dst), src_blocks_by_rank[r], dst_blocks);
  }
}

std::vector<region_span> head_spans(const kv_layout& src,
                                    const std::vector<std::uint64_t>& block_offsets) {
  if (auto p = check(src)) throw std::invalid_argument("head_spans: " + *p);
  const std::uint64_t head = src.head_bytes();
  const std::uint64_t per_block = std::uint64_t{src.kv} * src.local_heads();
  std::vector<region_span> out;
  out.reserve(block_offsets.size() * per_block);
  for (std::uint64_t base : block_offsets) {
    for (std::uint64_t j = 0; j < per_block; ++j) out.push_back({base + j * head, head});
  }
  return out;
}

tp_fetch plan_tp_fetch(const kv_layout& src, const kv_layout& dst,
                       const std::vector<std::uint64_t>& dst_block_offsets) {
  require_pair(src, dst, "plan_tp_fetch");
  tp_fetch out;
  const head_span s = src.head_range();
  const head_span d = dst.head_range();
  const std::uint32_t begin = std::max(s.begin, d.begin);
  const std::uint32_t end = std::min(s.end, d.end);
  if (begin >= end) return out;
  const std::uint64_t head = src.head_bytes();
  const std::uint32_t src_heads = src.local_heads();
  const std::uint32_t dst_heads = dst.local_heads();
  for (std::size_t i = 0; i < dst_block_offsets.size(); ++i) {
    for (std::uint32_t k = 0; k < src.kv; ++k) {
      const auto first = static_cast<std::uint32_t>((i * src.kv + k) * src_heads + (begin - s.begin));
      const std::uint32_t count = end - begin;
      if (!out.ranges.empty() && out.ranges.back().first + out.ranges.back().second == first)
        out.ranges.back().second += count;  // adjacent: one range
      else
        out.ranges.emplace_back(first, count);
      for (std::uint32_t h = begin; h < end; ++h) {
        out.destinations.push_back(
          {dst_block_offsets[i] + (std::uint64_t{k} * dst_heads + (h - d.begin)) * head, head});
      }
    }
  }
  return out;
}

}  // namespace kvferry::gpu
