#include "kvferry/errc.hpp"
#include "transport/status.hpp"

#include <doctest/doctest.h>

#include <cstring>

using kvferry::errc;
using kvferry::transport::translate;

TEST_CASE("UCS_OK and UCS_INPROGRESS translate to no error") {
  CHECK(translate(UCS_OK) == errc::none);
  CHECK(translate(UCS_INPROGRESS) == errc::none);
}

TEST_CASE("operation-level UCX failures keep their meaning") {
  CHECK(translate(UCS_ERR_CANCELED) == errc::cancelled);
  CHECK(translate(UCS_ERR_TIMED_OUT) == errc::timed_out);
}

TEST_CASE("endpoint-level UCX failures name the peer") {
  CHECK(translate(UCS_ERR_UNREACHABLE) == errc::peer_unreachable);
  CHECK(translate(UCS_ERR_REJECTED) == errc::peer_unreachable);
  CHECK(translate(UCS_ERR_CONNECTION_RESET) == errc::peer_failed);
  CHECK(translate(UCS_ERR_NOT_CONNECTED) == errc::peer_failed);
  CHECK(translate(UCS_ERR_ENDPOINT_TIMEOUT) == errc::peer_failed);
  // The whole endpoint and link ranges, not only the named codes.
  CHECK(translate(static_cast<ucs_status_t>(UCS_ERR_FIRST_ENDPOINT_FAILURE - 1)) ==
        errc::peer_failed);
  CHECK(translate(UCS_ERR_FIRST_LINK_FAILURE) == errc::peer_failed);
}

TEST_CASE("resource and argument failures map to their own codes") {
  CHECK(translate(UCS_ERR_NO_MEMORY) == errc::out_of_memory);
  CHECK(translate(UCS_ERR_NO_RESOURCE) == errc::out_of_memory);
  CHECK(translate(UCS_ERR_INVALID_PARAM) == errc::invalid_argument);
  CHECK(translate(UCS_ERR_UNSUPPORTED) == errc::unsupported);
}

TEST_CASE("any other UCX failure is a transport error") {
  CHECK(translate(UCS_ERR_IO_ERROR) == errc::transport_error);
  CHECK(translate(UCS_ERR_MESSAGE_TRUNCATED) == errc::transport_error);
  CHECK(translate(UCS_ERR_BUSY) == errc::transport_error);
}

TEST_CASE("every error code has a stable lower-case name") {
  CHECK(std::strcmp(kvferry::to_string(errc::none), "none") == 0);
  CHECK(std::strcmp(kvferry::to_string(errc::timed_out), "timed_out") == 0);
  CHECK(std::strcmp(kvferry::to_string(errc::peer_failed), "peer_failed") == 0);
  CHECK(std::strcmp(kvferry::to_string(errc::internal_error), "internal_error") == 0);
  CHECK(std::strcmp(kvferry::to_string(static_cast<errc>(200)), "unknown") == 0);
  for (int code = 0; code <= static_cast<int>(errc::internal_error); ++code) {
    CHECK(std::strcmp(kvferry::to_string(static_cast<errc>(code)), "unknown") != 0);
  }
}
