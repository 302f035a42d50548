// child_directory: the node's long-lived actors as currently running. The health supervisor
// writes it (at start and on every restart); request actors read it when they need the current
// incarnation (a staged chunk asks the current pool, a queued receive re-queues at the current
// receiver) and the facade reads it to address new requests.
#pragma once

#include "actors/messages.hpp"

#include <array>
#include <mutex>

namespace kvferry {

inline constexpr std::array<child_kind, 4> all_children{child_kind::transport, child_kind::pool,
                                                        child_kind::sender, child_kind::receiver};

struct node_children {
  transport_actor transport;
  buffer_pool_actor pool;
  sender_actor sender;
  receiver_actor receiver;

  // The child of kind `k`, as an untyped handle (for monitors, exits and comparisons).
  caf::actor get(child_kind k) const;
  // Which child `a` is, if any.
  bool find(const caf::actor_addr& a, child_kind* k) const;
};

class child_directory {
 public:
  node_children current() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return children_;
  }
  void set(node_children c) {
    std::lock_guard<std::mutex> guard{mtx_};
    children_ = std::move(c);
  }

 private:
  mutable std::mutex mtx_;
  node_children children_;
};

}  // namespace kvferry
