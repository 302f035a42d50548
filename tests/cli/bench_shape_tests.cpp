// kvferry bench's shapes case (bench/bench.hpp): "BxS" texts parse into blocks and bytes, with
// the unit suffixes; anything out of range or not of that form gives nothing, never an
// exception; the nixlbench reference is known only for the shapes it was measured at.
#include "bench/bench.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace kvferry::bench;

TEST_CASE("a shape is blocks x bytes, the bytes plain or with a binary unit") {
  CHECK(parse_shape("1x4096") == shape{1, 4096});
  CHECK(parse_shape("128x4KiB") == shape{128, 4096});
  CHECK(parse_shape("128x64K") == shape{128, 64u << 10});
  CHECK(parse_shape("4x64MiB") == shape{4, 64u << 20});
  CHECK(parse_shape("2x1M") == shape{2, 1u << 20});
  CHECK(parse_shape("1x1GiB") == shape{1, 1u << 30});
  CHECK(parse_shape("65536x8") == shape{65536, 8});
}

TEST_CASE("a text that is not a shape in range gives nothing") {
  for (const char* bad : {"", "x", "4096", "x4096", "4x", "0x4096", "65537x4096", "1x7",
                          "1x2GiB", "1x0", "-1x4096", "1x-4096", "1x4096x2", "1X4096", "ax4096",
                          "1x4kb", "1xKiB", "1x 4096", " 1x4096", "1x99999999999999999999",
                          "123456x4096"}) {
    CAPTURE(std::string{bad});
    CHECK_FALSE(parse_shape(bad));
  }
}

TEST_CASE("nixlbench's reference exists for the measured shapes only") {
  auto one = nixlbench_reference_gbps({128, 4u << 10});
  REQUIRE(one);
  CHECK(*one > 0);
  CHECK(nixlbench_reference_gbps({1, 64u << 20}));
  CHECK_FALSE(nixlbench_reference_gbps({2, 4u << 10}));
  CHECK_FALSE(nixlbench_reference_gbps({128, 8u << 10}));
  // Every default shape of the case has its reference.
  for (auto& s : options{}.shapes) {
    CAPTURE(s.blocks);
    CAPTURE(s.block_bytes);
    CHECK(nixlbench_reference_gbps(s));
  }
}
