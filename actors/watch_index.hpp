// watch_index: which requests watch which long-lived actor (the transport, the receiver, a peer
// node's anchor or sender), kept apart from CAF's monitors.
//
// CAF 0.17 keeps an actor's monitors in a singly linked list that every demonitor walks, so a
// monitor per request on one shared actor makes each request cost O(requests in flight): with
// 100,000 requests most of the CPU went to that walk (issue: 100,000 requests without a
// quadratic). Here a watched actor carries one attachment for all its watchers, and the
// watchers are a hash set: watch and unwatch cost O(1) whatever else is in flight. When the
// watched actor terminates, each watcher gets the down_msg a monitor would have sent:
// down_msg{target, reason}, handled by the watcher's ordinary down handler.
//
//   watch(target, w) ──first watcher of target──> one functor attached to target
//   unwatch(target, w) ──> w leaves the set (the attachment stays while target lives)
//   target terminates ──> every watcher still in the set gets down_msg{target, reason};
//                         the entry goes (a later watch attaches again and, as the target is
//                         already dead, hears at once)
//
// Thread-safe: request actors on any scheduler thread, the functor on the terminating thread.
#pragma once

#include <caf/actor_addr.hpp>
#include <caf/error.hpp>

#include <cstddef>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

namespace kvferry {

class watch_index : public std::enable_shared_from_this<watch_index> {
 public:
  // `watcher` will get down_msg{target, reason} once `target` terminates (at once if it has).
  void watch(const caf::actor_addr& target, const caf::actor_addr& watcher);
  void unwatch(const caf::actor_addr& target, const caf::actor_addr& watcher);
  // Watchers of `target` right now (tests).
  std::size_t watchers(const caf::actor_addr& target) const;

 private:
  struct entry {
    std::unordered_set<caf::actor_addr> watchers;
  };
  void fire(const caf::actor_addr& target, const caf::error& reason);

  mutable std::mutex mtx_;
  std::unordered_map<caf::actor_addr, entry> entries_;
};

}  // namespace kvferry
