#include "bench/limits.hpp"

#include "cli/child_process.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

namespace kvferry::bench {

namespace {

using steady = std::chrono::steady_clock;

std::string ucx_tls(const std::string& transport) {
  return transport == "tcp" ? "tcp" : "sm,self";
}

// Runs one ucx_perftest client/server pair; returns the numbers of its "Final:" line
// (iterations, overhead p50/avg/overall usec, bandwidth avg/overall MB/s, rate avg/overall).
std::optional<std::vector<double>> perftest(const std::string& transport, const std::string& test,
                                            std::uint64_t bytes, std::uint64_t iterations) {
  std::mt19937 rng{std::random_device{}()};
  auto port = std::to_string(20000 + rng() % 20000);
  auto tls = "UCX_TLS=" + ucx_tls(transport);
  cli::child_process server{{"/usr/bin/env", tls, "ucx_perftest", "-p", port}};
  if (!server.running())
    return std::nullopt;
  // The server needs a moment to listen; the client retries a few times (wall clock is fine
  // here: this is a benchmark, not a test).
  for (int attempt = 0; attempt < 10; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds{200});
    cli::child_process client{{"/usr/bin/env", tls, "ucx_perftest", "127.0.0.1", "-p", port, "-t",
                               test, "-s", std::to_string(bytes), "-n",
                               std::to_string(iterations)}};
    if (!client.running())
      return std::nullopt;
    auto line = client.wait_for_line("Final:", std::chrono::seconds{120});
    client.wait(std::chrono::seconds{10});
    if (!line)
      continue;  // connection refused: the server was not listening yet
    std::istringstream in{line->substr(6)};
    std::vector<double> values;
    double v = 0;
    while (in >> v)
      values.push_back(v);
    server.kill_now(9);
    if (values.size() >= 8)
      return values;
    return std::nullopt;
  }
  server.kill_now(9);
  return std::nullopt;
}

}  // namespace

double memcpy_gbps(std::uint64_t bytes) {
  std::vector<unsigned char> a(bytes, 1), b(bytes, 2);
  std::memcpy(b.data(), a.data(), bytes);  // warm both
  std::uint64_t reps = std::max<std::uint64_t>(3, (std::uint64_t{512} << 20) / bytes);
  auto t0 = steady::now();
  for (std::uint64_t i = 0; i < reps; ++i) {
    std::memcpy(b.data(), a.data(), bytes);
    a[i % bytes] = b[(i * 7) % bytes];  // keep the copies observable
  }
  double s = std::chrono::duration<double>(steady::now() - t0).count();
  return static_cast<double>(bytes * reps) / s / 1e9;
}

std::optional<double> perftest_put_gbps(const std::string& transport, std::uint64_t bytes) {
  auto iterations = std::clamp<std::uint64_t>((std::uint64_t{1} << 30) / bytes, 20, 100000);
  auto v = perftest(transport, "ucp_put_bw", bytes, iterations);
  if (!v)
    return std::nullopt;
  return (*v)[5] * 1048576.0 / 1e9;  // overall MB/s (UCX's MB is 2^20 bytes)
}

std::optional<double> perftest_tag_lat_us(const std::string& transport, std::uint64_t bytes) {
  auto v = perftest(transport, "tag_lat", bytes, 20000);
  if (!v)
    return std::nullopt;
  return (*v)[2];  // average latency, usec
}

}  // namespace kvferry::bench
