// watch_index (actors/watch_index.hpp): requests watch long-lived actors without a CAF monitor
// each, and hear of their death exactly as a monitor would have told them. In virtual time.
#include "actors/watch_index.hpp"
#include "tests/support/virtual_time.hpp"

#include <doctest/doctest.h>

#include <memory>
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
