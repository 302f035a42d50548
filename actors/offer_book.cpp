#include "actors/offer_book.hpp"

#include "actors/request_lifecycle.hpp"

#include <algorithm>
#include <utility>

namespace kvferry {

offer make_offer(send_spec spec, std::chrono::steady_clock::time_point now) {
  offer o;
  o.owner = std::make_unique<request_owner>(spec.ctx, request_side::send, 0);
  if (spec.ctx.deadline_ms > 0)
    o.deadline = now + std::chrono::milliseconds{spec.ctx.deadline_ms};
  o.spec = std::move(spec);
  return o;
}

void end_offer(offer o, transfer_result r) {
  o.owner->conclude(std::move(r), true);
}

offer_book::offer_book() = default;
offer_book::~offer_book() = default;

bool offer_book::add(offer& o) {
  const auto& id = o.owner->id();
  std::lock_guard<std::mutex> guard{mtx_};
  if (closed_)
    return false;
  auto [it, added] = offers_.try_emplace(id);
  if (!added)  // not expected: the registry reserved the id for this request
    return false;
  auto& e = it->second;
  if (o.deadline)
    e.deadline = deadlines_.emplace(*o.deadline, id);
  if (auto bound = o.spec.bound_to.address()) {
    auto& ids = by_bound_[bound];
    if (ids.empty())
      new_bound_.push_back(bound);
    ids.insert(id);
  }
  e.o = std::move(o);
  return true;
}

offer offer_book::take_locked(std::unordered_map<std::string, entry>::iterator it) {
  auto& e = it->second;
  if (e.deadline)
    deadlines_.erase(*e.deadline);
  if (auto bound = e.o.spec.bound_to.address()) {
    if (auto b = by_bound_.find(bound); b != by_bound_.end()) {
      b->second.erase(it->first);
      if (b->second.empty())
        by_bound_.erase(b);
    }
  }
  auto out = std::move(e.o);
  offers_.erase(it);
  return out;
}

std::optional<offer> offer_book::take(const std::string& id) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = offers_.find(id);
  if (it == offers_.end())
    return std::nullopt;
  return take_locked(it);
}

bool offer_book::hand_over(const std::string& id, const std::function<bool(const offer&)>& fits,
                           const std::function<void(offer&)>& taken) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = offers_.find(id);
  if (it == offers_.end())
    return false;
  if (fits(it->second.o)) {
    auto o = take_locked(it);
    taken(o);
  }
  return true;
}

bool offer_book::mark_ready(const std::string& id, std::uint32_t layer) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = offers_.find(id);
  if (it == offers_.end())
    return false;
  it->second.o.spec.ready_layers.push_back(layer);
  return true;
}

std::optional<caf::actor_addr> offer_book::bound_of(const std::string& id) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = offers_.find(id);
  if (it == offers_.end())
    return std::nullopt;
  return it->second.o.spec.bound_to.address();
}

std::vector<offer> offer_book::take_expired(clock::time_point now) {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<offer> out;
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    auto it = offers_.find(deadlines_.begin()->second);
    if (it == offers_.end()) {  // not expected: every take erases its deadline
      deadlines_.erase(deadlines_.begin());
      continue;
    }
    out.push_back(take_locked(it));
  }
  return out;
}

std::vector<offer> offer_book::take_bound_to(const caf::actor_addr& node) {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<offer> out;
  auto b = by_bound_.find(node);
  if (b == by_bound_.end())
    return out;
  auto ids = std::move(b->second);
  by_bound_.erase(b);
  for (auto& id : ids)
    if (auto it = offers_.find(id); it != offers_.end())
      out.push_back(take_locked(it));
  return out;
}

std::optional<offer_book::clock::time_point> offer_book::next_deadline() const {
  std::lock_guard<std::mutex> guard{mtx_};
  if (deadlines_.empty())
    return std::nullopt;
  return deadlines_.begin()->first;
}

std::vector<caf::actor_addr> offer_book::bound_nodes(bool all) {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<caf::actor_addr> out;
  if (all) {
    out.reserve(by_bound_.size());
    for (auto& kv : by_bound_)
      out.push_back(kv.first);
  } else {
    out.swap(new_bound_);
  }
  new_bound_.clear();
  return out;
}

std::vector<offer> offer_book::close() {
  std::lock_guard<std::mutex> guard{mtx_};
  closed_ = true;
  std::vector<offer> out;
  out.reserve(offers_.size());
  while (!offers_.empty())
    out.push_back(take_locked(offers_.begin()));
  new_bound_.clear();
  return out;
}

std::size_t offer_book::size() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return offers_.size();
}

}  // namespace kvferry
