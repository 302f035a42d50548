// The KV layout, the TP conversion plan and its CPU reference (gpu/kv_layout.hpp).
//
// The plan tests compare with runs worked out by hand. The reference tests do not reuse any of
// the implementation's arithmetic: a source block is filled by walking its elements in layout
// order ([kv][local head][token][dim][byte], a running offset), each byte a function of the
// element's *global* coordinates; the expected destination is built the same way from the
// destination's own head numbers. So a wrong offset, a wrong head range or a missing/extra
// write all show as a byte that differs.
#include "core/descriptor.hpp"
#include "gpu/kv_layout.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace {

using kvferry::gpu::copy_run;
using kvferry::gpu::kv_layout;

constexpr std::uint8_t untouched = 0xEE;  // destinations start as this; patterns never produce it

struct shape {
  std::uint32_t heads = 0;
  std::uint32_t tokens = 0;
  std::uint32_t dim = 0;
  std::uint32_t element_bytes = 0;
};

kv_layout make(shape s, std::uint32_t tp_size, std::uint32_t tp_rank) {
  kv_layout l;
  l.layers = 2;
  l.kv = 2;
  l.total_heads = s.heads;
  l.tokens_per_block = s.tokens;
  l.head_dim = s.dim;
  l.element_bytes = s.element_bytes;
  l.tp_size = tp_size;
  l.tp_rank = tp_rank;
  return l;
}

// The test's own head ownership, straight from the definition.
std::uint32_t first_head(std::uint32_t heads, std::uint32_t tp, std::uint32_t rank) {
  return rank * heads / tp;
}
bool owns(std::uint32_t heads, std::uint32_t tp, std::uint32_t rank, std::uint32_t g) {
  return first_head(heads, tp, rank) <= g && g < first_head(heads, tp, rank + 1);
}

// Byte `e` of element (kv plane k, global head g, token t, dim d) of block n: a hash, never 0xEE.
std::uint8_t pattern(std::uint32_t n, std::uint32_t k, std::uint32_t g, std::uint32_t t,
                     std::uint32_t d, std::uint32_t e) {
  std::uint64_t x = n;
  for (std::uint64_t v : {std::uint64_t{k}, std::uint64_t{g}, std::uint64_t{t}, std::uint64_t{d},
                          std::uint64_t{e}}) {
    x = x * 1000003u + v + 1;
  }
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  const auto b = static_cast<std::uint8_t>(x);
  return b == untouched ? 0x5A : b;
}

// `count` blocks of `block` bytes in one buffer, with `gap` guard bytes before, between and after
// them, all starting as `fill`.
struct pool {
  pool(std::size_t count, std::size_t block, std::uint8_t fill, std::size_t gap = 32)
      : count(count), block(block), gap(gap), bytes(gap + count * (block + gap), fill) {}
  std::uint8_t* at(std::size_t i) { return bytes.data() + gap + i * (block + gap); }
  const std::uint8_t* at(std::size_t i) const { return bytes.data() + gap + i * (block + gap); }
  std::vector<const void*> sources() const {
    std::vector<const void*> out;
    for (std::size_t i = 0; i < count; ++i) out.push_back(at(i));
    return out;
  }
  std::vector<void*> destinations() {
    std::vector<void*> out;
    for (std::size_t i = 0; i < count; ++i) out.push_back(at(i));
    return out;
  }
  std::size_t count;
  std::size_t block;
  std::size_t gap;
  std::vector<std::uint8_t> bytes;
};

// The block size of rank layout `l`, computed by the test.
std::size_t block_size(shape s, std::uint32_t tp) {
  return std::size_t{2} * (s.heads / tp) * s.tokens * s.dim * s.element_bytes;
}

// Visits every byte of every block of rank (tp, rank) in layout order with its coordinates.
template <typename F>
void walk(shape s, std::uint32_t tp, std::uint32_t rank, std::size_t blocks, F&& f) {
  const std::uint32_t g0 = first_head(s.heads, tp, rank);
  for (std::size_t n = 0; n < blocks; ++n) {
    std::size_t off = 0;
    for (std::uint32_t k = 0; k < 2; ++k) {
      for (std::uint32_t h = 0; h < s.heads / tp; ++h) {
        for (std::uint32_t t = 0; t < s.tokens; ++t) {
          for (std::uint32_t d = 0; d < s.dim; ++d) {
            for (std::uint32_t e = 0; e < s.element_bytes; ++e) {
              f(n, off++, static_cast<std::uint32_t>(n), k, g0 + h, t, d, e);
            }
          }
        }
      }
    }
  }
}

pool source_pool(shape s, std::uint32_t tp, std::uint32_t rank, std::size_t blocks) {
  pool p(blocks, block_size(s, tp), 0x00);
  walk(s, tp, rank, blocks,
       [&](std::size_t n, std::size_t off, std::uint32_t bn, std::uint32_t k, std::uint32_t g,
           std::uint32_t t, std::uint32_t d, std::uint32_t e) {
         p.at(n)[off] = pattern(bn, k, g, t, d, e);
       });
  return p;
}

// Compares destination pool `p` of rank (tp, rank) with what it must hold when exactly the heads
// for which `provided(g)` is true were copied in: those bytes from the pattern, every other
// byte (including the guard gaps) still 0xEE. Returns the first difference, or "" if none.
template <typename Provided>
std::string compare(const pool& p, shape s, std::uint32_t tp, std::uint32_t rank,
                    Provided&& provided) {
  std::string first;
  std::size_t wrong = 0;
  walk(s, tp, rank, p.count,
       [&](std::size_t n, std::size_t off, std::uint32_t bn, std::uint32_t k, std::uint32_t g,
           std::uint32_t t, std::uint32_t d, std::uint32_t e) {
         const std::uint8_t want = provided(g) ? pattern(bn, k, g, t, d, e) : untouched;
         const std::uint8_t got = p.at(n)[off];
         if (got == want) return;
         if (wrong++ == 0) {
           first = "block " + std::to_string(n) + " kv " + std::to_string(k) + " head " +
                   std::to_string(g) + " token " + std::to_string(t) + " dim " +
                   std::to_string(d) + " byte " + std::to_string(e) + ": got " +
                   std::to_string(got) + ", want " + std::to_string(want);
         }
       });
  for (std::size_t i = 0; i < p.count + 1; ++i) {
    const std::uint8_t* gap = p.bytes.data() + i * (p.block + p.gap);
    for (std::size_t b = 0; b < p.gap; ++b) {
      if (gap[b] != untouched && wrong++ == 0) {
        first = "guard gap " + std::to_string(i) + " byte " + std::to_string(b) + " written";
      }
    }
  }
  if (wrong == 0) return "";
  return std::to_string(wrong) + " wrong bytes; first: " + first;
}

// Every TP size that divides 24 heads: splits, merges, identity and non-multiples (4 <-> 6, 3 <->
// 8) all appear among the pairs.
const std::vector<std::uint32_t> tp_sizes_of_24 = {1, 2, 3, 4, 6, 8, 12, 24};

}  // namespace

TEST_CASE("a kv layout that passes check has the head range and sizes of its definition") {
  const kv_layout l = make({12, 16, 128, 2}, 3, 2);
  REQUIRE_FALSE(kvferry::gpu::check(l).has_value());
  CHECK(l.local_heads() == 4);
  CHECK(l.head_range().begin == 8);
  CHECK(l.head_range().end == 12);
  CHECK(l.head_bytes() == 16 * 128 * 2);
  CHECK(l.block_bytes() == 2 * 4 * 16 * 128 * 2);
  // The largest block that fits in 64 bits is accepted; one element byte more is not.
  kv_layout big = make({1, 0xFFFFFFFFu, 0xFFFFFFFFu, 1}, 1, 0);
  big.kv = 1;
  REQUIRE_FALSE(kvferry::gpu::check(big).has_value());
  CHECK(big.block_bytes() == 0xFFFFFFFE00000001ULL);
}

TEST_CASE("a kv layout check names its problem") {
  const kv_layout good = make({12, 16, 128, 2}, 4, 3);
  REQUIRE_FALSE(kvferry::gpu::check(good).has_value());
  const auto problem = [](kv_layout l) { return kvferry::gpu::check(l).value_or("(none)"); };
  // Each field at 0, alone: named.
  const std::pair<std::uint32_t kv_layout::*, const char*> fields[] = {
    {&kv_layout::layers, "layers"},           {&kv_layout::kv, "kv"},
    {&kv_layout::total_heads, "total_heads"}, {&kv_layout::tokens_per_block, "tokens_per_block"},
    {&kv_layout::head_dim, "head_dim"},       {&kv_layout::element_bytes, "element_bytes"},
    {&kv_layout::tp_size, "tp_size"}};
  for (const auto& [field, name] : fields) {
    kv_layout zero = good;
    zero.*field = 0;
    CHECK(problem(zero) == std::string(name) + " is 0");
  }
  kv_layout l = good;
  l.kv = 3;
  CHECK(problem(l) == "kv is 3 (must be 2 for K and V, or 1 for one tensor)");
  l = good;
  l.tp_size = 5;
  l.tp_rank = 0;
  CHECK(problem(l) == "total_heads 12 is not divisible by tp_size 5");
  l = good;
  l.tp_size = 24;  // more ranks than KV heads (replicated heads) is not this layout
  l.tp_rank = 0;
  CHECK(problem(l) == "total_heads 12 is not divisible by tp_size 24");
  l = good;
  l.tp_rank = 4;
  CHECK(problem(l) == "tp_rank 4 is out of range for tp_size 4");
  kv_layout big = make({1, 0xFFFFFFFFu, 0xFFFFFFFFu, 2}, 1, 0);
  big.kv = 1;
  CHECK(problem(big) == "block size 1 x 1 heads x 4294967295 tokens x 4294967295 x 2 bytes does "
                        "not fit in 64 bits");
}

TEST_CASE("layouts are compatible when only tp_size and tp_rank differ, and the first other "
          "difference is named") {
  const kv_layout a = make({8, 16, 128, 2}, 2, 1);
  const kv_layout b = make({8, 16, 128, 2}, 8, 5);
  std::string why = "unchanged";
  CHECK(kvferry::gpu::compatible(a, b, &why));
  CHECK(why == "unchanged");
  CHECK(kvferry::gpu::compatible(a, b));  // `why` is optional
  // One field changed at a time: refused, naming it with both values.
  const std::tuple<std::uint32_t kv_layout::*, std::uint32_t, const char*> changes[] = {
    {&kv_layout::head_dim, 64, "head_dim differs: 128 vs 64"},
    {&kv_layout::layers, 3, "layers differs: 2 vs 3"},
    {&kv_layout::element_bytes, 1, "element_bytes differs: 2 vs 1"},
    {&kv_layout::total_heads, 16, "total_heads differs: 8 vs 16"},
    {&kv_layout::tokens_per_block, 32, "tokens_per_block differs: 16 vs 32"},
    {&kv_layout::kv, 1, "kv differs: 2 vs 1"}};
  for (const auto& [field, value, expected] : changes) {
    kv_layout c = b;
    c.*field = value;
    CHECK_FALSE(kvferry::gpu::compatible(a, c, &why));
    CHECK(why == expected);
    CHECK_FALSE(kvferry::gpu::compatible(a, c));
  }
}

// 8 heads of 4 tokens x 8 dims x 2 bytes: one head is 64 bytes. Runs worked out by hand.
TEST_CASE("layout conversion plans: split, merge, identity, 1 <-> 8 and disjoint ranks") {
  const shape s{8, 4, 8, 2};
  using runs = std::vector<copy_run>;
  const auto plan = [&](std::uint32_t a, std::uint32_t i, std::uint32_t b, std::uint32_t j) {
    return kvferry::gpu::plan_conversion(make(s, a, i), make(s, b, j));
  };

  SUBCASE("TP 2 -> 4 splits: source rank 0 has heads 0-3, destination rank 1 wants 2-3") {
    CHECK(plan(2, 0, 4, 1) == runs{{128, 0, 128}, {384, 128, 128}});
    CHECK(plan(2, 0, 4, 0) == runs{{0, 0, 128}, {256, 128, 128}});
    CHECK(plan(2, 1, 4, 3) == runs{{128, 0, 128}, {384, 128, 128}});
  }
  SUBCASE("TP 4 -> 2 merges: source rank 1 has heads 2-3, destination rank 0 has 0-3") {
    CHECK(plan(4, 1, 2, 0) == runs{{0, 128, 128}, {128, 384, 128}});
    CHECK(plan(4, 2, 2, 1) == runs{{0, 0, 128}, {128, 256, 128}});
  }
  SUBCASE("TP 2 -> 2 is one run of the whole 512-byte block, or nothing across ranks") {
    CHECK(plan(2, 0, 2, 0) == runs{{0, 0, 512}});
    CHECK(plan(2, 1, 2, 1) == runs{{0, 0, 512}});
    CHECK(plan(2, 0, 2, 1).empty());
  }
  SUBCASE("TP 1 -> 8: destination rank 5 takes head 5 of K and of V") {
    CHECK(plan(1, 0, 8, 5) == runs{{320, 0, 64}, {832, 64, 64}});
    CHECK(plan(1, 0, 1, 0) == runs{{0, 0, 1024}});
  }
  SUBCASE("TP 8 -> 1: source rank 5's head lands at head 5 of K and of V") {
    CHECK(plan(8, 5, 1, 0) == runs{{0, 320, 64}, {64, 832, 64}});
  }
  SUBCASE("ranks that share no heads have an empty plan") {
    CHECK(plan(4, 0, 2, 1).empty());  // heads 0-1 vs 4-7
    CHECK(plan(2, 1, 4, 0).empty());  // heads 4-7 vs 0-1
    CHECK(plan(8, 7, 8, 0).empty());
    CHECK(plan(1, 0, 8, 7) == runs{{448, 0, 64}, {960, 64, 64}});  // never empty from TP 1
  }
}

TEST_CASE("layout conversion plans for TP 3 -> 6 and 6 -> 3 with 12 heads, and 2 -> 3") {
  // One head: 2 tokens x 4 dims x 2 bytes = 16 bytes; TP 3 ranks hold 4 heads, TP 6 ranks 2.
  const shape s{12, 2, 4, 2};
  using runs = std::vector<copy_run>;
  const auto plan = [&](std::uint32_t a, std::uint32_t i, std::uint32_t b, std::uint32_t j) {
    return kvferry::gpu::plan_conversion(make(s, a, i), make(s, b, j));
  };
  CHECK(plan(3, 1, 6, 2) == runs{{0, 0, 32}, {64, 32, 32}});   // heads 4-5 of 4-7
  CHECK(plan(3, 1, 6, 3) == runs{{32, 0, 32}, {96, 32, 32}});  // heads 6-7 of 4-7
  CHECK(plan(3, 1, 6, 4).empty());                             // heads 8-9: rank 2's
  CHECK(plan(3, 2, 6, 4) == runs{{0, 0, 32}, {64, 32, 32}});
  CHECK(plan(6, 3, 3, 1) == runs{{0, 32, 32}, {32, 96, 32}});  // merge back
  CHECK(plan(6, 0, 3, 1).empty());

  // TP 2 -> 3 with 6 heads: neither divides the other, so a destination rank straddles two
  // source ranks. Source ranks hold heads 0-2 / 3-5; destination rank 1 holds 2-3.
  const shape t{6, 2, 4, 2};
  const auto plan_t = [&](std::uint32_t a, std::uint32_t i, std::uint32_t b, std::uint32_t j) {
    return kvferry::gpu::plan_conversion(make(t, a, i), make(t, b, j));
  };
  CHECK(plan_t(2, 0, 3, 1) == runs{{32, 0, 16}, {80, 32, 16}});  // head 2
  CHECK(plan_t(2, 1, 3, 1) == runs{{0, 16, 16}, {48, 48, 16}});  // head 3
  CHECK(kvferry::gpu::source_ranks(make(t, 2, 0), make(t, 3, 1)) ==
        std::vector<std::uint32_t>{0, 1});
  CHECK(kvferry::gpu::source_ranks(make(t, 2, 1), make(t, 3, 0)) ==
        std::vector<std::uint32_t>{0});  // the source's tp_rank does not matter
  CHECK(kvferry::gpu::source_ranks(make(s, 6, 0), make(s, 3, 2)) ==
        std::vector<std::uint32_t>{4, 5});
}

TEST_CASE("layout conversion plans over every TP pair of 24 heads are maximal and move exactly "
          "the shared heads") {
  const shape s{24, 2, 3, 2};
  const std::uint64_t head = 2 * 3 * 2;
  for (std::uint32_t a : tp_sizes_of_24) {
    for (std::uint32_t b : tp_sizes_of_24) {
      for (std::uint32_t j = 0; j < b; ++j) {
        std::vector<std::uint32_t> want_ranks;
        for (std::uint32_t i = 0; i < a; ++i) {
          CAPTURE(a);
          CAPTURE(i);
          CAPTURE(b);
          CAPTURE(j);
          std::uint64_t shared = 0;
          for (std::uint32_t g = 0; g < 24; ++g) shared += owns(24, a, i, g) && owns(24, b, j, g);
          if (shared != 0) want_ranks.push_back(i);
          const auto runs = kvferry::gpu::plan_conversion(make(s, a, i), make(s, b, j));
          std::uint64_t moved = 0;
          for (const auto& r : runs) moved += r.bytes;
          CHECK(moved == 2 * shared * head);
          // Two runs (K, V) unless nothing is shared, or both ranks hold the same heads.
          const bool same = a == b && i == j;
          CHECK(runs.size() == (shared == 0 ? 0u : same ? 1u : 2u));
          for (std::size_t r = 1; r < runs.size(); ++r) {
            const auto& p = runs[r - 1];
            CHECK(p.src_offset + p.bytes <= runs[r].src_offset);  // ordered, disjoint
            CHECK(p.dst_offset + p.bytes <= runs[r].dst_offset);
            const bool adjacent_both = p.src_offset + p.bytes == runs[r].src_offset &&
                                       p.dst_offset + p.bytes == runs[r].dst_offset;
            CHECK_FALSE(adjacent_both);
          }
        }
        CHECK(kvferry::gpu::source_ranks(make(s, a, 0), make(s, b, j)) == want_ranks);
      }
    }
  }
}

TEST_CASE("layout conversion refuses invalid or incompatible layouts, naming the problem") {
  const shape s{8, 4, 8, 2};
  kv_layout bad = make(s, 2, 2);
  CHECK_THROWS_WITH_AS(kvferry::gpu::plan_conversion(bad, make(s, 4, 0)),
                       "plan_conversion: source layout: tp_rank 2 is out of range for tp_size 2",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(kvferry::gpu::plan_conversion(make(s, 4, 0), make(s, 3, 0)),
                       "plan_conversion: destination layout: total_heads 8 is not divisible by "
                       "tp_size 3",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(kvferry::gpu::plan_conversion(make(s, 2, 0), make({8, 4, 16, 2}, 4, 0)),
                       "plan_conversion: layouts are not compatible: head_dim differs: 8 vs 16",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(kvferry::gpu::source_ranks(make(s, 2, 0), make({8, 8, 8, 2}, 4, 0)),
                       "source_ranks: layouts are not compatible: tokens_per_block differs: "
                       "4 vs 8",
                       std::invalid_argument);
}

// Calls f(s, a, b, sources) for every TP pair (a, b) of 24 heads, `sources[i]` holding prefill
// rank i's `pair_blocks` blocks of TP a.
constexpr std::size_t pair_blocks = 3;
template <class F>
void for_every_tp_pair_of_24(F&& f) {
  const shape s{24, 2, 3, 2};
  for (std::uint32_t a : tp_sizes_of_24) {
    std::vector<pool> sources;
    for (std::uint32_t i = 0; i < a; ++i) sources.push_back(source_pool(s, a, i, pair_blocks));
    for (std::uint32_t b : tp_sizes_of_24) f(s, a, b, sources);
  }
}

TEST_CASE("the CPU layout conversion writes exactly the shared heads, for every TP pair of 24 "
          "heads") {
  const std::size_t blocks = pair_blocks;
  for_every_tp_pair_of_24([&](const shape& s, std::uint32_t a, std::uint32_t b,
                              std::vector<pool>& sources) {
      for (std::uint32_t i = 0; i < a; ++i) {
        for (std::uint32_t j = 0; j < b; ++j) {
          pool dst(blocks, block_size(s, b), untouched);
          kvferry::gpu::convert_blocks_cpu(make(s, a, i), make(s, b, j), sources[i].sources(),
                                           dst.destinations());
          const std::string diff = compare(dst, s, b, j, [&](std::uint32_t g) {
            return owns(24, a, i, g);
          });
          CAPTURE(a);
          CAPTURE(i);
          CAPTURE(b);
          CAPTURE(j);
          CHECK(diff == "");
        }
      }
  });
}

// Every byte of decode rank j's blocks in `dst` is what the reference says (none untouched).
void check_whole_rank(const pool& dst, const shape& s, std::uint32_t b, std::uint32_t j) {
  CHECK(compare(dst, s, b, j, [](std::uint32_t) { return true; }) == "");
  std::size_t uncovered = 0;
  for (std::size_t n = 0; n < dst.count; ++n) {
    for (std::size_t o = 0; o < dst.block; ++o) uncovered += dst.at(n)[o] == untouched;
  }
  CHECK(uncovered == 0);
}

// Calls f(s, a, b, j, sources) for every decode rank j of every TP pair (a, b) of 24 heads.
template <class F>
void for_every_decode_rank_of_24(F&& f) {
  for_every_tp_pair_of_24([&](const shape& s, std::uint32_t a, std::uint32_t b,
                              std::vector<pool>& sources) {
    for (std::uint32_t j = 0; j < b; ++j) {
      CAPTURE(a);
      CAPTURE(b);
      CAPTURE(j);
      f(s, a, b, j, sources);
    }
  });
}

TEST_CASE("a whole decode rank assembled from every prefill rank it needs covers every byte, for "
          "every TP pair of 24 heads") {
  const std::size_t blocks = pair_blocks;
  for_every_decode_rank_of_24([&](const shape& s, std::uint32_t a, std::uint32_t b,
                                  std::uint32_t j, std::vector<pool>& sources) {
      // Only the ranks the test itself finds sharing heads are given blocks: a rank the
      // implementation wrongly needs makes it throw, one it wrongly skips leaves 0xEE.
      std::vector<std::vector<const void*>> by_rank(a);
      for (std::uint32_t i = 0; i < a; ++i) {
        for (std::uint32_t g = 0; g < 24; ++g) {
          if (owns(24, a, i, g) && owns(24, b, j, g)) {
            by_rank[i] = sources[i].sources();
            break;
          }
        }
      }
      pool dst(blocks, block_size(s, b), untouched);
      kvferry::gpu::assemble_rank_cpu(make(s, a, 0), make(s, b, j), by_rank,
                                      dst.destinations());
      check_whole_rank(dst, s, b, j);
  });
}

TEST_CASE("the CPU layout conversion is exact for odd and realistic element shapes") {
  // Odd sizes (15-byte heads, 1-byte elements) and a real one (16 tokens x 128 dims x bf16).
  for (const shape s : {shape{12, 3, 5, 1}, shape{8, 16, 128, 2}, shape{6, 1, 1, 4}}) {
    for (const auto& [a, b] : {std::pair<std::uint32_t, std::uint32_t>{2, 4},
                               {4, 2},
                               {2, 2},
                               {1, 2},
                               {2, 1},
                               {2, 3},
                               {3, 2}}) {
      if (s.heads % a != 0 || s.heads % b != 0) continue;  // e.g. TP 4 of 6 heads, TP 3 of 8
      std::vector<pool> sources;
      std::vector<std::vector<const void*>> by_rank;
      for (std::uint32_t i = 0; i < a; ++i) {
        sources.push_back(source_pool(s, a, i, 5));
        by_rank.push_back(sources.back().sources());
      }
      for (std::uint32_t j = 0; j < b; ++j) {
        CAPTURE(s.heads);
        CAPTURE(s.element_bytes);
        CAPTURE(a);
        CAPTURE(b);
        CAPTURE(j);
        pool whole(5, block_size(s, b), untouched);
        kvferry::gpu::assemble_rank_cpu(make(s, a, 1 % a), make(s, b, j), by_rank,
                                        whole.destinations());
        CHECK(compare(whole, s, b, j, [](std::uint32_t) { return true; }) == "");
        pool part(5, block_size(s, b), untouched);
        kvferry::gpu::convert_blocks_cpu(make(s, a, a - 1), make(s, b, j),
                                         sources[a - 1].sources(), part.destinations());
        CHECK(compare(part, s, b, j, [&](std::uint32_t g) {
                return owns(s.heads, a, a - 1, g);
              }) == "");
      }
    }
  }
}

TEST_CASE("the CPU layout conversion refuses bad block lists by name before writing anything") {
  const shape s{8, 4, 8, 2};  // TP 2 blocks: 512 bytes; TP 4 blocks: 256 bytes
  const kv_layout src = make(s, 2, 0);
  const kv_layout dst = make(s, 4, 1);
  pool in = source_pool(s, 2, 0, 3);
  pool out(3, 256, untouched);
  const std::vector<std::uint8_t> before = out.bytes;
  auto srcs = in.sources();
  auto dsts = out.destinations();

  SUBCASE("counts differ") {
    srcs.pop_back();
    CHECK(kvferry::gpu::check_blocks(src, dst, srcs, dsts) ==
          std::optional<std::string>("2 source blocks for 3 destination blocks"));
    CHECK_THROWS_WITH_AS(kvferry::gpu::convert_blocks_cpu(src, dst, srcs, dsts),
                         "convert_blocks_cpu: 2 source blocks for 3 destination blocks",
                         std::invalid_argument);
  }
  SUBCASE("a null pointer") {
    dsts[1] = nullptr;
    CHECK_THROWS_WITH_AS(kvferry::gpu::convert_blocks_cpu(src, dst, srcs, dsts),
                         "convert_blocks_cpu: destination block 1 is null", std::invalid_argument);
    dsts = out.destinations();
    srcs[2] = nullptr;
    CHECK_THROWS_WITH_AS(kvferry::gpu::convert_blocks_cpu(src, dst, srcs, dsts),
                         "convert_blocks_cpu: source block 2 is null", std::invalid_argument);
  }
  SUBCASE("a destination overlapping a source") {
    // Destination block 2 starts at the last byte of source block 1 (512 bytes long).
    dsts[2] = const_cast<std::uint8_t*>(in.at(1)) + 511;
    CHECK_THROWS_WITH_AS(kvferry::gpu::convert_blocks_cpu(src, dst, srcs, dsts),
                         "convert_blocks_cpu: destination block 2 overlaps source block 1",
                         std::invalid_argument);
  }
  SUBCASE("two destinations overlapping") {
    dsts[0] = out.at(1) + 255;  // destination blocks are 256 bytes
    CHECK_THROWS_WITH_AS(kvferry::gpu::convert_blocks_cpu(src, dst, srcs, dsts),
                         "convert_blocks_cpu: destination block 0 overlaps destination block 1",
                         std::invalid_argument);
  }
  SUBCASE("invalid or incompatible layouts") {
    kv_layout other = dst;
    other.element_bytes = 4;
    CHECK_THROWS_WITH_AS(kvferry::gpu::convert_blocks_cpu(src, other, srcs, dsts),
                         "convert_blocks_cpu: layouts are not compatible: element_bytes "
                         "differs: 2 vs 4",
                         std::invalid_argument);
    other = dst;
    other.tp_rank = 4;
    CHECK_THROWS_WITH_AS(kvferry::gpu::convert_blocks_cpu(src, other, srcs, dsts),
                         "convert_blocks_cpu: destination layout: tp_rank 4 is out of range for "
                         "tp_size 4",
                         std::invalid_argument);
  }
  CHECK(out.bytes == before);  // every refusal came before the first byte
}

TEST_CASE("the CPU layout conversion accepts touching blocks and shared sources, and refuses "
          "a whole-rank assembly by rank and block") {
  const shape s{8, 4, 8, 2};
  const kv_layout src = make(s, 2, 0);
  const kv_layout dst = make(s, 4, 1);
  // One buffer: source block (512 bytes), then two destination blocks (256 each) right after it,
  // touching but not overlapping. Both destinations read the same source block.
  std::vector<std::uint8_t> buf(512 + 2 * 256, untouched);
  pool in = source_pool(s, 2, 0, 1);
  std::memcpy(buf.data(), in.at(0), 512);
  const std::vector<const void*> srcs{buf.data(), buf.data()};
  const std::vector<void*> dsts{buf.data() + 512, buf.data() + 768};
  CHECK_FALSE(kvferry::gpu::check_blocks(src, dst, srcs, dsts).has_value());
  kvferry::gpu::convert_blocks_cpu(src, dst, srcs, dsts);
  for (std::size_t n = 0; n < 2; ++n) {
    CHECK(std::memcmp(buf.data() + 512 + n * 256, buf.data() + 128, 128) == 0);  // K heads 2-3
    CHECK(std::memcmp(buf.data() + 512 + n * 256 + 128, buf.data() + 384, 128) == 0);  // V
  }

  // assemble_rank_cpu: TP 4 -> TP 2 rank 0 needs source ranks 0 and 1.
  const kv_layout four = make(s, 4, 0);
  const kv_layout two = make(s, 2, 0);
  pool r0 = source_pool(s, 4, 0, 2);
  pool r1 = source_pool(s, 4, 1, 2);
  pool out(2, 512, untouched);
  const std::vector<std::uint8_t> before = out.bytes;
  std::vector<std::vector<const void*>> by_rank{r0.sources(), r1.sources(), {}, {}};
  CHECK_THROWS_WITH_AS(
      kvferry::gpu::assemble_rank_cpu(four, two, {r0.sources(), r1.sources()},
                                      out.destinations()),
      "assemble_rank_cpu: 2 source ranks given for tp_size 4", std::invalid_argument);
  by_rank[1].pop_back();
  CHECK_THROWS_WITH_AS(kvferry::gpu::assemble_rank_cpu(four, two, by_rank, out.destinations()),
                       "assemble_rank_cpu: source rank 1 has 1 blocks for 2 destination blocks",
                       std::invalid_argument);
  by_rank[1] = {r1.at(0), out.at(1) + 100};
  CHECK_THROWS_WITH_AS(kvferry::gpu::assemble_rank_cpu(four, two, by_rank, out.destinations()),
                       "assemble_rank_cpu: destination block 1 overlaps source block 1 of "
                       "source rank 1",
                       std::invalid_argument);
  CHECK(out.bytes == before);
  by_rank[1] = r1.sources();
  kvferry::gpu::assemble_rank_cpu(four, two, by_rank, out.destinations());
  CHECK(compare(out, s, 2, 0, [](std::uint32_t) { return true; }) == "");
}

// Heterogeneous TP through a transfer: what a decode rank fetches of each prefill rank's
// per-head offer, copied span by span as the sender would put it.
TEST_CASE("TP through a transfer: a decode rank's fetch from a prefill rank's per-head offer, "
          "by hand for TP 2 -> 3") {
  // 6 heads of 16 bytes; source rank 0 holds heads 0-2, destination rank 1 heads 2-3.
  const shape t{6, 2, 4, 2};
  const auto offer = kvferry::gpu::head_spans(make(t, 2, 0), {0, 96});
  REQUIRE(offer.size() == 12);  // 2 blocks x (K, V) x 3 heads
  CHECK(offer[4].offset == 64);
  CHECK(offer[4].bytes == 16);
  CHECK(offer[6].offset == 96);
  const auto f = kvferry::gpu::plan_tp_fetch(make(t, 2, 0), make(t, 3, 1), {1000, 2000});
  using ranges = std::vector<std::pair<std::uint32_t, std::uint32_t>>;
  CHECK(f.ranges == ranges{{2, 1}, {5, 1}, {8, 1}, {11, 1}});  // head 2's K and V, per block
  REQUIRE(f.destinations.size() == 4);
  CHECK(f.destinations[0].offset == 1000);       // K of head 2: the rank's first head
  CHECK(f.destinations[1].offset == 1000 + 32);  // V of head 2: after the rank's two K heads
  CHECK(f.destinations[3].offset == 2000 + 32);
  // Ranks that share every head fetch each block whole, as one range.
  const auto whole = kvferry::gpu::plan_tp_fetch(make(t, 1, 0), make(t, 1, 0), {0, 192});
  CHECK(whole.ranges == ranges{{0, 24}});
  CHECK(kvferry::gpu::plan_tp_fetch(make(t, 3, 0), make(t, 3, 2), {0}).ranges.empty());
  CHECK_THROWS_AS(kvferry::gpu::plan_tp_fetch(make(t, 2, 0), make(t, 4, 0), {0}),
                  std::invalid_argument);  // 6 heads do not split 4 ways
}

TEST_CASE("TP through a transfer fills every decode rank exactly as the CPU reference does, for "
          "every TP pair of 24 heads") {
  const std::size_t blocks = pair_blocks;
  for_every_decode_rank_of_24([&](const shape& s, std::uint32_t a, std::uint32_t b,
                                  std::uint32_t j, std::vector<pool>& sources) {
    pool dst(blocks, block_size(s, b), untouched);
    std::vector<std::uint64_t> dst_offsets;
    for (void* d : dst.destinations()) dst_offsets.push_back(kvferry::addr_of(d));
    for (std::uint32_t i = 0; i < a; ++i) {
      std::vector<std::uint64_t> src_offsets;
      for (const void* p : sources[i].sources()) src_offsets.push_back(kvferry::addr_of(p));
      const auto offer = kvferry::gpu::head_spans(make(s, a, i), src_offsets);
      const auto f = kvferry::gpu::plan_tp_fetch(make(s, a, i), make(s, b, j), dst_offsets);
      std::size_t d = 0;
      for (const auto& [first, count] : f.ranges) {
        for (std::uint32_t n = first; n < first + count; ++n, ++d) {
          REQUIRE(d < f.destinations.size());
          REQUIRE(offer[n].bytes == f.destinations[d].bytes);
          std::memcpy(kvferry::ptr_of(f.destinations[d].offset),
                      kvferry::ptr_of(offer[n].offset), offer[n].bytes);
        }
      }
      CHECK(d == f.destinations.size());
    }
    check_whole_rank(dst, s, b, j);
  });
}
