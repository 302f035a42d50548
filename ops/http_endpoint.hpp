// http_endpoint: the node's operator door (/metrics, /healthz), a small HTTP/1.1 server on a
// thread of its own, so that a scrape never waits for an actor and a stuck actor never stops a
// scrape. Built for clients that misbehave: a request must arrive whole within read_timeout and
// its header within header_limit bytes (else 400/431 or the connection closes), a response
// that is not taken within write_timeout is dropped, idle keep-alive connections close after
// read_timeout, and beyond max_connections new connections are closed at once. Only GET and
// HEAD are served (405 otherwise). No CAF here (Boost.Beast).
#pragma once

#include "kvferry/result.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace kvferry::ops {

struct http_response {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct http_limits {
  std::chrono::milliseconds read_timeout{5000};   // a whole request, or an idle keep-alive
  std::chrono::milliseconds write_timeout{5000};  // a whole response
  std::uint32_t header_limit = 8192;              // bytes of request line + headers
  std::uint32_t max_connections = 64;             // open at once; more are closed at once
};

class http_endpoint {
 public:
  // Called on the endpoint's thread with the request's path (the target without its query);
  // an exception becomes a 500.
  using handler = std::function<http_response(const std::string& path)>;

  // Listens on host:port (port 0: any free one; host an address or a name) and starts serving.
  // Fails with errc::transport_error naming the address and the reason.
  static result<std::unique_ptr<http_endpoint>> start(const std::string& host,
                                                      std::uint16_t port, handler h,
                                                      http_limits limits = {});
  // Stops serving: the listener and every connection are closed, the thread joined.
  ~http_endpoint();
  http_endpoint(const http_endpoint&) = delete;
  http_endpoint& operator=(const http_endpoint&) = delete;

  std::uint16_t port() const noexcept;
  // Connections open right now (diagnostics and tests).
  std::uint32_t connections() const noexcept;
  // Waits at most `timeout` until exactly `n` connections are open, woken by every open and
  // close; true if that happened.
  bool wait_connections(std::uint32_t n, std::chrono::milliseconds timeout) const;

  struct impl;

 private:
  explicit http_endpoint(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace kvferry::ops
