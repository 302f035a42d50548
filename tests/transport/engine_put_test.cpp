#include "test_support.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>

using namespace kvferry;
using namespace kvferry::test;
using transport::put_batch;

namespace {

constexpr std::uint64_t peer_b = 7;

// A scatter of blocks of different sizes: sequential in the source, permuted and spaced out in
// the destination, so a wrong offset or a short write shows up as a mismatch.
struct scatter {
  std::vector<std::size_t> sizes;
  std::vector<std::size_t> source_offsets;
  std::vector<std::size_t> target_offsets;
  std::size_t source_bytes = 0;
  std::size_t target_bytes = 0;

  scatter() {
    const std::size_t pattern[] = {4096, 12288, 65536, 1 << 20, 3 * 4096 + 17, 256 * 1024, 8, 4096};
    for (int round = 0; round < 3; ++round) {
      for (std::size_t size : pattern) {
        sizes.push_back(size);
      }
    }
    for (std::size_t size : sizes) {
      source_offsets.push_back(source_bytes);
      source_bytes += size;
    }
    std::vector<std::size_t> order(sizes.size());
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(42));
    target_offsets.resize(sizes.size());
    for (std::size_t index : order) {
      target_bytes += 4096;  // a gap that must stay untouched
      target_offsets[index] = target_bytes;
      target_bytes += sizes[index];
    }
    target_bytes += 4096;
  }
};

std::vector<std::uint8_t> pattern_bytes(std::size_t bytes, std::uint32_t seed) {
  std::vector<std::uint8_t> data(bytes);
  std::uint32_t x = seed;
  for (auto& byte : data) {
    x = x * 1664525u + 1013904223u;
    byte = static_cast<std::uint8_t>(x >> 24);
  }
  return data;
}

// Puts the scatter from engine `a` into a region of engine `b` and checks every byte.
void put_scatter_and_verify(transport::engine& a, transport::engine& b, bool ucx_allocated) {
  const scatter layout;
  const std::vector<std::uint8_t> source = pattern_bytes(layout.source_bytes, 1234);

  std::vector<std::uint8_t> user_target;
  std::shared_ptr<transport::memory_registration> region;
  if (ucx_allocated) {
    auto allocated = b.allocate_memory(layout.target_bytes);
    REQUIRE(allocated);
    region = allocated.value();
    CHECK(region->ucx_allocated());
  } else {
    user_target.assign(layout.target_bytes, 0);
    auto registered = b.register_memory(user_target.data(), user_target.size());
    REQUIRE(registered);
    region = registered.value();
    CHECK_FALSE(region->ucx_allocated());
    CHECK(region->base() == user_target.data());
  }
  REQUIRE(region->bytes() == layout.target_bytes);
  CHECK_FALSE(region->packed_rkey().empty());
  auto* target = static_cast<std::uint8_t*>(region->base());
  std::memset(target, 0, layout.target_bytes);

  auto window = window_over(b, *region);
  put_batch batch;
  batch.peer = peer_b;
  batch.rkeys.push_back(region->packed_rkey());
  batch.window = window.token();
  const auto base = reinterpret_cast<std::uint64_t>(region->base());
  for (std::size_t i = 0; i < layout.sizes.size(); ++i) {
    batch.ops.push_back(put_to(source.data() + layout.source_offsets[i], layout.sizes[i],
                               base + layout.target_offsets[i], 0));
  }
  completion_log log;
  a.put(std::move(batch), log.callback(1));
  REQUIRE(log.wait_for_tags(1));
  REQUIRE(log.calls(1).size() == 1);
  INFO("detail: " << log.detail(1));
  REQUIRE(log.calls(1)[0] == errc::none);

  std::vector<bool> written(layout.target_bytes, false);
  for (std::size_t i = 0; i < layout.sizes.size(); ++i) {
    const bool same = std::memcmp(target + layout.target_offsets[i],
                                  source.data() + layout.source_offsets[i], layout.sizes[i]) == 0;
    INFO("block " << i << " of " << layout.sizes[i] << " bytes");
    CHECK(same);
    std::fill_n(written.begin() + layout.target_offsets[i], layout.sizes[i], true);
  }
  std::size_t stray = 0;
  for (std::size_t i = 0; i < layout.target_bytes; ++i) {
    stray += (!written[i] && target[i] != 0) ? 1 : 0;
  }
  CHECK(stray == 0);
  CHECK(a.stats().bytes_put >= layout.source_bytes);
}

}  // namespace

TEST_CASE("scattered blocks put over tcp arrive intact, and tcp is what carried them") {
  auto [b, a] = connected_engines("tcp", peer_b);
  bool ucx_allocated = false;
  SUBCASE("into registered user memory") { ucx_allocated = false; }
  SUBCASE("into memory UCX allocated") { ucx_allocated = true; }
  put_scatter_and_verify(*a, *b, ucx_allocated);
  const auto transports = a->endpoint_transports(peer_b);
  INFO("transports: " << transports.size());
  if (!ucx_tls_overridden()) {
    CHECK(transports == std::vector<std::string>{"tcp"});
  }
}

TEST_CASE("scattered blocks put over shared memory arrive intact and never fall back to tcp") {
  auto [b, a] = connected_engines("shm", peer_b);
  bool ucx_allocated = false;
  SUBCASE("into registered user memory") { ucx_allocated = false; }
  SUBCASE("into memory UCX allocated") { ucx_allocated = true; }
  put_scatter_and_verify(*a, *b, ucx_allocated);
  const auto transports = a->endpoint_transports(peer_b);
  if (!ucx_tls_overridden()) {
    REQUIRE_FALSE(transports.empty());
    for (const std::string& transport : transports) {
      INFO("transport: " << transport);
      CHECK(is_shared_memory(transport));
    }
  }
}

TEST_CASE("with tls=auto and PEER error mode the endpoint still uses shared memory") {
  // The regression guard for UCX 1.13 silently dropping posix/sysv under PEER error handling.
  if (ucx_tls_overridden()) {
    return;
  }
  auto [b, a] = connected_engines("auto", peer_b);
  put_scatter_and_verify(*a, *b, false);
  const auto transports = a->endpoint_transports(peer_b);
  REQUIRE_FALSE(transports.empty());
  CHECK(std::find(transports.begin(), transports.end(), "tcp") == transports.end());
  CHECK(std::any_of(transports.begin(), transports.end(), is_shared_memory));
}

TEST_CASE("without the shared-memory error-handling switch UCX 1.13 falls back to tcp") {
  // Not kvferry's contract but the platform fact that makes the test above meaningful.
  if (ucx_tls_overridden()) {
    return;
  }
  auto b = start_engine("auto", {}, false);
  auto a = start_engine("auto", {}, false);
  a->connect(peer_b, b->worker_address());
  put_scatter_and_verify(*a, *b, false);
  CHECK(a->endpoint_transports(peer_b) == std::vector<std::string>{"tcp"});
}

TEST_CASE("a put to a peer that was never connected completes once with not_connected") {
  auto a = start_engine("shm");
  std::vector<std::uint8_t> source(4096, 1);
  put_batch batch;
  batch.peer = 99;
  batch.rkeys.push_back({1, 2, 3});
  batch.ops.push_back(put_to(source.data(), source.size(), 0x1000, 0));
  completion_log log;
  a->put(std::move(batch), log.callback(1));
  REQUIRE(log.wait_for_tags(1));
  CHECK(log.calls(1) == std::vector<errc>{errc::not_connected});
  CHECK(a->endpoint_transports(99).empty());
  a.reset();  // joins the progress thread: nothing can arrive after this
  CHECK(log.calls(1).size() == 1);
}

TEST_CASE("a malformed batch completes once with invalid_argument and posts nothing") {
  auto [b, a] = connected_engines("shm", peer_b);
  std::vector<std::uint8_t> target(4096);
  auto region = b->register_memory(target.data(), target.size());
  REQUIRE(region);
  auto window = window_over(*b, *region.value());
  std::vector<std::uint8_t> source(4096, 1);
  put_batch batch;
  batch.peer = peer_b;
  batch.rkeys.push_back(region.value()->packed_rkey());
  batch.window = window.token();
  batch.ops.push_back(put_to(source.data(), source.size(),
                             reinterpret_cast<std::uint64_t>(target.data()), 3));
  completion_log log;
  a->put(std::move(batch), log.callback(1));
  REQUIRE(log.wait_for_tags(1));
  CHECK(log.calls(1) == std::vector<errc>{errc::invalid_argument});
  CHECK(target == std::vector<std::uint8_t>(4096, 0));
}

TEST_CASE("an empty batch completes once with success") {
  auto [b, a] = connected_engines("shm", peer_b);
  put_batch batch;
  batch.peer = peer_b;
  completion_log log;
  a->put(std::move(batch), log.callback(1));
  REQUIRE(log.wait_for_tags(1));
  CHECK(log.calls(1) == std::vector<errc>{errc::none});
}

TEST_CASE("cancelling a large in-flight put completes it exactly once, cancelled or done") {
  std::string tls;
  SUBCASE("over tcp") { tls = "tcp"; }
  SUBCASE("over shared memory") { tls = "shm"; }
  CAPTURE(tls);
  auto [b, a] = connected_engines(tls, peer_b);
  constexpr std::size_t bytes = std::size_t{128} << 20;
  std::vector<std::uint8_t> source(bytes, 0x5a);
  std::vector<std::uint8_t> target(bytes, 0);
  auto region = b->register_memory(target.data(), target.size());
  REQUIRE(region);
  auto window = window_over(*b, *region.value());
  put_batch batch;
  batch.peer = peer_b;
  batch.rkeys.push_back(region.value()->packed_rkey());
  batch.window = window.token();
  batch.ops.push_back(
      put_to(source.data(), bytes, reinterpret_cast<std::uint64_t>(target.data()), 0));
  completion_log log;
  const std::uint64_t id = a->put(std::move(batch), log.callback(1));
  a->cancel(id);
  a->cancel(id);  // twice: still one completion
  REQUIRE(log.wait_for_tags(1));
  const auto calls = log.calls(1);
  REQUIRE(calls.size() == 1);
  CHECK((calls[0] == errc::cancelled || calls[0] == errc::none));
  MESSAGE("cancel over " << tls << " ended as " << std::string(to_string(calls[0])));
  a->cancel(id);  // finished: ignored
  const auto stats = a->stats();
  CHECK(stats.ops_in_flight == 0);
  a.reset();
  CHECK(log.calls(1).size() == 1);
}

TEST_CASE("every one of many batches completes exactly once and the stats agree") {
  auto [b, a] = connected_engines("shm", peer_b);
  constexpr std::size_t batches = 400;
  constexpr std::size_t block = 4096;
  constexpr std::size_t blocks_per_batch = 4;
  std::vector<std::uint8_t> source = pattern_bytes(batches * blocks_per_batch * block, 99);
  std::vector<std::uint8_t> target(source.size(), 0);
  auto region = b->register_memory(target.data(), target.size());
  REQUIRE(region);
  auto window = window_over(*b, *region.value());
  completion_log log;
  std::vector<std::uint64_t> ids;
  for (std::size_t i = 0; i < batches; ++i) {
    put_batch batch;
    batch.peer = peer_b;
    batch.rkeys.push_back(region.value()->packed_rkey());
    batch.window = window.token();
  batch.window = window.token();
    for (std::size_t j = 0; j < blocks_per_batch; ++j) {
      const std::size_t offset = (i * blocks_per_batch + j) * block;
      batch.ops.push_back(put_to(source.data() + offset, block,
                                 reinterpret_cast<std::uint64_t>(target.data()) + offset, 0));
    }
    ids.push_back(a->put(std::move(batch), log.callback(i)));
    if (i % 7 == 3) {
      a->cancel(ids.back());
    }
  }
  REQUIRE(log.wait_for_tags(batches));
  std::size_t succeeded = 0;
  for (std::size_t i = 0; i < batches; ++i) {
    const auto calls = log.calls(i);
    REQUIRE(calls.size() == 1);
    CHECK_MESSAGE((calls[0] == errc::none || calls[0] == errc::cancelled),
                  to_string(calls[0]) << ": " << log.detail(i));
    if (calls[0] == errc::none) {
      ++succeeded;
      const std::size_t offset = i * blocks_per_batch * block;
      CHECK(std::memcmp(target.data() + offset, source.data() + offset,
                        blocks_per_batch * block) == 0);
    }
  }
  CHECK(succeeded >= batches - batches / 7 - 1);
  const auto stats = a->stats();
  CHECK(stats.ops_started == batches);
  CHECK(stats.ops_completed == batches);
  CHECK(stats.ops_in_flight == 0);
  CHECK(stats.peers == 1);
  CHECK(stats.bytes_put >= succeeded * blocks_per_batch * block);
  a.reset();
  CHECK(log.total_calls() == batches);
}
