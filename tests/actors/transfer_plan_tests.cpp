// The send side's planning helpers (actors/transfer_plan.hpp): pure functions, no actor.
#include "actors/transfer_plan.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace kvferry;

namespace {

// A fetch's destination, as the planner reads it.
struct fetch {
  std::string request_id;
  std::uint64_t epoch = 0;
  std::vector<std::uint8_t> worker_address;
  std::vector<std::vector<std::uint8_t>> rkeys;
  std::vector<std::uint64_t> region_bases;
  std::vector<std::uint64_t> region_bytes;
  std::vector<desc> blocks;
  std::vector<std::uint32_t> ranges;
  destination view() const {
    return destination{request_id,   epoch,        worker_address, rkeys,
                       region_bases, region_bytes, blocks,         ranges};
  }
};

// A fetch "r" from epoch 1 into one region [base, base + bytes) of rkey 0, naming `blocks`.
fetch one_region(std::uint64_t base, std::uint64_t bytes, std::vector<desc> blocks) {
  fetch f;
  f.request_id = "r";
  f.epoch = 1;
  f.worker_address = {1};
  f.rkeys = {{1}};
  f.region_bases = {base};
  f.region_bytes = {bytes};
  f.blocks = std::move(blocks);
  return f;
}

// What the send side does with a fetch: check it alone, then match it with the offer.
result<std::vector<copy_op>> plan_for(const std::vector<desc>& src, const fetch& f,
                                      const fetch_limits& limits = {}) {
  if (auto bad = check_destination(f.view(), limits))
    return result<std::vector<copy_op>>{bad->code, bad->message};
  return plan_puts(src, f.view());
}

}  // namespace

TEST_CASE("the put planner coalesces runs contiguous on both sides and keeps the rest apart") {
  std::vector<desc> src{{1000, 100, 1}, {1100, 100, 1}, {5000, 100, 1}, {5100, 50, 1}};
  fetch f;
  f.request_id = "r";
  f.epoch = 1;
  f.worker_address = {1};
  f.rkeys = {{1}, {2}};
  f.region_bases = {9000, 9400};
  f.region_bytes = {400, 50};
  f.blocks = {{9000, 100, 0}, {9100, 100, 0}, {9300, 100, 0}, {9400, 50, 1}};
  auto plan = plan_for(src, f);
  REQUIRE(plan);
  REQUIRE(plan->size() == 3);
  CHECK((*plan)[0].src == 1000);
  CHECK((*plan)[0].dst.bytes == 200);
  CHECK((*plan)[0].dst.addr == 9000);
  CHECK((*plan)[1].dst.bytes == 100);
  CHECK((*plan)[2].dst.key == 1);
}

TEST_CASE("a fetch is refused for a count or size mismatch, a bad rkey index or region, naming it") {
  std::vector<desc> src{{1000, 100, 1}, {2000, 100, 1}};
  auto f = one_region(9000, 1000, {{9000, 100, 0}});
  auto e1 = plan_for(src, f);
  REQUIRE(!e1);
  CHECK(e1.error().code == errc::size_mismatch);
  f.blocks = {{9000, 100, 0}, {9500, 64, 0}};
  auto e2 = plan_for(src, f);
  REQUIRE(!e2);
  CHECK(e2.error().code == errc::size_mismatch);
  CHECK(e2.error().message.find("block 1") != std::string::npos);
  f.blocks = {{9000, 100, 0}, {9500, 100, 3}};
  auto e3 = plan_for(src, f);
  REQUIRE(!e3);
  CHECK(e3.error().code == errc::malformed_message);
  // A block past its region's end, or before its start.
  f.blocks = {{9000, 100, 0}, {9950, 100, 0}};
  auto e4 = plan_for(src, f);
  REQUIRE(!e4);
  CHECK(e4.error().code == errc::out_of_range);
  CHECK(e4.error().message.find("block 1") != std::string::npos);
  f.blocks = {{8999, 100, 0}, {9500, 100, 0}};
  CHECK(plan_for(src, f).error().code == errc::out_of_range);
  // A fetch from no node incarnation at all.
  f.blocks = {{9000, 100, 0}, {9500, 100, 0}};
  f.epoch = 0;
  CHECK(plan_for(src, f).error().code == errc::stale_epoch);
  f.epoch = 1;
  // Region descriptors that do not match the rkeys.
  f.blocks = {{9000, 100, 0}, {9500, 100, 0}};
  f.region_bytes.clear();
  CHECK(plan_for(src, f).error().code == errc::malformed_message);
}

TEST_CASE("a fetch over its limits is refused before it is matched with anything, naming the limit") {
  auto f = one_region(0, 1u << 20, {});
  f.request_id = std::string(300, 'x');
  for (std::uint64_t i = 0; i < 10; ++i)
    f.blocks.push_back({i * 4096, 4096, 0});
  auto refused = [&](const fetch_limits& limits, errc code, const std::string& text) {
    CAPTURE(text);
    auto bad = check_destination(f.view(), limits);
    REQUIRE(bad);
    CHECK(bad->code == code);
    CHECK(bad->message.find(text) != std::string::npos);
  };
  refused(fetch_limits{256, 100}, errc::limit_exceeded, "300 bytes, more than the 256 allowed");
  f.request_id = "r";
  CHECK_FALSE(check_destination(f.view(), fetch_limits{256, 10}));
  refused(fetch_limits{256, 9}, errc::limit_exceeded, "10 blocks, more than the 9 allowed");
  f.request_id.clear();
  refused(fetch_limits{}, errc::malformed_message, "no request id");
  f.request_id = "r";
  f.ranges = {0, 1, 2};  // not pairs
  refused(fetch_limits{}, errc::malformed_message, "(first, count) pairs");
  f.ranges.assign(22, 1);  // 11 pairs for 10 blocks
  refused(fetch_limits{}, errc::malformed_message, "at most one per block");
  f.ranges.clear();
  f.rkeys.assign(11, {1});  // more rkeys than blocks
  refused(fetch_limits{}, errc::malformed_message, "11 rkeys for 10 blocks");
  f.rkeys = {{1}};
  f.worker_address.clear();
  refused(fetch_limits{}, errc::malformed_message, "no worker address");
  f.worker_address = {1};
  f.blocks[3].bytes = 0;
  refused(fetch_limits{}, errc::malformed_message, "block 3 of 'r' is empty");
  f.blocks.clear();
  refused(fetch_limits{}, errc::malformed_message, "no destination block");
}

TEST_CASE("a fetch that passes its own checks and does not fit the offer is a size_mismatch naming the offer (for the sender's log)") {
  // check_destination looks at the fetch alone: the same fetch gets the same answer whatever is
  // offered. Only plan_puts compares with the offer (its text stays at the sender).
  auto f = one_region(0, 8192, {{0, 4096, 0}, {4096, 4096, 0}});
  CHECK_FALSE(check_destination(f.view(), {}));
  auto mismatch = plan_puts({{0x1000, 4096, 0}, {0x2000, 4096, 0}, {0x3000, 4096, 0}}, f.view());
  REQUIRE_FALSE(mismatch);
  CHECK(mismatch.error().code == errc::size_mismatch);
  CHECK(mismatch.error().message.find("the sender has 3") != std::string::npos);
}

TEST_CASE("staging chunks fill a buffer, split an item that does not fit, and cover every byte") {
  std::vector<copy_op> items{{1000, {50000, 3000, 0}}, {9000, {70000, 1500, 1}}};
  const desc staging{0x10000, 4096, 0};
  std::size_t next = 0;
  std::uint64_t offset = 0;
  auto c1 = next_chunk(items, next, offset, staging);
  REQUIRE(c1.puts.size() == 2);
  CHECK(c1.puts[0].src == 0x10000);
  CHECK(c1.puts[0].dst.bytes == 3000);
  CHECK(c1.puts[1].src == 0x10000 + 3000);
  CHECK(c1.puts[1].dst.bytes == 1096);  // the second op is split at the buffer's end
  CHECK(c1.copies[1].dst.addr == 0x10000 + 3000);  // gathered where it is put from
  CHECK(c1.puts[1].dst.addr == 70000);
  CHECK(c1.copies[1].src == 9000);
  CHECK(next == 1);
  CHECK(offset == 1096);
  auto c2 = next_chunk(items, next, offset, staging);
  REQUIRE(c2.puts.size() == 1);
  CHECK(c2.puts[0].dst.bytes == 1500 - 1096);
  CHECK(c2.puts[0].dst.addr == 70000 + 1096);
  CHECK(c2.copies[0].src == 9000 + 1096);
  CHECK(c2.puts[0].dst.key == 1);
  CHECK(next == 2);
  CHECK(next_chunk(items, next, offset, staging).puts.empty());
}

TEST_CASE("a fetch's block ranges select offered blocks in order, and bad ranges are refused by name") {
  std::vector<desc> offered{{0x1000, 10, 0}, {0x2000, 20, 0}, {0x3000, 30, 0}, {0x4000, 40, 0}};
  auto all = select_blocks(offered, {});
  REQUIRE(all);
  CHECK(all.value().size() == 4);
  auto some = select_blocks(offered, {0, 1, 2, 2});  // block 0, then blocks 2 and 3
  REQUIRE(some);
  REQUIRE(some.value().size() == 3);
  CHECK(some.value()[0].addr == 0x1000);
  CHECK(some.value()[1].addr == 0x3000);
  CHECK(some.value()[2].addr == 0x4000);
  auto refused = [&](std::vector<std::uint32_t> ranges, errc code, const std::string& text) {
    CAPTURE(text);
    auto r = select_blocks(offered, ranges);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == code);
    CHECK(r.error().message.find(text) != std::string::npos);
  };
  refused({1}, errc::malformed_message, "pairs");
  refused({1, 0}, errc::invalid_argument, "block range 0 [1, +0) is empty");
  refused({2, 1, 1, 1}, errc::invalid_argument, "block range 1 [1, +1) overlaps or precedes");
  refused({0, 2, 1, 1}, errc::invalid_argument, "overlaps");
  refused({3, 2}, errc::out_of_range, "outside the 4 blocks offered");
  refused({0xFFFFFFFFu, 0xFFFFFFFFu}, errc::out_of_range, "outside the 4 blocks offered");
  // Counting alone (the receive side checks ranges before it knows the offer).
  CHECK(count_ranges({0, 1, 5, 3}, 100).value() == 4);
}

TEST_CASE("layer-wise plans: selected blocks counted per layer, puts coalesced within a layer only") {
  // Four layers of 2, 3, 1 and 2 blocks (8 offered).
  const std::vector<std::uint32_t> layers{2, 3, 1, 2};
  CHECK(selected_per_layer(layers, {}, 8) == std::vector<std::uint32_t>{2, 3, 1, 2});
  CHECK(selected_per_layer({}, {}, 8) == std::vector<std::uint32_t>{8});
  // Blocks 1..3 (a range across layers 0 and 1) and 7: layer 2 has none of them.
  CHECK(selected_per_layer(layers, {1, 3, 7, 1}, 8) == std::vector<std::uint32_t>{1, 2, 0, 1});
  CHECK(selected_per_layer({}, {1, 3, 7, 1}, 8) == std::vector<std::uint32_t>{4});

  // Four blocks contiguous on both sides, in two layers of two: two puts, one per layer, where
  // a plan without layers coalesces them into one.
  std::vector<desc> src{{1000, 100, 0}, {1100, 100, 0}, {1200, 100, 0}, {1300, 100, 0}};
  auto f = one_region(9000, 400, {{9000, 100, 0}, {9100, 100, 0}, {9200, 100, 0}, {9300, 100, 0}});
  auto whole = plan_puts(src, f.view());
  REQUIRE(whole);
  CHECK(whole.value().size() == 1);
  auto cut = plan_layer_puts(src, {2, 2}, f.view());
  REQUIRE(cut);
  REQUIRE(cut.value().size() == 2);
  REQUIRE(cut.value()[0].size() == 1);
  CHECK(cut.value()[0][0].src == 1000);
  CHECK(cut.value()[0][0].dst.bytes == 200);
  REQUIRE(cut.value()[1].size() == 1);
  CHECK(cut.value()[1][0].src == 1200);
  CHECK(cut.value()[1][0].dst.addr == 9200);
  // An empty layer has no puts; layers that do not cover the blocks are a bug, named.
  auto with_empty = plan_layer_puts(src, {0, 4, 0}, f.view());
  REQUIRE(with_empty);
  CHECK(with_empty.value()[0].empty());
  CHECK(with_empty.value()[1].size() == 1);
  CHECK(with_empty.value()[2].empty());
  auto short_layers = plan_layer_puts(src, {2, 1}, f.view());
  REQUIRE_FALSE(short_layers);
  CHECK(short_layers.error().code == errc::internal_error);
  // A size mismatch names the block, as plan_puts does.
  auto g = one_region(9000, 400, {{9000, 100, 0}, {9100, 100, 0}, {9200, 50, 0}, {9300, 100, 0}});
  auto mismatch = plan_layer_puts(src, {2, 2}, g.view());
  REQUIRE_FALSE(mismatch);
  CHECK(mismatch.error().code == errc::size_mismatch);
  CHECK(mismatch.error().message.find("block 2") != std::string::npos);
}

TEST_CASE("layer_blocks are checked against the blocks offered") {
  CHECK_FALSE(check_layers({}, 5));
  CHECK_FALSE(check_layers({2, 3}, 5));
  auto sum = check_layers({2, 2}, 5);
  REQUIRE(sum);
  CHECK(sum->code == errc::invalid_argument);
  CHECK(sum->message.find("hold 4 blocks, the send offers 5") != std::string::npos);
  auto empty = check_layers({5, 0}, 5);
  REQUIRE(empty);
  CHECK(empty->message.find("layer 1 has no blocks") != std::string::npos);
  std::vector<std::uint32_t> too_many(max_layers + 1, 1);
  auto many = check_layers(too_many, too_many.size());
  REQUIRE(many);
  CHECK(many->message.find("more than the 65536 allowed") != std::string::npos);
}
