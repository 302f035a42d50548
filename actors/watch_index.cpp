#include "actors/watch_index.hpp"

#include <caf/abstract_actor.hpp>
#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <caf/system_messages.hpp>

#include <vector>

namespace kvferry {

void watch_index::watch(const caf::actor_addr& target, const caf::actor_addr& watcher) {
  if (!target || !watcher)
    return;
  bool first = false;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    auto [it, added] = entries_.try_emplace(target);
    it->second.watchers.insert(watcher);
    first = added;
  }
  if (!first)
    return;
  // Outside the lock: attaching to an actor that already terminated runs the functor at once.
  auto strong = caf::actor_cast<caf::strong_actor_ptr>(target);
  if (!strong) {  // gone so long that nothing of it is left: it terminated, reason unknown
    fire(target, caf::make_error(caf::exit_reason::unknown));
    return;
  }
  std::weak_ptr<watch_index> self = shared_from_this();
  strong->get()->attach_functor([self, target](const caf::error& reason) {
    if (auto index = self.lock())
      index->fire(target, reason);
  });
}

void watch_index::unwatch(const caf::actor_addr& target, const caf::actor_addr& watcher) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = entries_.find(target);
  if (it != entries_.end())
    it->second.watchers.erase(watcher);
}

std::size_t watch_index::watchers(const caf::actor_addr& target) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = entries_.find(target);
  return it == entries_.end() ? 0 : it->second.watchers.size();
}

void watch_index::fire(const caf::actor_addr& target, const caf::error& reason) {
  std::unordered_set<caf::actor_addr> watchers;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    auto it = entries_.find(target);
    if (it == entries_.end())
      return;
    watchers = std::move(it->second.watchers);
    entries_.erase(it);
  }
  for (auto& w : watchers)
    if (auto a = caf::actor_cast<caf::actor>(w))
      caf::anon_send(a, caf::down_msg{target, reason});
}

}  // namespace kvferry
