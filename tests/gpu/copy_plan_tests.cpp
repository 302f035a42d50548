// The host-side planning of copies (gpu/copy_plan.hpp): what the CUDA engine decides before any
// CUDA call, checked here on machines without a GPU.
//
// The executed-plan test does not trust the planner's own reasoning: it runs random copies in a
// small byte arena (so segments collide often) once in submission order, memcpy after memcpy,
// and once as the engine would (an ordered plan in order; any other plan as its pieces in
// reverse order, since the kernel's thread blocks run in no particular order), and compares
// every byte of the arena.
#include "gpu/copy_plan.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

using kvferry::copy_op;
using kvferry::gpu::copy_method;
using kvferry::gpu::copy_piece;
using kvferry::gpu::launch_range;
using kvferry::gpu::pointer_info;
using kvferry::gpu::pointer_kind;
using kvferry::gpu::pointer_range;

copy_op seg(std::uint64_t dst, std::uint64_t src, std::uint64_t bytes) {
  return copy_op{src, {dst, bytes, 0}};
}

// The O(n^2) definition: some segment writes what another one reads or writes.
bool interfere_reference(const std::vector<copy_op>& s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    for (std::size_t j = 0; j < s.size(); ++j) {
      if (i == j || s[i].dst.bytes == 0 || s[j].dst.bytes == 0) continue;
      const std::uint64_t n = s[i].dst.bytes;
      const std::uint64_t m = s[j].dst.bytes;
      const std::uint64_t di = s[i].dst.addr;
      if (di < s[j].dst.addr + m && s[j].dst.addr < di + n) return true;
      if (di < s[j].src + m && s[j].src < di + n) return true;
    }
  }
  return false;
}

// Random segments inside [base, base + arena) that pass check_segments().
std::vector<copy_op> random_segments(std::mt19937& gen, std::uint64_t base, std::uint64_t arena,
                                     std::size_t count, std::uint64_t max_bytes) {
  std::vector<copy_op> out;
  while (out.size() < count) {
    const std::uint64_t bytes = gen() % (max_bytes + 1);
    const std::uint64_t src = base + gen() % (arena - bytes + 1);
    const std::uint64_t dst = base + gen() % (arena - bytes + 1);
    const copy_op s = seg(dst, src, bytes);
    if (kvferry::gpu::check_segments({s}).empty()) out.push_back(s);
  }
  return out;
}

}  // namespace

TEST_CASE("check_segments names the first null pointer or self-overlapping segment") {
  using kvferry::gpu::check_segments;
  CHECK(check_segments({}) == "");
  CHECK(check_segments({seg(0, 0, 0), seg(100, 200, 100)}) == "");  // empty, touching: fine
  CHECK(check_segments({seg(100, 200, 8), seg(0, 200, 8)}) == "segment 1: null dst with 8 bytes");
  CHECK(check_segments({seg(100, 0, 3)}) == "segment 0: null src with 3 bytes");
  CHECK(check_segments({seg(100, 104, 5), seg(0, 1, 1)}) ==
        "segment 0: source and destination overlap");
  // A range that would wrap past 2^64 still counts as overlapping.
  CHECK(check_segments({seg(~std::uint64_t{0} - 4, ~std::uint64_t{0} - 2, 16)}) ==
        "segment 0: source and destination overlap");
}

TEST_CASE("segments_interfere finds exactly the copies whose result depends on segment order") {
  using kvferry::gpu::segments_interfere;
  CHECK_FALSE(segments_interfere({}));
  CHECK_FALSE(segments_interfere({seg(100, 1, 10)}));
  // Gather: scattered sources, one contiguous destination. Sources may overlap each other.
  CHECK_FALSE(segments_interfere({seg(1000, 10, 10), seg(1010, 5, 10), seg(1020, 10, 10)}));
  CHECK_FALSE(segments_interfere({seg(100, 10, 10), seg(110, 20, 10)}));  // touching dsts
  CHECK(segments_interfere({seg(100, 10, 10), seg(109, 30, 10)}));        // dsts overlap
  CHECK(segments_interfere({seg(100, 10, 10), seg(200, 105, 10)}));       // later reads a dst
  CHECK(segments_interfere({seg(200, 105, 10), seg(100, 10, 10)}));       // earlier reads it
  CHECK_FALSE(segments_interfere({seg(100, 10, 10), seg(200, 110, 10)}));  // src touches a dst
  CHECK_FALSE(segments_interfere({seg(100, 10, 10), seg(105, 300, 0)}));   // empty: ignored
  // A short destination nested in a long one, with a short one between in start order.
  CHECK(segments_interfere({seg(100, 1000, 100), seg(150, 2000, 1), seg(120, 3000, 1)}));
  // A source that starts before every destination and reaches into the last one.
  CHECK(segments_interfere({seg(100, 5000, 10), seg(300, 6000, 10), seg(7000, 50, 260)}));

  std::mt19937 gen(11);
  int interfering = 0;
  for (int round = 0; round < 3000; ++round) {
    const auto s = random_segments(gen, 1, 400, 1 + gen() % 6, 40);
    const bool expected = interfere_reference(s);
    interfering += expected;
    if (segments_interfere(s) != expected) {
      std::string text;
      for (const auto& x : s) {
        text += "(" + std::to_string(x.dst.addr) + " <- " + std::to_string(x.src) + ", " +
                std::to_string(x.dst.bytes) + ") ";
      }
      FAIL("segments_interfere disagrees with the reference for " << text);
    }
  }
  // Both answers were exercised plenty.
  CHECK(interfering > 500);
  CHECK(interfering < 2500);
}

TEST_CASE("coalesce_segments merges, in order, segments that continue both sides") {
  using kvferry::gpu::coalesce_segments;
  // Consecutive blocks to consecutive staging bytes: one run covering segments 0..2.
  auto c = coalesce_segments({seg(1000, 100, 16), seg(1016, 116, 16), seg(1032, 132, 16)});
  REQUIRE(c.size() == 1);
  CHECK(c[0].op.src == 100);
  CHECK(c[0].op.dst.addr == 1000);
  CHECK(c[0].op.dst.bytes == 48);
  CHECK(c[0].first == 0);
  CHECK(c[0].last == 2);

  // Only the source continues, only the destination continues, out of order: no merge. Empty
  // segments disappear and do not break a run.
  c = coalesce_segments({seg(1000, 100, 16), seg(2000, 116, 16), seg(2016, 300, 16),
                         seg(0, 0, 0), seg(2032, 316, 8), seg(1016, 116, 16)});
  REQUIRE(c.size() == 4);
  CHECK(c[0].first == 0);
  CHECK(c[1].first == 1);
  CHECK(c[2].first == 2);
  CHECK(c[2].last == 4);
  CHECK(c[2].op.dst.bytes == 24);
  CHECK(c[3].first == 5);
  CHECK(coalesce_segments({seg(0, 0, 0)}).empty());
}

TEST_CASE("plan_copy: nothing, one memcpy, the kernel, or ordered memcpys") {
  using kvferry::gpu::plan_copy;
  auto p = plan_copy({});
  CHECK(p.method == copy_method::nothing);
  p = plan_copy({seg(100, 200, 0), seg(0, 0, 0)});
  CHECK(p.method == copy_method::nothing);

  p = plan_copy({seg(1000, 100, 16), seg(1016, 116, 16)});  // one run after merging
  CHECK(p.method == copy_method::memcpy_each);
  CHECK_FALSE(p.ordered);
  REQUIRE(p.segments.size() == 1);
  CHECK(p.segments[0].op.dst.bytes == 32);

  p = plan_copy({seg(1000, 100, 16), seg(1016, 300, 16), seg(1032, 200, 16)});  // a gather
  CHECK(p.method == copy_method::kernel);
  CHECK(p.segments.size() == 3);

  kvferry::gpu::copy_limits few;
  few.kernel_min_segments = 4;
  CHECK(plan_copy({seg(1000, 100, 16), seg(1016, 300, 16), seg(1032, 200, 16)}, few).method ==
        copy_method::memcpy_each);

  // Segment 1 reads what segment 0 writes, and the two would merge: order must be kept and
  // nothing merged (the merged run would overlap itself).
  p = plan_copy({seg(116, 100, 16), seg(132, 116, 16), seg(0, 0, 0)});
  CHECK(p.method == copy_method::memcpy_each);
  CHECK(p.ordered);
  REQUIRE(p.segments.size() == 2);
  CHECK(p.segments[0].first == 0);
  CHECK(p.segments[1].first == 1);
  CHECK(p.segments[1].op.dst.bytes == 16);
}

TEST_CASE("an executed plan equals the in-order copy, with pieces in any order") {
  std::mt19937 gen(5);
  constexpr std::uint64_t arena = 600;
  std::vector<std::uint8_t> initial(arena);
  kvferry::gpu::copy_limits limits;
  limits.max_piece_bytes = 7;  // many pieces, with unaligned ends
  int kernel_plans = 0;
  int ordered_plans = 0;
  for (int round = 0; round < 2000; ++round) {
    for (auto& b : initial) b = static_cast<std::uint8_t>(gen());
    std::vector<std::uint8_t> expected = initial;
    std::vector<std::uint8_t> got = initial;
    const auto s = random_segments(gen, 1, arena - 1, 1 + gen() % 8, 60);
    // The "addresses" are offsets into the arena: the planner only does arithmetic on them.
    auto run_on = [](std::vector<std::uint8_t>& mem, std::uint64_t src, std::uint64_t dst,
                     std::uint64_t bytes) { std::memcpy(&mem[dst], &mem[src], bytes); };
    for (const auto& x : s) run_on(expected, x.src, x.dst.addr, x.dst.bytes);

    const auto plan = kvferry::gpu::plan_copy(s, limits);
    if (plan.ordered) {
      ++ordered_plans;
      for (const auto& x : plan.segments) run_on(got, x.op.src, x.op.dst.addr, x.op.dst.bytes);
    } else {
      std::vector<copy_piece> ranges;
      for (const auto& x : plan.segments) {
        ranges.push_back(copy_piece{x.op.src, x.op.dst.addr, x.op.dst.bytes});
      }
      auto pieces = kvferry::gpu::split_pieces(ranges, limits.max_piece_bytes);
      if (plan.method == copy_method::kernel) ++kernel_plans;
      std::reverse(pieces.begin(), pieces.end());
      for (const auto& p : pieces) run_on(got, p.src, p.dst, p.bytes);
    }
    if (got != expected) {
      FAIL("round " << round << ": the plan's result differs from the in-order copy");
    }
  }
  CHECK(kernel_plans > 300);
  CHECK(ordered_plans > 300);
}

TEST_CASE("split_pieces bounds every piece, keeps relative alignment and covers every byte") {
  using kvferry::gpu::split_pieces;
  const auto p = split_pieces({copy_piece{1001, 5003, 70}, copy_piece{9, 9, 0},
                               copy_piece{400, 800, 32}, copy_piece{1, 2, 33}},
                              32);
  const std::vector<copy_piece> expected{
      {1001, 5003, 32}, {1033, 5035, 32}, {1065, 5067, 6}, {400, 800, 32}, {1, 2, 32}, {33, 34, 1}};
  CHECK(p == expected);
  CHECK(split_pieces({}, 32).empty());
  // 16 KiB blocks stay one piece each at the default 32 KiB.
  CHECK(split_pieces({copy_piece{0x10000, 0x90000, 16384}}, 32 * 1024).size() == 1);
}

TEST_CASE("split_launches covers every piece exactly once") {
  using kvferry::gpu::split_launches;
  CHECK(split_launches(0, 10).empty());
  CHECK(split_launches(10, 10) == std::vector<launch_range>{{0, 10}});
  CHECK(split_launches(25, 10) == std::vector<launch_range>{{0, 10}, {10, 10}, {20, 5}});
  CHECK(split_launches(131071, 65535).size() == 3);
}

TEST_CASE("kernel_can_access: own device, pinned and managed memory, not pageable or a peer's") {
  using kvferry::gpu::kernel_can_access;
  CHECK(kernel_can_access(pointer_info{pointer_kind::device, 1, 0}, 1));
  CHECK_FALSE(kernel_can_access(pointer_info{pointer_kind::device, 0, 0}, 1));
  CHECK(kernel_can_access(pointer_info{pointer_kind::pinned_host, -1, 0}, 1));
  CHECK(kernel_can_access(pointer_info{pointer_kind::managed, 0, 0}, 1));
  CHECK_FALSE(kernel_can_access(pointer_info{pointer_kind::pageable, -1, 0}, 0));
}

TEST_CASE("pointer_resolver asks once per range it was told about, and never caches a failure") {
  // A fake address space: device memory of device 0 in 2 MiB granules from 0x7000'0000'0000, a
  // pinned host page at 0x5000'0000'1000 (device address + 0x100), pageable memory elsewhere
  // (4 KiB pages), and a hole at 0x6000'0000'0000 where the lookup fails.
  constexpr std::uint64_t dev = 0x7000'0000'0000;
  constexpr std::uint64_t mib2 = 2 << 20;
  int calls = 0;
  kvferry::gpu::pointer_resolver r([&](std::uint64_t a, pointer_range* out, std::string* why) {
    ++calls;
    if (a >= 0x6000'0000'0000 && a < 0x6000'0000'1000) {
      *why = "no such memory";
      return false;
    }
    if (a >= dev && a < dev + 4 * mib2) {
      out->info = pointer_info{pointer_kind::device, 0, 0};
      out->begin = a & ~(mib2 - 1);
      out->end = out->begin + mib2;
    } else {
      const bool pinned = (a & ~std::uint64_t{4095}) == 0x5000'0000'1000;
      out->info = pinned ? pointer_info{pointer_kind::pinned_host, -1, 0x100}
                         : pointer_info{pointer_kind::pageable, -1, 0};
      out->begin = a & ~std::uint64_t{4095};
      out->end = out->begin + 4096;
    }
    return true;
  });
  pointer_info info;
  std::string why;
  // 256 blocks of 16 KiB spread over two granules: two lookups.
  for (std::uint64_t i = 0; i < 256; ++i) {
    REQUIRE(r.resolve(dev + mib2 + i * 16384, &info, &why));
    CHECK(info.kind == pointer_kind::device);
  }
  CHECK(r.lookups() == 2);
  REQUIRE(r.resolve(0x5000'0000'1ff0, &info, &why));
  CHECK(info.kind == pointer_kind::pinned_host);
  CHECK(info.device_offset == 0x100);
  // Pageable memory right after the pinned page is its own answer, not the pinned page's.
  REQUIRE(r.resolve(0x5000'0000'2000, &info, &why));
  CHECK(info.kind == pointer_kind::pageable);
  REQUIRE(r.resolve(0x5000'0000'1000, &info, &why));
  CHECK(info.kind == pointer_kind::pinned_host);
  CHECK(r.lookups() == 4);
  CHECK_FALSE(r.resolve(0x6000'0000'0010, &info, &why));
  CHECK(why == "no such memory");
  CHECK_FALSE(r.resolve(0x6000'0000'0010, &info, &why));  // asked again: failures are not cached
  CHECK(r.lookups() == 6);
  CHECK(calls == 6);

  // A lookup whose range does not hold the address answers that address only: its range is
  // not trusted for the addresses it names either.
  kvferry::gpu::pointer_resolver odd([](std::uint64_t, pointer_range* out, std::string*) {
    out->info = pointer_info{pointer_kind::managed, 0, 0};
    out->begin = 0;
    out->end = 16;
    return true;
  });
  REQUIRE(odd.resolve(100, &info, &why));
  REQUIRE(odd.resolve(5, &info, &why));
  CHECK(odd.lookups() == 2);
}

TEST_CASE("pinned_ranges refuses overlaps and finds every address inside a range") {
  kvferry::gpu::pinned_ranges r;
  CHECK(r.add(1000, 100, 7));
  CHECK(r.add(1100, 50, 0));  // touching is fine
  CHECK_FALSE(r.add(1050, 10, 0));
  CHECK_FALSE(r.add(900, 101, 0));
  CHECK_FALSE(r.add(1149, 1, 0));
  CHECK_FALSE(r.add(2000, 0, 0));
  CHECK(r.size() == 2);
  pointer_range out;
  CHECK_FALSE(r.find(999, &out));
  REQUIRE(r.find(1000, &out));
  CHECK(out.begin == 1000);
  CHECK(out.end == 1100);
  CHECK(out.info.kind == pointer_kind::pinned_host);
  CHECK(out.info.device_offset == 7);
  REQUIRE(r.find(1099, &out));
  CHECK(out.begin == 1000);
  REQUIRE(r.find(1149, &out));
  CHECK(out.begin == 1100);
  CHECK_FALSE(r.find(1150, &out));
  CHECK_FALSE(r.remove(1001));
  CHECK(r.remove(1000));
  CHECK_FALSE(r.find(1000, &out));
  CHECK(r.size() == 1);
}
