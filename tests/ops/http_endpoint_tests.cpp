// The operator's HTTP endpoint (ops/http_endpoint) with real sockets: what it serves, and what
// a client that misbehaves (half a request, a huge header, a wrong method, too many
// connections) costs it. Timeouts here are the endpoint's own, set short; the waits around them
// are generous bounds on a busy machine, never the thing measured.

#include "ops/http_endpoint.hpp"
#include "tests/support/http_client.hpp"

#include <doctest/doctest.h>

#include <memory>
#include <stdexcept>
#include <vector>

namespace kvferry::ops {

using namespace std::chrono_literals;
using test::http_get;
using test::parse_reply;
using test::raw_connection;

namespace {

http_response route(const std::string& path) {
  if (path == "/hello")
    return {200, "text/plain; charset=utf-8", "hello\n"};
  if (path == "/throw")
    throw std::runtime_error("handler broke");
  return {404, "text/plain; charset=utf-8", "no " + path + "\n"};
}

std::unique_ptr<http_endpoint> start(http_limits limits = {}) {
  auto e = http_endpoint::start("127.0.0.1", 0, route, limits);
  REQUIRE_MESSAGE(e, e.error().message);
  REQUIRE(e.value()->port() != 0);
  return std::move(e.value());
}

// Waits until the endpoint counts `n` open connections, woken by each open and close
// (generous: a busy machine).
bool connections_reach(const http_endpoint& e, std::uint32_t n) {
  return e.wait_connections(n, 10s);
}

}  // namespace

TEST_CASE("the endpoint serves GET and HEAD through its handler, ignores the query, and keeps "
          "a connection alive across requests") {
  auto e = start();
  auto r = http_get(e->port(), "/hello?x=1");
  CHECK(r.status == 200);
  CHECK(r.body == "hello\n");
  CHECK(r.headers.find("Content-Type: text/plain; charset=utf-8") != std::string::npos);
  CHECK(http_get(e->port(), "/nothing").status == 404);

  raw_connection c{e->port()};
  REQUIRE(c.connected());
  REQUIRE(c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(parse_reply(c.read_response()).body == "hello\n");
  REQUIRE(c.send("HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto head = parse_reply(c.read_response(true));
  CHECK(head.status == 200);
  CHECK(head.body.empty());
  CHECK(head.headers.find("Content-Length: 6") != std::string::npos);
}

TEST_CASE("the endpoint answers a wrong method 405, a malformed request 400, an oversized header "
          "431 and a throwing handler 500, and goes on serving") {
  http_limits limits;
  limits.header_limit = 1024;
  auto e = start(limits);
  {
    raw_connection c{e->port()};
    REQUIRE(c.send("POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"));
    CHECK(parse_reply(c.read_response()).status == 405);
  }
  {
    raw_connection c{e->port()};
    REQUIRE(c.send("this is not HTTP\r\n\r\n"));
    CHECK(parse_reply(c.read_response()).status == 400);
    CHECK(c.closed_by_peer());
  }
  {
    raw_connection c{e->port()};
    REQUIRE(c.send("GET /hello HTTP/1.1\r\nX-Big: " + std::string(4096, 'a') + "\r\n\r\n"));
    CHECK(parse_reply(c.read_response()).status == 431);
    CHECK(c.closed_by_peer());
  }
  {
    raw_connection c{e->port()};
    // A body on a GET is more than the endpoint takes.
    REQUIRE(c.send("GET /hello HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"));
    CHECK(parse_reply(c.read_response()).status == 400);
  }
  auto r = http_get(e->port(), "/throw");
  CHECK(r.status == 500);
  CHECK(r.body.find("handler broke") != std::string::npos);
  CHECK(http_get(e->port(), "/hello").status == 200);
}

TEST_CASE("a client that sends half a request holds nobody up, and is closed at the read "
          "timeout") {
  http_limits limits;
  limits.read_timeout = 300ms;
  auto e = start(limits);
  raw_connection slow{e->port()};
  REQUIRE(slow.send("GET /hel"));
  REQUIRE(connections_reach(*e, 1));
  // Served meanwhile, on other connections.
  for (int i = 0; i < 5; ++i)
    CHECK(http_get(e->port(), "/hello").status == 200);
  // The half request is dropped: the endpoint closes the connection without an answer.
  CHECK(slow.closed_by_peer());
  CHECK(connections_reach(*e, 0));
}

TEST_CASE("beyond max_connections new connections are closed at once, and served again once "
          "the idle ones time out") {
  http_limits limits;
  limits.max_connections = 4;
  limits.read_timeout = 500ms;
  auto e = start(limits);
  std::vector<std::unique_ptr<raw_connection>> idle;
  for (int i = 0; i < 4; ++i) {
    idle.push_back(std::make_unique<raw_connection>(e->port()));
    REQUIRE(idle.back()->connected());
  }
  REQUIRE(connections_reach(*e, 4));
  {
    raw_connection extra{e->port()};
    REQUIRE(extra.connected());  // the kernel accepts it; the endpoint closes it
    extra.send("GET /hello HTTP/1.1\r\n\r\n");
    CHECK(extra.closed_by_peer());
  }
  // The idle connections reach their read timeout and are closed: room again.
  for (auto& c : idle)
    CHECK(c->closed_by_peer());
  REQUIRE(connections_reach(*e, 0));
  CHECK(http_get(e->port(), "/hello").status == 200);
}

TEST_CASE("an endpoint that cannot listen says where and why, and stopping one closes its "
          "connections") {
  auto e = start();
  auto port = e->port();
  auto taken = http_endpoint::start("127.0.0.1", port, route);
  REQUIRE(!taken);
  CHECK(taken.error().code == errc::transport_error);
  CHECK(taken.error().message.find("127.0.0.1:" + std::to_string(port)) != std::string::npos);
  auto elsewhere = http_endpoint::start("192.0.2.1", 0, route);  // an address not on this host
  REQUIRE(!elsewhere);
  CHECK(elsewhere.error().message.find("192.0.2.1:0") != std::string::npos);

  raw_connection open{port};
  REQUIRE(open.connected());
  REQUIRE(connections_reach(*e, 1));
  e.reset();
  CHECK(open.closed_by_peer());
  raw_connection after{port};
  CHECK(!after.connected());
}

}  // namespace kvferry::ops
