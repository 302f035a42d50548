// Message serialization round trips (what crosses the network) and the put planner.
#include "actors/messages.hpp"
#include "actors/request_lifecycle.hpp"

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
  f.blocks = {{0x1000, 4096, 0}, {0x90000, 65536, 1}};
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
  CHECK(out.blocks[1].key == 1);
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
