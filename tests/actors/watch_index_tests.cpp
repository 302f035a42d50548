// watch_index (actors/watch_index.hpp): requests watch long-lived actors without a CAF monitor
// each, and hear of their death exactly as a monitor would have told them. In virtual time, and
// once on real threads.
#include "actors/watch_index.hpp"
#include "tests/support/virtual_time.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

using namespace kvferry;
using namespace std::chrono_literals;

namespace {

// A watcher that keeps the source of every down_msg it gets.
struct downs {
  std::vector<caf::actor_addr> sources;
};

caf::behavior watcher(caf::event_based_actor* self, std::shared_ptr<downs> seen) {
  self->set_down_handler([seen](caf::down_msg& dm) { seen->sources.push_back(dm.source); });
  return {[](int) {}};
}

caf::behavior target(caf::event_based_actor*, int) {
  return {[](int) {}};
}

// Ends, for the reason it was spawned with, when told to (by any int). The reason is an argument
// for a second purpose: CAF 0.17 spawning a function actor without arguments dereferences an
// empty pointer to its argument tuple, which UBSan reports in every run.
caf::behavior quitting_target(caf::event_based_actor* self, caf::exit_reason reason) {
  return {[self, reason](int) { self->quit(reason); }};
}

}  // namespace

TEST_CASE("watch_index: each watcher of a dying actor gets one down_msg, and one that left gets none") {
  testing::virtual_time vt;
  auto index = std::make_shared<watch_index>();
  auto t = vt.spawn(target, 0);
  std::vector<std::shared_ptr<downs>> seen;
  std::vector<caf::actor> watchers;
  for (int i = 0; i < 3; ++i) {
    seen.push_back(std::make_shared<downs>());
    watchers.push_back(vt.spawn(watcher, seen.back()));
  }
  vt.run();
  for (auto& w : watchers)
    index->watch(t.address(), w.address());
  CHECK(index->watchers(t.address()) == 3);
  index->unwatch(t.address(), watchers[1].address());
  CHECK(index->watchers(t.address()) == 2);
  vt.run();
  for (auto& s : seen)
    CHECK(s->sources.empty());  // nothing happens while the target lives

  vt.kill(t);
  vt.run();
  CHECK(seen[0]->sources == std::vector<caf::actor_addr>{t.address()});
  CHECK(seen[1]->sources.empty());
  CHECK(seen[2]->sources == std::vector<caf::actor_addr>{t.address()});
  CHECK(index->watchers(t.address()) == 0);

  // Watching an actor that is already dead: the down_msg comes at once.
  index->watch(t.address(), watchers[1].address());
  vt.run();
  CHECK(seen[1]->sources == std::vector<caf::actor_addr>{t.address()});
  CHECK(index->watchers(t.address()) == 0);
}

TEST_CASE("watch_index: watchers come and go in any number, and those gone hear nothing") {
  testing::virtual_time vt;
  auto index = std::make_shared<watch_index>();
  auto t = vt.spawn(target, 0);
  auto seen = std::make_shared<downs>();
  std::vector<caf::actor> watchers;
  for (int i = 0; i < 2000; ++i)
    watchers.push_back(vt.spawn(watcher, seen));
  vt.run();
  // Watch and unwatch over and over: the set stays exact.
  for (int round = 0; round < 3; ++round) {
    for (auto& w : watchers)
      index->watch(t.address(), w.address());
    CHECK(index->watchers(t.address()) == watchers.size());
    for (auto& w : watchers)
      index->unwatch(t.address(), w.address());
    CHECK(index->watchers(t.address()) == 0);
  }
  vt.kill(t);
  vt.run();
  CHECK(seen->sources.empty());  // every watcher had left
}

// On real threads: the watch is made on a thread of its own, and the target ends on a scheduler
// thread after that thread is told, through a relaxed atomic (no synchronization TSan counts),
// that the watch was made. Nothing but the attachment itself orders the watch before the end,
// so under ThreadSanitizer this also checks that sanitizers/tsan_caf_sync.cpp states CAF's
// attach-before-cleanup edge (without it, a peer's proxy killed on the network thread while a
// request watched it was reported as a race).
TEST_CASE("watch_index: a watch made on one thread is heard when its target ends on another") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto index = std::make_shared<watch_index>();
  auto t = sys.spawn(quitting_target, caf::exit_reason::user_shutdown);
  caf::scoped_actor watcher{sys};
  const auto target_addr = t.address();
  const auto who = watcher->address();
  std::atomic<bool> watched{false};
  std::thread watching{[&index, &target_addr, &who, &watched] {
    index->watch(target_addr, who);
    watched.store(true, std::memory_order_relaxed);
  }};
  while (!watched.load(std::memory_order_relaxed))
    std::this_thread::yield();
  // A plain message, which carries no actor reference whose count the watch's thread touched.
  caf::anon_send(t, 1);
  caf::actor_addr source;
  caf::error reason;
  watcher->receive([&](caf::down_msg& dm) { source = dm.source; reason = dm.reason; },
                   // a bound only so that a lost down_msg fails the test instead of hanging it
                   caf::after(std::chrono::seconds{30}) >> [] {});
  watching.join();
  CHECK(source == target_addr);
  CHECK(reason == caf::make_error(caf::exit_reason::user_shutdown));
  CHECK(index->watchers(target_addr) == 0);
}
