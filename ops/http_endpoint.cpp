// http_endpoint: one io_context on one thread; a session per connection, each holding its own
// timer through beast::tcp_stream, so a client that stalls costs one socket until its timeout
// and nothing else.
//
//   accept ──(over max_connections: closed)──> session: read ──> answer ──> write ──┐
//                                                 ^  (timeout, EOF, error: close)   │
//                                                 └──────── keep-alive ─────────────┘

#include "ops/http_endpoint.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

namespace kvferry::ops {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// What every session reads; outlives the sessions (they hold it).
struct shared_ground {
  http_endpoint::handler handler;
  http_limits limits;
  std::atomic<std::uint32_t> connections{0};
  std::mutex mtx;  // with changed: wakes wait_connections
  std::condition_variable changed;

  void count(int delta) {
    {
      std::lock_guard<std::mutex> guard{mtx};
      connections.fetch_add(static_cast<std::uint32_t>(delta));
    }
    changed.notify_all();
  }
};

http_response answer(const shared_ground& g, const http::request<http::empty_body>& req) {
  if (req.method() != http::verb::get && req.method() != http::verb::head)
    return {405, "text/plain; charset=utf-8", "only GET and HEAD are served\n"};
  auto target = std::string{req.target()};
  auto path = target.substr(0, target.find('?'));
  try {
    return g.handler(path);
  } catch (const std::exception& e) {
    return {500, "text/plain; charset=utf-8", std::string{"internal error: "} + e.what() + "\n"};
  } catch (...) {
    return {500, "text/plain; charset=utf-8", "internal error\n"};
  }
}

class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket socket, std::shared_ptr<shared_ground> g)
      : stream_(std::move(socket)), g_(std::move(g)) {
    g_->count(1);
  }
  ~session() { g_->count(-1); }

  void read() {
    parser_.emplace();
    parser_->header_limit(g_->limits.header_limit);
    parser_->body_limit(0);  // GET and HEAD carry none
    stream_.expires_after(g_->limits.read_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_read(ec);
                     });
  }

 private:
  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
        ec == asio::error::eof)
      return close();
    if (ec) {
      // Malformed or too large: say so once, then close.
      unsigned status = ec == http::error::header_limit ? 431 : 400;
      return write({status, "text/plain; charset=utf-8", "bad request: " + ec.message() + "\n"},
                   false, 11, false);
    }
    auto req = parser_->release();
    write(answer(*g_, req), req.keep_alive(), req.version(),
          req.method() == http::verb::head);
  }

  void write(http_response r, bool keep_alive, unsigned version, bool head) {
    auto res = std::make_shared<http::response<http::string_body>>(
      static_cast<http::status>(r.status), version);
    res->set(http::field::server, "kvferry");
    res->set(http::field::content_type, r.content_type);
    res->keep_alive(keep_alive);
    res->body() = std::move(r.body);
    res->prepare_payload();
    if (head)
      res->body().clear();  // Content-Length stays that of the GET
    stream_.expires_after(g_->limits.write_timeout);
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, keep_alive](beast::error_code ec,
                                                                   std::size_t) {
                        if (ec || !keep_alive)
                          return self->close();
                        self->read();
                      });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> parser_;
  std::shared_ptr<shared_ground> g_;
};

}  // namespace

struct http_endpoint::impl {
  asio::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  std::shared_ptr<shared_ground> ground = std::make_shared<shared_ground>();
  std::uint16_t port = 0;
  std::thread thread;

  void accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open())
        return;
      if (!ec) {
        if (ground->connections.load() >= ground->limits.max_connections) {
          beast::error_code ignored;
          socket.close(ignored);  // over the bound: the client sees the connection closed
        } else {
          std::make_shared<session>(std::move(socket), ground)->read();
        }
      }
      accept();  // an accept error (out of descriptors) is passing: keep listening
    });
  }
};

result<std::unique_ptr<http_endpoint>> http_endpoint::start(const std::string& host,
                                                            std::uint16_t port, handler h,
                                                            http_limits limits) {
  using out_t = result<std::unique_ptr<http_endpoint>>;
  auto p = std::make_unique<impl>();
  p->ground->handler = std::move(h);
  p->ground->limits = limits;
  auto fail = [&](const std::string& why) {
    return out_t{errc::transport_error,
                 "cannot listen for HTTP on " + host + ":" + std::to_string(port) + ": " + why};
  };
  beast::error_code ec;
  tcp::endpoint where;
  auto address = asio::ip::make_address(host, ec);
  if (!ec) {
    where = tcp::endpoint{address, port};
  } else {
    tcp::resolver resolver{p->ioc};
    auto found = resolver.resolve(host, std::to_string(port), ec);
    if (ec || found.empty())
      return fail("cannot resolve the host (" + (ec ? ec.message() : "no address") + ")");
    where = found.begin()->endpoint();
  }
  p->acceptor.open(where.protocol(), ec);
  if (!ec)
    p->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec)
    p->acceptor.bind(where, ec);
  if (!ec)
    p->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return fail(ec.message());
  p->port = p->acceptor.local_endpoint().port();
  p->accept();
  auto* raw = p.get();
  p->thread = std::thread([raw] { raw->ioc.run(); });
  return std::unique_ptr<http_endpoint>{new http_endpoint(std::move(p))};
}

http_endpoint::http_endpoint(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

http_endpoint::~http_endpoint() {
  // Stopping the loop and then destroying it closes every socket: the handlers still queued
  // hold the sessions, and go with the io_context (after the acceptor, declared after it).
  impl_->ioc.stop();
  if (impl_->thread.joinable())
    impl_->thread.join();
}

std::uint16_t http_endpoint::port() const noexcept {
  return impl_->port;
}

std::uint32_t http_endpoint::connections() const noexcept {
  return impl_->ground->connections.load();
}

bool http_endpoint::wait_connections(std::uint32_t n, std::chrono::milliseconds timeout) const {
  auto& g = *impl_->ground;
  std::unique_lock<std::mutex> guard{g.mtx};
  return g.changed.wait_for(guard, timeout, [&] { return g.connections.load() == n; });
}

}  // namespace kvferry::ops
