// peer_table (actors/peer_table.hpp): one id per peer entry, the least recently used forgotten at
// the bound, an entry that terminates forgotten on its own, ids never reused. In virtual time.
#include "actors/peer_table.hpp"
#include "tests/support/virtual_time.hpp"

#include <doctest/doctest.h>

#include <memory>
#include <vector>

using namespace kvferry;

namespace {

// Spawned with an argument: CAF 0.17's spawn of a function without one dereferences an empty
// tuple pointer (UBSan reports it).
caf::behavior entry_stand_in(caf::event_based_actor*, int) {
  return {[](int) {}};
}

struct table_rig {
  testing::virtual_time vt;
  std::vector<std::size_t> sizes;  // what on_change heard, in order
  std::shared_ptr<peer_table> table;

  explicit table_rig(std::uint32_t limit)
      : table(std::make_shared<peer_table>(limit, [this](std::size_t n) { sizes.push_back(n); })) {}
  sender_actor entry() { return caf::actor_cast<sender_actor>(vt.spawn(entry_stand_in, 0)); }
};

}  // namespace

TEST_CASE("the peer table gives one id per entry and forgets the least recently used at its bound") {
  table_rig rig{2};
  auto a = rig.entry(), b = rig.entry(), c = rig.entry();
  std::uint32_t evicted = 9;
  auto ia = rig.table->add(a, {}, &evicted);
  CHECK(evicted == 0);
  auto ib = rig.table->add(b, {}, &evicted);
  CHECK(ib != ia);
  CHECK(rig.table->add(a) == ia);  // the same entry again: its id, and now the most recent
  CHECK(rig.table->size() == 2);
  CHECK(rig.table->use(ib).entry == b);  // b used: a is now the least recently used
  auto ic = rig.table->add(c, {}, &evicted);
  CHECK(evicted == 1);
  CHECK(rig.table->size() == 2);
  CHECK(!rig.table->use(ia).entry);  // forgotten
  CHECK(rig.table->use(ib).entry == b);
  CHECK(rig.table->use(ic).entry == c);
  // Back again, a gets a new id: ids are never reused.
  auto ia2 = rig.table->add(a, {}, &evicted);
  CHECK(evicted == 1);
  CHECK(ia2 != ia);
  CHECK(ia2 > ic);
  CHECK(!rig.table->use(ib).entry);  // b was the least recently used this time
  CHECK(rig.sizes == std::vector<std::size_t>{1, 2, 2, 2});
}

TEST_CASE("a peer whose entry actor terminates is forgotten on its own, and remove answers for known ids only") {
  table_rig rig{8};
  auto a = rig.entry(), b = rig.entry();
  auto ia = rig.table->add(a);
  auto ib = rig.table->add(b);
  rig.vt.kill(a);
  rig.vt.run();
  CHECK(!rig.table->use(ia).entry);
  CHECK(rig.table->use(ib).entry == b);
  CHECK(rig.table->size() == 1);
  CHECK(rig.sizes.back() == 1);
  CHECK(!rig.table->remove(ia));  // already forgotten
  CHECK(rig.table->remove(ib));
  CHECK(!rig.table->remove(ib));
  CHECK(!rig.table->remove(0));
  CHECK(!rig.table->use(12345).entry);
  CHECK(rig.table->size() == 0);
  // An entry that already ended is forgotten as it is added.
  auto gone = rig.entry();
  rig.vt.kill(gone);
  rig.vt.run();
  auto ig = rig.table->add(gone);
  CHECK(!rig.table->use(ig).entry);
  CHECK(rig.table->size() == 0);
  // Forgotten by disconnect, then its actor ends: nothing else is touched.
  auto c = rig.entry(), d = rig.entry();
  auto ic = rig.table->add(c);
  auto id = rig.table->add(d);
  CHECK(rig.table->remove(ic));
  rig.vt.kill(c);
  rig.vt.run();
  CHECK(rig.table->use(id).entry == d);
  CHECK(rig.table->size() == 1);
}

TEST_CASE("the peer table keeps the process each peer said it is, the latest for a known entry") {
  table_rig rig{4};
  auto a = rig.entry();
  process_identity first;
  first.boot_id = "boot";
  first.pid = 41;
  auto ia = rig.table->add(a, first);
  CHECK(rig.table->use(ia).process.pid == 41);
  process_identity again = first;
  again.pid = 42;  // the same entry, asked again
  CHECK(rig.table->add(a, again) == ia);
  CHECK(rig.table->use(ia).process.pid == 42);
  CHECK(rig.table->use(ia).process.boot_id == "boot");
  CHECK(rig.table->use(999).process.pid == 0);  // unknown id: nothing
}
