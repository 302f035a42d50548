// peer_table: the node's connected peers by peer id (node::connect, receive, decline,
// disconnect). Bounded: at node_config::max_peers, connecting a new peer forgets the least
// recently used one. A peer whose entry actor goes away (its process died, the connection was
// lost) is forgotten on its own. A forgotten id answers not_connected; ids are never reused.
// Transfers already running keep their own handle to the peer and end as they would.
//
//   add(entry) ──known──> its id (used now)
//        │ new
//        v
//   [at the bound: the least recently used forgotten] ──> new id; the entry is watched
//   use(id) ──> the entry, now the most recently used (none if forgotten)
//   remove(id) (disconnect) / the entry's proxy terminates ──> forgotten
#pragma once

#include "actors/messages.hpp"

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

namespace kvferry {

// A connected peer: its entry actor and the process it said it is (connect() asked).
struct peer_ref {
  sender_actor entry;
  process_identity process;
};

class peer_table : public std::enable_shared_from_this<peer_table> {
 public:
  // `on_change` hears the number of peers after every change (under the table's lock: it must
  // not call back into the table).
  peer_table(std::uint32_t limit, std::function<void(std::size_t)> on_change)
      : limit_(limit == 0 ? 1 : limit), on_change_(std::move(on_change)) {}

  // The peer id of `entry` (an existing one if it is known), and how many peers were forgotten
  // to make room (0 or 1). Call without holding anything the entry's end could need: watching
  // an entry that already ended forgets it at once.
  // A known entry keeps its id and takes the newer `process`.
  std::uint64_t add(const sender_actor& entry, process_identity process = {},
                    std::uint32_t* evicted = nullptr);
  // The peer `id`, marked used; its entry is invalid if the id is unknown or forgotten.
  peer_ref use(std::uint64_t id);
  // Forgets `id`; false if it was not known.
  bool remove(std::uint64_t id);
  std::size_t size() const;
  void clear();

 private:
  void forget_entry(const caf::actor_addr& entry);  // its proxy terminated
  void erase(std::uint64_t id);                     // with mtx_ held
  void changed() { if (on_change_) on_change_(by_id_.size()); }  // with mtx_ held

  struct slot {
    peer_ref peer;
    std::list<std::uint64_t>::iterator recency;
  };
  mutable std::mutex mtx_;
  std::uint32_t limit_;
  std::function<void(std::size_t)> on_change_;
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, slot> by_id_;
  std::unordered_map<caf::actor_addr, std::uint64_t> by_entry_;
  std::list<std::uint64_t> recency_;               // front: the most recently used
  std::unordered_set<caf::actor_addr> watched_;    // entries with our hook attached (once each)
};

}  // namespace kvferry
