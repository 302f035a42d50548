// held_requests: requests a node holds as state, not as one actor each, until something takes
// them out: sends no peer has fetched yet (offer_book.hpp) and receives waiting for admission
// (admission_queue.hpp). A CAF actor alone costs about 1.5 KiB; a node may hold 100,000 requests.
//
// Each entry holds the request's owner (request_owner: the one exit path) and what its actor
// will be spawned with. Whoever takes an entry out, under the lock, owns the request from then
// on, exactly once: it ends it (end_held) or moves the owner into a new actor. A take that
// hands the owner to an actor runs its callback under the lock, so that whoever looks for the
// id next (cancel(), layer_ready()) finds the actor the callback registered.
//
// Kept in arrival order (the admission queue serves the oldest first), by id, and by deadline
// (the actor clock's time line; a sweep takes out what passed). `Index` is told of every entry
// added and removed, under the lock (the book indexes offers by bound node). Thread-safe.
#pragma once

#include "actors/request_lifecycle.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kvferry {

template <class Spec>
struct held_request {
  std::unique_ptr<request_owner> owner;  // the request's exit path (its token set when taken over)
  Spec spec;                             // what its actor will be spawned with
  std::optional<std::chrono::steady_clock::time_point> deadline;  // absent: none
};

// A new held request of `spec` (its owner made here: the request counts as started), made at
// `now` on the actor clock's time line (its deadline from spec.ctx.deadline_ms; 0: none).
template <class Spec>
held_request<Spec> make_held(Spec spec, request_side side,
                             std::chrono::steady_clock::time_point now) {
  held_request<Spec> h;
  h.owner = std::make_unique<request_owner>(spec.ctx, side, 0);
  if (spec.ctx.deadline_ms > 0)
    h.deadline = now + std::chrono::milliseconds{spec.ctx.deadline_ms};
  h.spec = std::move(spec);
  return h;
}

// Ends a request taken out while held: `r` is its terminal result, and it is released (nothing
// of its memory was exposed to a peer).
template <class Spec>
void end_held(held_request<Spec> h, transfer_result r) {
  h.owner->conclude(std::move(r), true);
}

struct no_index {
  template <class Entry>
  void added(const std::string&, const Entry&) {}
  template <class Entry>
  void removed(const std::string&, const Entry&) {}
};

template <class Spec, class Index = no_index>
class held_requests {
 public:
  using entry = held_request<Spec>;
  using clock = std::chrono::steady_clock;

  // Holds `e` under its request id, last in line; false (and `e` untouched) once closed or if
  // the id is held already.
  bool add(entry& e) {
    const std::string& id = e.owner->id();
    std::lock_guard<std::mutex> guard{mtx_};
    if (closed_ || slots_.count(id) > 0)
      return false;
    auto pos = order_.insert(order_.end(), id);
    auto& s = slots_[id];
    s.pos = pos;
    if (e.deadline)
      s.deadline = deadlines_.emplace(*e.deadline, id);
    index_.added(id, e);
    s.e = std::move(e);
    return true;
  }
  // Takes the request `id` out; absent if it is not held.
  std::optional<entry> take(const std::string& id) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto it = slots_.find(id);
    if (it == slots_.end())
      return std::nullopt;
    return take_locked(it);
  }
  // Takes `id` out if `fits(entry)` says so, and calls `taken(entry)` under the lock. Returns
  // whether `id` was held.
  bool take_if(const std::string& id, const std::function<bool(const entry&)>& fits,
               const std::function<void(entry&)>& taken) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto it = slots_.find(id);
    if (it == slots_.end())
      return false;
    if (fits(it->second.e)) {
      auto e = take_locked(it);
      taken(e);
    }
    return true;
  }
  // Takes the oldest out and calls `taken(entry)` under the lock; false if none is held.
  bool take_front(const std::function<void(entry&)>& taken) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (order_.empty())
      return false;
    auto e = take_locked(slots_.find(order_.front()));
    taken(e);
    return true;
  }
  // Runs `f(entry&)` on `id` under the lock; false if it is not held.
  bool update(const std::string& id, const std::function<void(entry&)>& f) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto it = slots_.find(id);
    if (it == slots_.end())
      return false;
    f(it->second.e);
    return true;
  }
  // Takes out every request whose deadline is at or before `now`.
  std::vector<entry> take_expired(clock::time_point now) {
    std::lock_guard<std::mutex> guard{mtx_};
    std::vector<entry> out;
    while (!deadlines_.empty() && deadlines_.begin()->first <= now)
      out.push_back(take_locked(slots_.find(deadlines_.begin()->second)));
    return out;
  }
  // Takes out the requests the index names (`pick(index)` returns their ids, under the lock).
  template <class Pick>
  std::vector<entry> take_picked(Pick pick) {
    std::lock_guard<std::mutex> guard{mtx_};
    std::vector<entry> out;
    for (const auto& id : pick(index_))
      if (auto it = slots_.find(id); it != slots_.end())
        out.push_back(take_locked(it));
    return out;
  }
  // Reads (or changes) the index under the lock.
  template <class F>
  auto with_index(F f) {
    std::lock_guard<std::mutex> guard{mtx_};
    return f(index_);
  }
  // The earliest deadline held.
  std::optional<clock::time_point> next_deadline() const {
    std::lock_guard<std::mutex> guard{mtx_};
    if (deadlines_.empty())
      return std::nullopt;
    return deadlines_.begin()->first;
  }
  // Takes every request out and refuses new ones (node::stop).
  std::vector<entry> close() {
    std::lock_guard<std::mutex> guard{mtx_};
    closed_ = true;
    std::vector<entry> out;
    out.reserve(slots_.size());
    while (!order_.empty())
      out.push_back(take_locked(slots_.find(order_.front())));
    return out;
  }
  std::size_t size() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return slots_.size();
  }

 private:
  using deadline_index = std::multimap<clock::time_point, std::string>;
  struct slot {
    entry e;
    typename std::list<std::string>::iterator pos;
    std::optional<typename deadline_index::iterator> deadline;
  };
  using slot_map = std::unordered_map<std::string, slot>;

  entry take_locked(typename slot_map::iterator it) {
    auto& s = it->second;
    index_.removed(it->first, s.e);
    if (s.deadline)
      deadlines_.erase(*s.deadline);
    order_.erase(s.pos);
    auto out = std::move(s.e);
    slots_.erase(it);
    return out;
  }

  mutable std::mutex mtx_;
  bool closed_ = false;
  std::list<std::string> order_;  // ids, oldest first
  slot_map slots_;
  deadline_index deadlines_;
  Index index_;
};

}  // namespace kvferry
