// offer_book: the node's sends that no peer has fetched yet, held as state (held_requests.hpp)
// rather than as one actor each.
//
//   node::send ──add──> offer in the book (its request_owner inside: the one exit path)
//   whoever takes an offer out owns it from then on, exactly once (the book's lock decides):
//     the sender, for a fetch that fits ──> hands it to a new send-request actor (take_if)
//     the sender's sweep, its deadline passed ──> timed_out, released
//     the sender, the bound node DOWN ──> peer_failed, released
//     the sender, a decline from the bound node (or any, when unbound) ──> cancelled, released
//     node::cancel ──> cancelled, released
//     node::stop ──close──> stopped, released; add refused from then on
//   layer_ready before the fetch ──> recorded in the offer (mark_ready)
//
// The book outlives the sender (the supervisor's spec holds it), so a restarted sender finds the
// offers of its predecessor.
#pragma once

#include "actors/held_requests.hpp"
#include "actors/send_request_actor.hpp"

#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace kvferry {

using offer = held_request<send_spec>;

// Offers by the node they are bound to (the entry's address), and the nodes first seen since
// the sender last asked (it monitors each once).
struct bound_index {
  std::unordered_map<caf::actor_addr, std::unordered_set<std::string>> by_node;
  std::vector<caf::actor_addr> unseen;
  void added(const std::string& id, const offer& o);
  void removed(const std::string& id, const offer& o);
};

class offer_book : public held_requests<send_spec, bound_index> {
 public:
  // Records that `layer` is ready if the offer of `id` is still in the book; false if not.
  bool mark_ready(const std::string& id, std::uint32_t layer);
  // Whether an offer of `id` is in the book.
  bool holds(const std::string& id);
  // Takes out every offer bound to `node` (its entry went down).
  std::vector<offer> take_bound_to(const caf::actor_addr& node);
  // Entries of the nodes offers are bound to: `all` every one, else only those first seen since
  // the last call.
  std::vector<caf::actor_addr> bound_nodes(bool all);
};

}  // namespace kvferry
