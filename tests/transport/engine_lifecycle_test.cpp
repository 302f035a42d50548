#include "test_support.hpp"

#include <cstring>

using namespace kvferry;
using namespace kvferry::test;
using transport::put_batch;

namespace {

constexpr std::uint64_t peer_b = 3;

put_batch one_block(std::uint64_t peer, const std::vector<std::uint8_t>& source,
                    const transport::memory_registration& region, std::size_t offset,
                    std::size_t bytes, const transport::window_lease& window) {
  put_batch batch;
  batch.peer = peer;
  batch.rkeys.push_back(region.packed_rkey());
  batch.window = window.token();
  batch.ops.push_back(put_to(source.data() + offset, bytes,
                             reinterpret_cast<std::uint64_t>(region.base()) + offset, 0));
  return batch;
}

// `count` puts of `bytes` each from `a` (peer_b) into registered user memory of `b`, tagged
// 0 .. count-1 in `log`. The returned buffers must outlive the puts.
struct posted_puts {
  std::vector<std::uint8_t> source, target;
  std::shared_ptr<transport::memory_registration> region;
  transport::window_lease window;
};

std::unique_ptr<posted_puts> post_blocks(transport::engine& a, transport::engine& b,
                                         std::size_t bytes, std::size_t count,
                                         std::uint8_t fill, completion_log& log) {
  auto p = std::make_unique<posted_puts>();
  p->source.assign(bytes * count, fill);
  p->target.assign(bytes * count, 0);
  auto region = b.register_memory(p->target.data(), p->target.size());
  REQUIRE(region);
  p->region = region.value();
  p->window = window_over(b, *p->region);
  for (std::size_t i = 0; i < count; ++i) {
    a.put(one_block(peer_b, p->source, *p->region, i * bytes, bytes, p->window), log.callback(i));
  }
  return p;
}

}  // namespace

TEST_CASE("an engine starts with a worker address and stops cleanly when idle") {
  auto a = start_engine("shm");
  CHECK_FALSE(a->worker_address().empty());
  const auto stats = a->stats();
  CHECK(stats.ops_started == 0);
  CHECK(stats.peers == 0);
  a.reset();
}

TEST_CASE("registering nothing or a null pointer is an invalid argument") {
  auto a = start_engine("shm");
  std::uint8_t byte = 0;
  auto empty = a->register_memory(&byte, 0);
  REQUIRE_FALSE(empty);
  CHECK(empty.error().code == errc::invalid_argument);
  auto null = a->register_memory(nullptr, 4096);
  REQUIRE_FALSE(null);
  CHECK(null.error().code == errc::invalid_argument);
  CHECK_FALSE(a->allocate_memory(0));
}

TEST_CASE("a memory registration may outlive the engine that made it") {
  std::shared_ptr<transport::memory_registration> region;
  {
    auto a = start_engine("shm");
    auto allocated = a->allocate_memory(1 << 20);
    REQUIRE(allocated);
    region = allocated.value();
  }
  std::memset(region->base(), 0x11, region->bytes());  // still mapped
  region.reset();                                      // unmaps, then cleans up the context
}

TEST_CASE("an unknown tls choice fails engine start with invalid_argument") {
  transport::engine_options options;
  options.tls = "carrier-pigeon";
  auto started = transport::engine::start(options, {});
  REQUIRE_FALSE(started);
  CHECK(started.error().code == errc::invalid_argument);
}

TEST_CASE("connecting with an empty address reports invalid_argument for that peer") {
  peer_error_log errors;
  auto a = start_engine("shm", errors.callback());
  a->connect(5, {});
  REQUIRE(errors.wait_for(1));
  CHECK(errors.errors()[0] == std::make_pair(std::uint64_t{5}, errc::invalid_argument));
  CHECK(a->stats().peers == 0);
}

TEST_CASE("a put after disconnect completes once with not_connected") {
  auto [b, a] = connected_engines("shm", peer_b);
  std::vector<std::uint8_t> source(4096, 7);
  std::vector<std::uint8_t> target(4096, 0);
  auto region = b->register_memory(target.data(), target.size());
  REQUIRE(region);
  auto window = window_over(*b, *region.value());
  completion_log log;
  a->put(one_block(peer_b, source, *region.value(), 0, 4096, window), log.callback(1));
  REQUIRE(log.wait_for_tags(1));
  CHECK(log.calls(1) == std::vector<errc>{errc::none});
  CHECK(a->stats().peers == 1);
  a->disconnect(peer_b);
  a->put(one_block(peer_b, source, *region.value(), 0, 4096, window), log.callback(2));
  REQUIRE(log.wait_for_tags(2));
  CHECK(log.calls(2) == std::vector<errc>{errc::not_connected});
  CHECK(a->stats().peers == 0);
  CHECK(a->endpoint_transports(peer_b).empty());
}

TEST_CASE("disconnecting a peer with puts in flight completes each of them exactly once") {
  auto [b, a] = connected_engines("tcp", peer_b);
  constexpr std::size_t bytes = std::size_t{32} << 20;
  constexpr std::size_t count = 4;
  completion_log log;
  auto posted = post_blocks(*a, *b, bytes, count, 9, log);
  a->disconnect(peer_b);
  REQUIRE(log.wait_for_tags(count));
  for (std::size_t i = 0; i < count; ++i) {
    const auto calls = log.calls(i);
    REQUIRE(calls.size() == 1);
    CHECK((calls[0] == errc::none || calls[0] == errc::not_connected));
  }
  a.reset();
  CHECK(log.total_calls() == count);
}

TEST_CASE("destroying an engine with puts in flight delivers every completion exactly once") {
  std::string tls;
  SUBCASE("over tcp") { tls = "tcp"; }
  SUBCASE("over shared memory") { tls = "shm"; }
  CAPTURE(tls);
  auto [b, a] = connected_engines(tls, peer_b);
  constexpr std::size_t bytes = std::size_t{8} << 20;
  constexpr std::size_t count = 16;
  completion_log log;
  auto posted = post_blocks(*a, *b, bytes, count, 3, log);
  a->put(one_block(1234, posted->source, *posted->region, 0, 4096, posted->window), log.callback(count));  // no peer
  a.reset();  // stops accepting, stops the puts, waits for their requests, joins
  CHECK(log.total_calls() == count + 1);
  for (std::size_t i = 0; i <= count; ++i) {
    const auto calls = log.calls(i);
    REQUIRE(calls.size() == 1);
    CHECK(calls[0] != errc::internal_error);
  }
  CHECK(log.calls(count)[0] == errc::not_connected);
}

TEST_CASE("a peer whose engine goes away is reported and its in-flight put completes once") {
  peer_error_log errors;
  auto b = start_engine("tcp");
  auto a = start_engine("tcp", errors.callback(), true, 200);
  a->connect(peer_b, b->worker_address());
  constexpr std::size_t bytes = std::size_t{256} << 20;
  std::vector<std::uint8_t> source(bytes, 1);
  std::vector<std::uint8_t> target(bytes, 0);
  auto region = b->register_memory(target.data(), target.size());
  REQUIRE(region);
  auto window = window_over(*b, *region.value());
  completion_log log;
  a->put(one_block(peer_b, source, *region.value(), 0, bytes, window), log.callback(1));
  b.reset();  // the target goes away mid-transfer (its region stays mapped: we hold it)
  REQUIRE(log.wait_for_tags(1));
  const auto calls = log.calls(1);
  REQUIRE(calls.size() == 1);
  MESSAGE("in-flight put ended as " << std::string(to_string(calls[0])) << ": " << log.detail(1));
  if (calls[0] != errc::none) {
    REQUIRE(errors.wait_for(1));
    CHECK(errors.errors()[0].first == peer_b);
    CHECK(errors.errors()[0].second == errc::peer_failed);
    CHECK(a->stats().peers == 0);
  }
  a.reset();
  CHECK(log.total_calls() == 1);
}
