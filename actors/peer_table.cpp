#include "actors/peer_table.hpp"

#include <caf/abstract_actor.hpp>
#include <caf/actor_cast.hpp>

namespace kvferry {

std::uint64_t peer_table::add(const sender_actor& entry, process_identity process,
                              std::uint32_t* evicted) {
  auto addr = entry.address();
  std::uint64_t id = 0;
  bool watch = false;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (evicted)
      *evicted = 0;
    if (auto known = by_entry_.find(addr); known != by_entry_.end()) {
      auto& s = by_id_.at(known->second);
      s.peer.process = std::move(process);
      recency_.splice(recency_.begin(), recency_, s.recency);
      return known->second;
    }
    if (by_id_.size() >= limit_) {
      erase(recency_.back());
      if (evicted)
        *evicted = 1;
    }
    id = next_id_++;
    recency_.push_front(id);
    by_id_.emplace(id, slot{peer_ref{entry, std::move(process)}, recency_.begin()});
    by_entry_.emplace(addr, id);
    watch = watched_.insert(addr).second;
    changed();
  }
  if (watch) {
    // Runs when the entry's proxy terminates (its node died or the connection was lost), or now
    // if it already has. The table may be gone by then.
    std::weak_ptr<peer_table> weak = shared_from_this();
    caf::actor_cast<caf::abstract_actor*>(entry)->attach_functor([weak, addr] {
      if (auto table = weak.lock())
        table->forget_entry(addr);
    });
  }
  return id;
}

peer_ref peer_table::use(std::uint64_t id) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = by_id_.find(id);
  if (it == by_id_.end())
    return {};
  recency_.splice(recency_.begin(), recency_, it->second.recency);
  return it->second.peer;
}

bool peer_table::remove(std::uint64_t id) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (by_id_.count(id) == 0)
    return false;
  erase(id);
  changed();
  return true;
}

std::size_t peer_table::size() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return by_id_.size();
}

void peer_table::clear() {
  std::lock_guard<std::mutex> guard{mtx_};
  by_id_.clear();
  by_entry_.clear();
  recency_.clear();
  changed();
}

void peer_table::forget_entry(const caf::actor_addr& entry) {
  std::lock_guard<std::mutex> guard{mtx_};
  watched_.erase(entry);
  if (auto it = by_entry_.find(entry); it != by_entry_.end()) {
    erase(it->second);
    changed();
  }
}

void peer_table::erase(std::uint64_t id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end())
    return;
  by_entry_.erase(it->second.peer.entry.address());
  recency_.erase(it->second.recency);
  by_id_.erase(it);
}

}  // namespace kvferry
