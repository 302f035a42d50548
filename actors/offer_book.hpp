// offer_book: the node's sends that no peer has fetched yet, held as state rather than as one
// actor each (a CAF actor alone costs about 1.5 KiB; a node may hold 100,000 offers).
//
//   node::send ──add──> offer in the book (its request_owner inside: the one exit path)
//   whoever takes an offer out owns it from then on, exactly once (the book's lock decides):
//     the sender, for a fetch that fits ──> hands it to a new send-request actor (hand_over)
//     the sender's sweep, its deadline passed ──> timed_out, released
//     the sender, the bound node DOWN ──> peer_failed, released
//     the sender, a decline from the bound node (or any, when unbound) ──> cancelled, released
//     node::cancel ──> cancelled, released
//     node::stop ──close──> stopped, released; add refused from then on
//   layer_ready before the fetch ──> recorded in the offer (mark_ready)
//
// Nothing of an offer's memory is exposed (no fetch has been served), so every end taken from
// the book releases at once. The book outlives the sender (the supervisor's spec holds it), so a
// restarted sender finds the offers of its predecessor. Thread-safe: the engine's threads (send,
// cancel, layer_ready, stop) and the sender's.
#pragma once

#include "actors/send_request_actor.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace kvferry {

class request_owner;

struct offer {
  std::unique_ptr<request_owner> owner;  // the request's exit path (its token set at hand-over)
  send_spec spec;                        // what the send-request actor will be spawned with
  // When the deadline passes (steady clock; absent: no deadline).
  std::optional<std::chrono::steady_clock::time_point> deadline;
};

// A new offer of `spec` (its owner made here: the request counts as started), made at `now` on
// the actor clock's time line (its deadline from spec.ctx.deadline_ms; 0: none).
offer make_offer(send_spec spec, std::chrono::steady_clock::time_point now);

// Ends an offer taken out of the book: `r` is its terminal result, and it is released (nothing of
// its memory was exposed).
void end_offer(offer o, transfer_result r);

class offer_book {
 public:
  using clock = std::chrono::steady_clock;

  offer_book();
  ~offer_book();
  offer_book(const offer_book&) = delete;
  offer_book& operator=(const offer_book&) = delete;

  // Puts `o` into the book under its request id; false (and `o` untouched) once closed.
  bool add(offer& o);
  // Takes the offer of `id` out; absent if there is none.
  std::optional<offer> take(const std::string& id);
  // Takes the offer of `id` out if `fits(offer)` says so, and calls `taken(offer)` while still
  // holding the book's lock (so that whoever looks for `id` next finds the new owner the callback
  // registers). Returns whether an offer of `id` was there.
  bool hand_over(const std::string& id, const std::function<bool(const offer&)>& fits,
                 const std::function<void(offer&)>& taken);
  // Records that `layer` is ready if the offer of `id` is still in the book; false if not.
  bool mark_ready(const std::string& id, std::uint32_t layer);
  // The offer of `id`, if any, is bound to which node (its entry's address; invalid: unbound).
  std::optional<caf::actor_addr> bound_of(const std::string& id) const;
  // Takes out every offer whose deadline is at or before `now`.
  std::vector<offer> take_expired(clock::time_point now);
  // Takes out every offer bound to `node` (its entry went down).
  std::vector<offer> take_bound_to(const caf::actor_addr& node);
  // The earliest deadline in the book.
  std::optional<clock::time_point> next_deadline() const;
  // Entries of the nodes offers are bound to: `all` every one, else only those first seen since
  // the last call (the sender monitors each once).
  std::vector<caf::actor_addr> bound_nodes(bool all);
  // Takes out every offer and refuses new ones (node::stop).
  std::vector<offer> close();
  std::size_t size() const;

 private:
  using deadline_index = std::multimap<clock::time_point, std::string>;
  struct entry {
    offer o;
    std::optional<deadline_index::iterator> deadline;
  };
  offer take_locked(std::unordered_map<std::string, entry>::iterator it);

  mutable std::mutex mtx_;
  bool closed_ = false;
  std::unordered_map<std::string, entry> offers_;
  deadline_index deadlines_;
  std::unordered_map<caf::actor_addr, std::unordered_set<std::string>> by_bound_;
  std::vector<caf::actor_addr> new_bound_;
};

}  // namespace kvferry
