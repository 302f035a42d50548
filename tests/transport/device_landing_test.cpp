// device_landing (transport/device_landing.hpp): data messages for device memory are gathered
// into host buffers and copied a buffer at a time. A fake copy engine here keeps each submitted
// copy until the test ends it; the engine's use of the landing is tried end to end by the
// device-memory tests in tests/actors.
#include "transport/device_landing.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace kvferry;
using namespace kvferry::transport;

namespace {

// A copy engine whose copies wait for the test: submit() keeps them, end() runs one (copying its
// segments into `device` when it succeeds) and calls its done.
struct held_copies {
  struct copy {
    std::vector<copy_op> segments;
    std::function<void(errc, const std::string&)> done;
  };
  std::vector<copy> copies;
  std::vector<std::uint8_t> device = std::vector<std::uint8_t>(1 << 20, 0);
  std::uint64_t base() const { return addr_of(device.data()); }

  device_landing::submit_fn submit() {
    return [this](std::vector<copy_op> segments, std::function<void(errc, const std::string&)> done) {
      copies.push_back(copy{std::move(segments), std::move(done)});
    };
  }
  // Options whose copies this engine holds; `buffer_bytes` 0: the default.
  device_landing::options options(std::size_t buffer_bytes = 0, std::size_t buffers = 32) {
    device_landing::options o;
    o.submit = submit();
    if (buffer_bytes != 0)
      o.buffer_bytes = buffer_bytes;
    o.buffers = buffers;
    return o;
  }
  void end(std::size_t i, errc code = errc::none, const std::string& detail = {}) {
    if (code == errc::none)
      for (const copy_op& op : copies.at(i).segments)
        std::memcpy(ptr_of(op.dst.addr), ptr_of(op.src), op.dst.bytes);
    // Dropped once called, as a copy engine drops a finished job (with what it holds).
    auto done = std::move(copies.at(i).done);
    copies.at(i).done = nullptr;
    done(code, detail);
  }
};

// What each finish heard, by message.
struct finishes {
  std::vector<std::string> heard;
  int calls = 0;
  device_landing::finish_fn make(std::size_t i) {
    if (heard.size() <= i)
      heard.resize(i + 1, "unfinished");
    return [this, i](const std::string& error) {
      heard[i] = error;
      ++calls;
    };
  }
};

std::vector<std::uint8_t> payload(std::size_t bytes, std::uint8_t seed) {
  std::vector<std::uint8_t> p(bytes);
  for (std::size_t i = 0; i < bytes; ++i)
    p[i] = static_cast<std::uint8_t>(seed + i * 7);
  return p;
}

// Waits (generous bound: only a landing that never wakes its waiter runs out) until `done`.
template <class Done>
bool wait_until(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!done() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  return done();
}

}  // namespace

TEST_CASE("device landing: messages of one pass become one copy, and each finishes only when "
          "that copy has written it") {
  held_copies engine;
  finishes f;
  auto landing = std::make_unique<device_landing>(engine.options());

  // Three messages: two adjacent pieces of one block, one of another block.
  const auto a = payload(7936, 1), b = payload(7936, 2), c = payload(100, 3);
  landing->append(engine.base(), a.data(), a.size(), f.make(0));
  landing->append(engine.base() + a.size(), b.data(), b.size(), f.make(1));
  landing->append(engine.base() + 500000, c.data(), c.size(), f.make(2));
  CHECK(engine.copies.empty());  // nothing leaves before the flush
  landing->flush();
  REQUIRE(engine.copies.size() == 1);
  const auto segs = engine.copies[0].segments;
  REQUIRE(segs.size() == 3);
  CHECK(segs[0].dst.addr == engine.base());
  CHECK(segs[1].dst.addr == engine.base() + a.size());
  CHECK(segs[2].dst.addr == engine.base() + 500000);
  // Sources follow one another in the buffer, so the copy engine may join adjacent pieces.
  CHECK(segs[1].src == segs[0].src + a.size());
  CHECK(f.calls == 0);  // landed in our buffer, not yet in device memory

  engine.end(0);
  CHECK(f.calls == 3);
  CHECK(f.heard == std::vector<std::string>{"", "", ""});
  CHECK(std::memcmp(engine.device.data(), a.data(), a.size()) == 0);
  CHECK(std::memcmp(engine.device.data() + a.size(), b.data(), b.size()) == 0);
  CHECK(std::memcmp(engine.device.data() + 500000, c.data(), c.size()) == 0);

  // An empty flush hands nothing over; the buffer came back and serves the next batch.
  landing->flush();
  CHECK(engine.copies.size() == 1);
  landing->append(engine.base(), c.data(), c.size(), f.make(3));
  landing->flush();
  REQUIRE(engine.copies.size() == 2);
  CHECK(engine.copies[1].segments[0].src == segs[0].src);
  const auto counts = landing->counts();
  CHECK(counts.buffers_allocated == 1);
  CHECK(counts.copies == 2);
  CHECK(counts.messages == 4);
  engine.end(1);
  CHECK(f.heard[3].empty());
}

TEST_CASE("device landing: a failed copy fails every message of its batch, naming why, and the "
          "next batch is unaffected") {
  held_copies engine;
  finishes f;
  auto landing = std::make_unique<device_landing>(engine.options());
  const auto p = payload(64, 9);
  landing->append(engine.base(), p.data(), p.size(), f.make(0));
  landing->append(engine.base() + 64, p.data(), p.size(), f.make(1));
  landing->flush();
  landing->append(engine.base() + 128, p.data(), p.size(), f.make(2));
  landing->flush();
  REQUIRE(engine.copies.size() == 2);
  engine.end(0, errc::transport_error, "cuda:0: an illegal address");
  CHECK(f.heard[0] == "copying into device memory failed: cuda:0: an illegal address");
  CHECK(f.heard[1] == f.heard[0]);
  CHECK(f.heard[2] == "unfinished");
  engine.end(1, errc::out_of_memory);  // no detail: the code names it
  CHECK(f.heard[2] == std::string("copying into device memory failed: ") +
                        to_string(errc::out_of_memory));
  CHECK(f.calls == 3);
  CHECK(engine.device[0] == 0);  // the failed copies wrote nothing
}

TEST_CASE("device landing: a copy engine that throws on submit fails the batch's messages once "
          "and gets its buffer back") {
  finishes f;
  int submits = 0;
  device_landing::options o;
  o.buffers = 1;
  o.submit = [&](std::vector<copy_op>, std::function<void(errc, const std::string&)>) {
    if (++submits == 1)
      throw std::runtime_error("engine stopped");
  };
  auto landing = std::make_unique<device_landing>(o);
  const auto p = payload(16, 4);
  landing->append(0x1000, p.data(), p.size(), f.make(0));
  landing->flush();
  CHECK(f.calls == 1);
  CHECK(f.heard[0] ==
        "copying into device memory failed: the copy into device memory could not be started");
  // With one buffer only, a second batch proves the first one's buffer came back (else append
  // would wait for ever; the submit below never ends its copy, and nothing else needs a buffer).
  landing->append(0x1000, p.data(), p.size(), f.make(1));
  landing->flush();
  CHECK(submits == 2);
  CHECK(landing->counts().buffers_allocated == 1);
}

TEST_CASE("device landing: a full buffer is flushed by the append that does not fit, and when "
          "every buffer is in a copy the next append waits for one to come back") {
  held_copies engine;
  finishes f;
  auto landing = std::make_unique<device_landing>(engine.options(8192, 2));
  const auto p = payload(5000, 5);
  landing->append(engine.base(), p.data(), p.size(), f.make(0));
  landing->append(engine.base() + 8192, p.data(), p.size(), f.make(1));  // does not fit: flush
  REQUIRE(engine.copies.size() == 1);
  CHECK(engine.copies[0].segments.size() == 1);
  landing->flush();
  REQUIRE(engine.copies.size() == 2);
  CHECK(landing->counts().buffers_free == 0);

  // Both buffers are in copies: the third message waits, on its own thread as on the engine's
  // progress thread, until a copy ends and gives one back.
  std::atomic<bool> appended{false};
  std::thread progress([&] {
    landing->append(engine.base() + 16384, p.data(), p.size(), f.make(2));
    appended = true;
  });
  REQUIRE(wait_until([&] { return landing->counts().waiting == 1; }));
  CHECK_FALSE(appended.load());
  engine.end(1);  // the second buffer comes back
  progress.join();
  CHECK(appended.load());
  CHECK(f.heard[1].empty());
  CHECK(f.heard[0] == "unfinished");
  landing->flush();
  REQUIRE(engine.copies.size() == 3);
  // The waiting message went into the buffer that came back.
  CHECK(engine.copies[2].segments[0].src == engine.copies[1].segments[0].src);
  engine.end(0);
  engine.end(2);
  CHECK(f.calls == 3);
  CHECK(std::memcmp(engine.device.data() + 16384, p.data(), p.size()) == 0);
  CHECK(landing->counts().buffers_allocated == 2);
}

TEST_CASE("device landing: a message larger than a buffer is copied from one of its own") {
  held_copies engine;
  finishes f;
  auto landing = std::make_unique<device_landing>(engine.options(4096));
  const auto small = payload(100, 6), big = payload(10000, 7);
  landing->append(engine.base(), small.data(), small.size(), f.make(0));
  landing->append(engine.base() + 4096, big.data(), big.size(), f.make(1));
  landing->flush();
  REQUIRE(engine.copies.size() == 2);
  CHECK(engine.copies[1].segments.size() == 1);
  CHECK(engine.copies[1].segments[0].dst.bytes == big.size());
  engine.end(0);
  engine.end(1);
  CHECK(f.heard == std::vector<std::string>{"", ""});
  CHECK(std::memcmp(engine.device.data() + 4096, big.data(), big.size()) == 0);
  CHECK(landing->counts().buffers_allocated == 1);  // the big one is not kept
}

TEST_CASE("device landing: buffers are pinned once each when a pin hook is given, unpinned "
          "before they are freed, and a refused pin only leaves them unpinned") {
  std::vector<void*> pinned, unpinned;
  held_copies engine;
  finishes f;
  {
    device_landing::options o = engine.options(4096, 2);
    int asked = 0;
    o.pin = [&](void* ptr, std::size_t bytes) {
      CHECK(bytes == 4096);
      CHECK(addr_of(ptr) % 4096 == 0);  // whole pages
      if (++asked == 2)
        return false;  // the second buffer is refused
      pinned.push_back(ptr);
      return true;
    };
    o.unpin = [&](void* ptr) { unpinned.push_back(ptr); };
    auto landing = std::make_unique<device_landing>(o);
    const auto p = payload(3000, 8);
    for (int i = 0; i < 4; ++i) {
      landing->append(engine.base() + 4096 * i, p.data(), p.size(), f.make(i));
      landing->flush();
      engine.end(engine.copies.size() - 1);
    }
    // One buffer was enough (each came back before the next append), so one pin.
    CHECK(landing->counts().buffers_allocated == 1);
    landing->append(engine.base(), p.data(), p.size(), f.make(4));
    landing->flush();  // held: the next append needs the second buffer
    landing->append(engine.base() + 4096, p.data(), p.size(), f.make(5));
    landing->flush();
    const auto counts = landing->counts();
    CHECK(counts.buffers_allocated == 2);
    CHECK(counts.buffers_pinned == 1);
    engine.end(4);
    engine.end(5);
    CHECK(f.calls == 6);
    CHECK(unpinned.empty());
  }
  CHECK(pinned.size() == 1);
  CHECK(unpinned == pinned);  // only what was pinned, once
}

TEST_CASE("device landing: a batch never flushed is failed when the landing goes, and a copy in "
          "flight keeps its buffer alive until it ends") {
  held_copies engine;
  finishes f;
  const auto p = payload(32, 10);
  const device_landing::options o = engine.options();
  {
    auto landing = std::make_unique<device_landing>(o);
    landing->append(engine.base() + 64, p.data(), p.size(), f.make(0));
  }  // gone without a flush: the message's window must still hear of it
  CHECK(f.heard[0] == "the transport engine stopped before the copy into device memory started");
  {
    auto landing = std::make_unique<device_landing>(o);
    landing->append(engine.base(), p.data(), p.size(), f.make(1));
    landing->flush();
  }
  CHECK(f.heard[1] == "unfinished");
  engine.end(0);  // reads a buffer the copy keeps alive (ASan would name a use after free)
  CHECK(f.heard[1].empty());
  CHECK(std::memcmp(engine.device.data(), p.data(), p.size()) == 0);
  CHECK(f.calls == 2);
}
