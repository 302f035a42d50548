// A small blocking HTTP/1.1 client over POSIX sockets, for tests of the operator endpoint
// (ops/http_endpoint): it sends exactly the bytes a test gives it, so a test can also be the
// hostile client (half a request, an oversized header, a wrong method). Every call is bounded by
// a receive timeout. No CAF here.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

namespace kvferry::test {

class raw_connection {
 public:
  // Connects to 127.0.0.1:port; every read waits at most `timeout`.
  explicit raw_connection(std::uint16_t port,
                          std::chrono::milliseconds timeout = std::chrono::seconds{10}) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{};
    tv.tv_sec = timeout.count() / 1000;
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~raw_connection() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  raw_connection(const raw_connection&) = delete;
  raw_connection& operator=(const raw_connection&) = delete;

  bool connected() const { return connected_; }
  bool send(const std::string& bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }
  // Reads until the peer closes, or until a whole response (headers and Content-Length bytes
  // of body, none for an answer to HEAD) is in; "" if nothing came before the timeout.
  std::string read_response(bool head = false) {
    std::string in;
    char buf[4096];
    for (;;) {
      auto head_end = in.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        auto cl = in.find("Content-Length: ");
        std::size_t len = !head && cl != std::string::npos && cl < head_end
                            ? std::stoul(in.substr(cl + 16))
                            : 0;
        if (in.size() >= head_end + 4 + len)
          return in;
      }
      auto n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0)
        return in;
      in.append(buf, static_cast<std::size_t>(n));
    }
  }
  // True when the peer closed the connection (EOF) within the receive timeout.
  bool closed_by_peer() {
    char c;
    for (;;) {
      auto n = ::recv(fd_, &c, 1, 0);
      if (n == 0)
        return true;
      if (n < 0)
        return errno == ECONNRESET;
    }
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

struct http_reply {
  unsigned status = 0;  // 0: no answer
  std::string headers, body;
};

inline http_reply parse_reply(const std::string& raw) {
  http_reply r;
  auto head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos)
    return r;
  r.status = static_cast<unsigned>(std::stoul(raw.substr(9, 3)));
  r.headers = raw.substr(0, head_end);
  r.body = raw.substr(head_end + 4);
  return r;
}

// One GET on a connection of its own.
inline http_reply http_get(std::uint16_t port, const std::string& path) {
  raw_connection c{port};
  if (!c.connected() ||
      !c.send("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
    return {};
  return parse_reply(c.read_response());
}

// The value of the first sample line of `metric` (name plus labels, exactly as written), or
// none if the text has no such line.
inline std::optional<double> metric_value(const std::string& text, const std::string& metric) {
  std::size_t at = 0;
  while ((at = text.find(metric + " ", at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n')
      return std::stod(text.substr(at + metric.size() + 1));
    at += metric.size();
  }
  return std::nullopt;
}

}  // namespace kvferry::test
