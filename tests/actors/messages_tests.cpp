// Message serialization round trips (what crosses the network) and the put planner.
#include "actors/messages.hpp"
#include "actors/send_request_actor.hpp"

#include <doctest/doctest.h>

using namespace kvferry;

namespace {

struct registered_config : caf::actor_system_config {
  registered_config() { add_message_types<caf::id_block::kvferry>(); }
};

template <class T>
T round_trip(caf::actor_system& sys, const T& in) {
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  auto x = in;
  REQUIRE(!sink(x));
  caf::binary_deserializer source{sys, buf};
  T out;
  REQUIRE(!source(out));
  return out;
}

fetch_msg sample_fetch() {
  fetch_msg f;
  f.request_id = "req-7";
  f.node_name = "decode-0";
  f.epoch = 0xfeedfacecafebeefull;
  f.worker_address = {1, 2, 3, 250};
  f.rkeys = {{9, 8, 7}, {6}};
  f.region_bases = {0x1000, 0x80000};
  f.region_bytes = {8192, 0x20000};
  f.blocks = {{0, 0x1000, 4096}, {1, 0x90000, 65536}};
  f.deadline_ms = 4321;
  return f;
}

}  // namespace

TEST_CASE("a fetch message survives serialization field by field") {
  registered_config cfg;
  caf::actor_system sys{cfg};
  auto in = sample_fetch();
  auto out = round_trip(sys, in);
  CHECK(out.request_id == in.request_id);
  CHECK(out.node_name == in.node_name);
  CHECK(out.epoch == in.epoch);
  CHECK(out.worker_address == in.worker_address);
  CHECK(out.rkeys == in.rkeys);
  CHECK(out.region_bases == in.region_bases);
  CHECK(out.region_bytes == in.region_bytes);
  CHECK(out.deadline_ms == 4321);
  REQUIRE(out.blocks.size() == 2);
  CHECK(out.blocks[1].rkey_index == 1);
  CHECK(out.blocks[1].addr == 0x90000);
  CHECK(out.blocks[1].bytes == 65536);
}

TEST_CASE("a transfer_done and a kvferry error survive serialization inside a message") {
  registered_config cfg;
  caf::actor_system sys{cfg};
  auto msg = caf::make_message(transfer_done{"req-9", 12345},
                               caf::make_error(errc::size_mismatch, "block 3 differs"));
  auto out = round_trip(sys, msg);
  REQUIRE(out.match_elements<transfer_done, caf::error>());
  CHECK(out.get_as<transfer_done>(0).request_id == "req-9");
  CHECK(out.get_as<transfer_done>(0).bytes == 12345);
  auto& err = out.get_as<caf::error>(1);
  CHECK(err.category() == caf::atom("kvferry"));
  CHECK(static_cast<errc>(err.code()) == errc::size_mismatch);
  CHECK(err.context().get_as<std::string>(0) == "block 3 differs");
}

TEST_CASE("every network message type is registered under its name") {
  registered_config cfg;
  caf::actor_system sys{cfg};
  // A message holding a fetch_msg can only be serialized when the type is registered.
  auto msg = caf::make_message(sample_fetch());
  auto out = round_trip(sys, msg);
  REQUIRE(out.match_elements<fetch_msg>());
  CHECK(out.get_as<fetch_msg>(0).blocks.size() == 2);
}

TEST_CASE("the put planner coalesces runs contiguous on both sides and keeps the rest apart") {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> src{
    {1000, 100}, {1100, 100}, {5000, 100}, {5100, 50}};
  fetch_msg f;
  f.request_id = "r";
  f.epoch = 1;
  f.worker_address = {1};
  f.rkeys = {{1}, {2}};
  f.region_bases = {9000, 9400};
  f.region_bytes = {400, 50};
  f.blocks = {{0, 9000, 100}, {0, 9100, 100}, {0, 9300, 100}, {1, 9400, 50}};
  auto plan = plan_puts(src, f);
  REQUIRE(plan);
  REQUIRE(plan->size() == 3);
  CHECK((*plan)[0].local_addr == 1000);
  CHECK((*plan)[0].bytes == 200);
  CHECK((*plan)[0].remote_addr == 9000);
  CHECK((*plan)[1].bytes == 100);
  CHECK((*plan)[2].rkey_index == 1);
}

TEST_CASE("the put planner refuses a count or size mismatch and a bad rkey index, naming it") {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> src{{1000, 100}, {2000, 100}};
  fetch_msg f;
  f.request_id = "r";
  f.epoch = 1;
  f.worker_address = {1};
  f.rkeys = {{1}};
  f.region_bases = {9000};
  f.region_bytes = {1000};
  f.blocks = {{0, 9000, 100}};
  auto e1 = plan_puts(src, f);
  REQUIRE(!e1);
  CHECK(static_cast<errc>(e1.error().code()) == errc::size_mismatch);
  f.blocks = {{0, 9000, 100}, {0, 9500, 64}};
  auto e2 = plan_puts(src, f);
  REQUIRE(!e2);
  CHECK(static_cast<errc>(e2.error().code()) == errc::size_mismatch);
  CHECK(e2.error().context().get_as<std::string>(0).find("block 1") != std::string::npos);
  f.blocks = {{0, 9000, 100}, {3, 9500, 100}};
  auto e3 = plan_puts(src, f);
  REQUIRE(!e3);
  CHECK(static_cast<errc>(e3.error().code()) == errc::malformed_message);
  // A block past its region's end, or before its start.
  f.blocks = {{0, 9000, 100}, {0, 9950, 100}};
  auto e4 = plan_puts(src, f);
  REQUIRE(!e4);
  CHECK(static_cast<errc>(e4.error().code()) == errc::out_of_range);
  CHECK(e4.error().context().get_as<std::string>(0).find("block 1") != std::string::npos);
  f.blocks = {{0, 8999, 100}, {0, 9500, 100}};
  CHECK(static_cast<errc>(plan_puts(src, f).error().code()) == errc::out_of_range);
  // A fetch from no node incarnation at all.
  f.blocks = {{0, 9000, 100}, {0, 9500, 100}};
  f.epoch = 0;
  CHECK(static_cast<errc>(plan_puts(src, f).error().code()) == errc::stale_epoch);
  f.epoch = 1;
  // Region descriptors that do not match the rkeys.
  f.blocks = {{0, 9000, 100}, {0, 9500, 100}};
  f.region_bytes.clear();
  CHECK(static_cast<errc>(plan_puts(src, f).error().code()) == errc::malformed_message);
}

TEST_CASE("staging chunks fill a buffer, split an item that does not fit, and cover every byte") {
  std::vector<put_item> items{{1000, 3000, 50000, 0}, {9000, 1500, 70000, 1}};
  std::size_t next = 0;
  std::uint64_t offset = 0;
  auto c1 = next_chunk(items, next, offset, 0x10000, 4096);
  REQUIRE(c1.puts.size() == 2);
  CHECK(c1.puts[0].local_addr == 0x10000);
  CHECK(c1.puts[0].bytes == 3000);
  CHECK(c1.puts[1].local_addr == 0x10000 + 3000);
  CHECK(c1.puts[1].bytes == 1096);          // the second item is split at the buffer's end
  CHECK(c1.puts[1].remote_addr == 70000);
  CHECK(c1.copies_from[1].first == 9000);
  CHECK(next == 1);
  CHECK(offset == 1096);
  auto c2 = next_chunk(items, next, offset, 0x10000, 4096);
  REQUIRE(c2.puts.size() == 1);
  CHECK(c2.puts[0].bytes == 1500 - 1096);
  CHECK(c2.puts[0].remote_addr == 70000 + 1096);
  CHECK(c2.copies_from[0].first == 9000 + 1096);
  CHECK(c2.puts[0].rkey_index == 1);
  CHECK(next == 2);
  CHECK(next_chunk(items, next, offset, 0x10000, 4096).puts.empty());
}
