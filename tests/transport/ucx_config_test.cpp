#include "transport/ucx_config.hpp"

#include <doctest/doctest.h>

#include <algorithm>

using namespace kvferry::transport;

namespace {

const ucx_setting* find(const std::vector<ucx_setting>& settings, const std::string& name) {
  auto it = std::find_if(settings.begin(), settings.end(),
                         [&](const ucx_setting& s) { return s.name == name; });
  return it == settings.end() ? nullptr : &*it;
}

}  // namespace

TEST_CASE("tls=shm selects shared memory and turns on its peer error handling") {
  engine_options options;
  options.tls = "shm";
  auto settings = ucx_settings(options, nullptr);
  REQUIRE(settings);
  REQUIRE(find(*settings, "TLS"));
  CHECK(find(*settings, "TLS")->value == "sm,self");
  // Not POSIX_ERROR_HANDLING: UCX 1.13 ignores that name when it comes from ucp_config_modify.
  REQUIRE(find(*settings, "MM_ERROR_HANDLING"));
  CHECK(find(*settings, "MM_ERROR_HANDLING")->value == "y");
  // Every shared-memory interface polled, not only after its wake-up arrived (F24).
  REQUIRE(find(*settings, "ADAPTIVE_PROGRESS"));
  CHECK(find(*settings, "ADAPTIVE_PROGRESS")->value == "n");
}

TEST_CASE("tls=tcp selects tcp and leaves the shared-memory switch out") {
  engine_options options;
  options.tls = "tcp";
  auto settings = ucx_settings(options, nullptr);
  REQUIRE(settings);
  CHECK(find(*settings, "TLS")->value == "tcp,self");
  CHECK(find(*settings, "MM_ERROR_HANDLING") == nullptr);
  CHECK(find(*settings, "ADAPTIVE_PROGRESS") == nullptr);
  // Zero-copy sends abort UCX 1.13 when a tcp endpoint fails under them.
  REQUIRE(find(*settings, "ZCOPY_THRESH"));
  CHECK(find(*settings, "ZCOPY_THRESH")->value == "inf");
}

TEST_CASE("tls=auto leaves the transport choice to UCX but keeps shared memory usable") {
  engine_options options;
  options.tls = "auto";
  auto settings = ucx_settings(options, nullptr);
  REQUIRE(settings);
  CHECK(find(*settings, "TLS") == nullptr);
  CHECK(find(*settings, "MM_ERROR_HANDLING") != nullptr);
  options.shm_error_handling = false;
  CHECK(find(ucx_settings(options, nullptr).value(), "MM_ERROR_HANDLING") == nullptr);
}

TEST_CASE("an explicit UCX_TLS in the environment wins over the tls option") {
  engine_options options;
  options.tls = "tcp";
  auto settings = ucx_settings(options, "sm,self");
  REQUIRE(settings);
  CHECK(find(*settings, "TLS") == nullptr);
  CHECK(find(*settings, "MM_ERROR_HANDLING") != nullptr);
}

TEST_CASE("a keepalive interval is passed to UCX in milliseconds") {
  engine_options options;
  options.keepalive_interval_ms = 250;
  auto settings = ucx_settings(options, nullptr);
  REQUIRE(settings);
  REQUIRE(find(*settings, "KEEPALIVE_INTERVAL"));
  CHECK(find(*settings, "KEEPALIVE_INTERVAL")->value == "250ms");
  options.keepalive_interval_ms = 0;
  CHECK(find(ucx_settings(options, nullptr).value(), "KEEPALIVE_INTERVAL") == nullptr);
}

TEST_CASE("an unknown tls value is an invalid argument") {
  engine_options options;
  options.tls = "infiniband-please";
  auto settings = ucx_settings(options, nullptr);
  REQUIRE_FALSE(settings);
  CHECK(settings.error().code == kvferry::errc::invalid_argument);
}
