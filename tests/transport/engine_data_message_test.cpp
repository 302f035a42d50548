// The engine's data messages (engine_put.cpp) as a hostile or buggy peer could send them: a raw
// UCX worker in this process, not a kvferry engine, talks to a real engine over tcp.
#include "test_support.hpp"

#include "transport/engine_impl.hpp"
#include "transport/ucx_handles.hpp"

#include <algorithm>
#include <atomic>
#include <functional>
#include <cstring>
#include <stdexcept>
#include <thread>

using namespace kvferry;
using namespace kvferry::transport;
using namespace kvferry::test;

namespace {

// A bare UCX peer (tcp) with an endpoint to `target`; counts the acknowledgements it gets.
struct raw_peer : bare_ucx {
  ucx::endpoint ep;
  std::vector<detail::ack_header> acks;

  static ucs_status_t on_ack(void* arg, const void*, std::size_t, void* data, std::size_t length,
                             const ucp_am_recv_param_t*) {
    if (length == sizeof(detail::ack_header)) {
      detail::ack_header a;
      std::memcpy(&a, data, sizeof(a));
      static_cast<raw_peer*>(arg)->acks.push_back(a);
    }
    return UCS_OK;
  }

  explicit raw_peer(const std::vector<std::uint8_t>& target)
      : bare_ucx(std::getenv("UCX_TLS") ? std::getenv("UCX_TLS") : "tcp,self", UCP_FEATURE_AM) {
    ucp_am_handler_param_t handler;
    std::memset(&handler, 0, sizeof(handler));
    handler.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                         UCP_AM_HANDLER_PARAM_FIELD_ARG;
    handler.id = detail::am_ack_id;
    handler.cb = &raw_peer::on_ack;
    handler.arg = this;
    REQUIRE(ucp_worker_set_am_recv_handler(worker.get(), &handler) == UCS_OK);
    ucp_ep_params_t ep_params;
    std::memset(&ep_params, 0, sizeof(ep_params));
    ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep_params.address = reinterpret_cast<const ucp_address_t*>(target.data());
    ep_params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ucp_ep_h raw_ep = nullptr;
    REQUIRE(ucp_ep_create(worker.get(), &ep_params, &raw_ep) == UCS_OK);
    ep = ucx::endpoint(worker.get(), raw_ep);
  }

  // Sends one data message (header of `header_bytes`, the first of them a data_header) and
  // progresses until UCX is done with it.
  void send(std::uint64_t batch, std::uint64_t addr, std::uint64_t window,
            const std::vector<unsigned char>& payload,
            std::size_t header_bytes = sizeof(detail::data_header)) {
    std::vector<unsigned char> header(header_bytes, 0);
    detail::data_header h{batch, addr, window};
    std::memcpy(header.data(), &h, std::min(sizeof(h), header_bytes));
    ucp_request_param_t param;
    std::memset(&param, 0, sizeof(param));
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    param.flags = UCP_AM_SEND_FLAG_EAGER | UCP_AM_SEND_FLAG_REPLY;
    ucx::request req(ucp_am_send_nbx(ep.get(), detail::am_data_id, header.data(), header.size(),
                                     payload.data(), payload.size(), &param));
    REQUIRE(req.pending());
    REQUIRE(ucx::wait(worker.get(), req, 20s) == UCS_OK);
  }

  // Progresses until `count` acknowledgements arrived (bounded).
  bool wait_acks(std::size_t count) {
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (acks.size() < count && std::chrono::steady_clock::now() < until)
      ucp_worker_progress(worker.get());
    return acks.size() >= count;
  }
};

// Waits (bounded) until the engine has refused `count` writes.
bool refused(const engine& e, std::uint64_t count) {
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (e.stats().writes_refused < count && std::chrono::steady_clock::now() < until)
    std::this_thread::yield();
  return e.stats().writes_refused >= count;
}

}  // namespace

bool none_written(const std::vector<unsigned char>& memory) {
  return std::all_of(memory.begin(), memory.end(), [](unsigned char b) { return b == 0; });
}

TEST_CASE("a peer's data message lands only inside an open receive window in registered memory") {
  auto target = start_engine("tcp");
  std::vector<unsigned char> registered(4096, 0), elsewhere(4096, 0);
  auto region = target->register_memory(registered.data(), registered.size());
  REQUIRE(region);
  // A receive's window over the middle of the region (as a receive opens one over its blocks).
  window_lease window{target->windows(), {{addr_of(registered.data()) + 1024, 2048}}};
  REQUIRE(window.token() != 0);
  raw_peer peer{target->worker_address()};
  const std::vector<unsigned char> payload(256, 0xab);

  SUBCASE("inside: written and acknowledged with the batch and its bytes") {
    peer.send(7, addr_of(registered.data()) + 1024, window.token(), payload);
    REQUIRE(peer.wait_acks(1));
    CHECK(peer.acks[0].batch == 7);
    CHECK(peer.acks[0].bytes == payload.size());
    CHECK(peer.acks[0].refused == 0);
    CHECK(std::all_of(registered.begin() + 1024, registered.begin() + 1280,
                      [](unsigned char b) { return b == 0xab; }));
    CHECK(std::all_of(registered.begin(), registered.begin() + 1024,
                      [](unsigned char b) { return b == 0; }));
    CHECK(target->stats().writes_refused == 0);
    // Its acknowledgement left: nothing keeps the engine polling instead of sleeping. Once
    // the peer holds the ack, UCX has sent it, but the engine learns so on its next progress
    // pass, hence the wait (20 s bound: only a count that never returns to 0 reaches it).
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (target->stats().acks_leaving != 0 && std::chrono::steady_clock::now() < until)
      std::this_thread::yield();
    CHECK(target->stats().acks_leaving == 0);
  }
  SUBCASE("outside the window or the registration, across an end, naming no or another window: "
          "refused and answered so, nothing written") {
    const auto base = addr_of(registered.data());
    peer.send(8, addr_of(elsewhere.data()), window.token(), payload);  // not registered
    peer.send(9, base, window.token(), payload);                       // registered, not in it
    peer.send(10, base + 3072 - 128, window.token(), payload);         // across its end
    peer.send(11, 0, window.token(), payload);
    peer.send(12, base + 1024, 0, payload);                            // no window named
    peer.send(13, base + 1024, window.token() ^ 1, payload);           // another window
    REQUIRE(refused(*target, 6));
    REQUIRE(peer.wait_acks(6));
    for (const auto& a : peer.acks) {
      CAPTURE(a.batch);
      CHECK(a.refused == 1);
      CHECK(a.bytes == payload.size());
    }
    CHECK(none_written(elsewhere));
    CHECK(none_written(registered));
    // The engine still serves a good message after them.
    peer.send(14, base + 1024, window.token(), payload);
    REQUIRE(peer.wait_acks(7));
    CHECK(peer.acks[6].batch == 14);
    CHECK(peer.acks[6].refused == 0);
  }
  SUBCASE("a header of another size is dropped unanswered") {
    peer.send(15, addr_of(registered.data()) + 1024, window.token(), payload,
              sizeof(detail::data_header) + 8);
    REQUIRE(refused(*target, 1));
    CHECK(none_written(registered));
    peer.send(16, addr_of(registered.data()) + 1024, window.token(), payload);
    REQUIRE(peer.wait_acks(1));
    CHECK(peer.acks.size() == 1);
    CHECK(peer.acks[0].batch == 16);
  }
  SUBCASE("once its receive closed the window, a late message is refused: the memory is "
          "quiescent without a word from the peer") {
    const std::uint64_t token = window.token();
    CHECK(window.close());
    CHECK_FALSE(window.close());  // once
    CHECK(target->windows()->open_count() == 0);
    peer.send(17, addr_of(registered.data()) + 1024, token, payload);
    REQUIRE(peer.wait_acks(1));
    CHECK(peer.acks[0].refused == 1);
    CHECK(none_written(registered));
    // A window opened next over the same memory gets another token: the late message of the
    // first cannot land in it.
    window_lease next{target->windows(), {{addr_of(registered.data()) + 1024, 2048}}};
    CHECK(next.token() != token);
    peer.send(18, addr_of(registered.data()) + 1024, token, payload);
    REQUIRE(peer.wait_acks(2));
    CHECK(peer.acks[1].refused == 1);
    CHECK(none_written(registered));
  }
  SUBCASE("memory no longer registered is refused, even inside an open window") {
    region.value().reset();
    peer.send(19, addr_of(registered.data()) + 1024, window.token(), payload);
    REQUIRE(refused(*target, 1));
    CHECK(none_written(registered));
  }
}

TEST_CASE("receive windows: tokens are unique and non-zero, adjacent ranges join, a write "
          "lies inside one range or is refused") {
  receive_windows windows;
  std::vector<std::uint64_t> tokens;
  for (int i = 0; i < 1000; ++i)
    tokens.push_back(windows.open({{4096, 4096}}));
  std::sort(tokens.begin(), tokens.end());
  CHECK(std::adjacent_find(tokens.begin(), tokens.end()) == tokens.end());
  CHECK(tokens.front() != 0);
  CHECK(windows.open_count() == 1000);
  for (auto t : tokens)
    CHECK(windows.close(t));
  CHECK(windows.open_count() == 0);

  // Blocks [100, 200) and [200, 300) are adjacent; [400, 500) is not.
  const auto token = windows.open({{200, 100}, {400, 100}, {100, 100}, {600, 0}});
  int writes = 0;
  auto write = [&](std::uint64_t addr, std::uint64_t bytes) {
    return windows.write_if_open(token, addr, bytes, [&] { ++writes; });
  };
  CHECK(write(100, 200));   // one operation over two adjacent blocks
  CHECK(write(150, 100));
  CHECK(write(400, 100));
  CHECK_FALSE(write(250, 200));   // into the gap
  CHECK_FALSE(write(50, 100));    // before the first
  CHECK_FALSE(write(450, 100));   // past the last
  CHECK_FALSE(write(600, 1));     // an empty range is not part of it
  CHECK_FALSE(write(100, 0));
  CHECK_FALSE(write(~std::uint64_t{0} - 10, 20));  // wraps around
  CHECK_FALSE(windows.write_if_open(token ^ 1, 100, 10, [&] { ++writes; }));
  CHECK(writes == 3);
  CHECK(windows.close(token));
  CHECK_FALSE(write(100, 10));
  CHECK(writes == 3);
}

TEST_CASE("receive windows: lose_all closes every open window and tells each receive once") {
  receive_windows windows;
  int told_a = 0, told_b = 0;
  const auto a = windows.open({{100, 100}}, [&] { ++told_a; });
  const auto b = windows.open({{300, 100}}, [&] {
    ++told_b;
    throw std::runtime_error("a receive that cannot be told");
  });
  const auto quiet = windows.open({{500, 100}});  // no one to tell
  CHECK(windows.is_open(a));
  CHECK(windows.lose_all() == 3);
  CHECK(told_a == 1);
  CHECK(told_b == 1);  // its throw kept no one else from hearing, and did not escape
  CHECK(windows.open_count() == 0);
  for (auto t : {a, b, quiet}) {
    CHECK_FALSE(windows.is_open(t));
    CHECK_FALSE(windows.write_if_open(t, 100, 10, [] {}));
    CHECK_FALSE(windows.close(t));
  }
  CHECK(windows.lose_all() == 0);
  CHECK(told_a == 1);
  // Windows opened afterwards are unaffected.
  const auto next = windows.open({{100, 100}});
  CHECK(windows.is_open(next));
  CHECK(windows.write_if_open(next, 100, 10, [] {}));
}

namespace kvferry::transport {

// Device memory: a write through a window starts a copy that outlives the call; the window
// counts it, and closing (or settling) waits for it and names a failed one.
TEST_CASE("receive windows: close waits for the copies started through a window and names a "
          "failed one; a closed window starts none") {
  receive_windows windows;
  const auto token = windows.open({{4096, 8192}});
  std::vector<std::function<void(const std::string&)>> running;  // copies under way
  auto start = [&](std::uint64_t addr, std::uint64_t bytes) {
    return windows.start_copy_if_open(token, addr, bytes, [&](auto finish) {
      running.push_back(finish);
    });
  };
  CHECK(start(4096, 4096));
  CHECK(start(8192, 4096));
  CHECK_FALSE(start(0, 4096));      // outside
  CHECK_FALSE(start(8192, 8192));   // runs past the end
  REQUIRE(running.size() == 2);

  // Waits (generous bound: only a broken window makes it run out) until `done` holds.
  auto wait_until = [](auto done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!done() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::yield();
    return done();
  };

  // close() waits for both copies: it runs on another thread while this one finishes them.
  // Each copy's end is marked before it is reported, so a close that returns having waited
  // sees both marks; one that returned early sees a mark missing (it cannot see one wrongly).
  std::atomic<int> copies_ended{0};
  int ended_when_closed = -1;
  std::string error = "untouched";
  std::thread closer([&] {
    CHECK(windows.close(token, &error));
    ended_when_closed = copies_ended.load();
  });
  // Once close began, the window takes nothing new even though it has not returned.
  CHECK(wait_until([&] { return !windows.is_open(token); }));
  CHECK_FALSE(start(4096, 16));
  CHECK_FALSE(windows.write_if_open(token, 4096, 16, [] {}));
  ++copies_ended;
  running[0]("copying into device memory failed: an illegal address");
  ++copies_ended;
  running[1]("");
  closer.join();
  CHECK(ended_when_closed == 2);
  CHECK(error == "copying into device memory failed: an illegal address");
  CHECK_FALSE(windows.close(token));

  // settle() leaves the window open and reports what failed so far; a start that throws
  // counts as a failed copy.
  const auto other = windows.open({{0, 100}});
  CHECK(windows.start_copy_if_open(other, 0, 10, [](auto) { throw std::runtime_error("no"); }));
  CHECK(windows.settle(other) == "the copy into device memory could not be started");
  CHECK(windows.is_open(other));
  // lose_all waits for copies too, then tells the receive. The copy ends only once lose_all
  // has begun (the window no longer open), so a lose_all that tells the receive having waited
  // sees it ended.
  bool told = false;
  std::atomic<bool> finished{false};
  bool finished_when_told = false;
  const auto watched = windows.open({{200, 100}}, [&] {
    told = true;
    finished_when_told = finished.load();
  });
  std::function<void(const std::string&)> pending;
  CHECK(windows.start_copy_if_open(watched, 200, 10, [&](auto finish) { pending = finish; }));
  std::thread finisher([&] {
    CHECK(wait_until([&] { return !windows.is_open(watched); }));
    finished = true;
    pending("");
  });
  CHECK(windows.lose_all() == 2);
  finisher.join();
  CHECK(told);
  CHECK(finished_when_told);
  CHECK(windows.open_count() == 0);
}

}  // namespace kvferry::transport
