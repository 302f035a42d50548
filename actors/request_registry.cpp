#include "actors/request_registry.hpp"

#include <algorithm>
#include <utility>

namespace kvferry {

namespace {
constexpr std::size_t recent_capacity = 4096;  // finished ids remembered for cancel()
}

bool request_registry::reserve(const std::string& id,
                               std::shared_ptr<detail::handle_state> handle) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto added = entries_.emplace(id, entry{std::move(handle), caf::actor{}}).second;
  if (added && recent_finished_.erase(id) > 0)
    recent_order_.erase(std::find(recent_order_.begin(), recent_order_.end(), id));
  return added;
}

void request_registry::attach_owner(const std::string& id, caf::actor owner, bool sends) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = entries_.find(id);
  if (it != entries_.end()) {
    it->second.owner = std::move(owner);
    it->second.sends = sends;
  }
}

caf::actor request_registry::send_owner_of(const std::string& id) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = entries_.find(id);
  return it != entries_.end() && it->second.sends ? it->second.owner : caf::actor{};
}

std::shared_ptr<detail::handle_state> request_registry::send_handle_of(const std::string& id,
                                                                      caf::actor* owner) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = entries_.find(id);
  if (it == entries_.end() || !it->second.sends)
    return nullptr;
  *owner = it->second.owner;
  return it->second.handle;
}

caf::actor request_registry::owner_of(const std::string& id, bool* recently_finished) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = entries_.find(id);
  if (recently_finished)
    *recently_finished = recent_finished_.count(id) > 0;
  return it == entries_.end() ? caf::actor{} : it->second.owner;
}

bool request_registry::registered(const std::string& id) const {
  std::lock_guard<std::mutex> guard{mtx_};
  return entries_.count(id) > 0;
}

void request_registry::unregister(const std::string& id, const detail::handle_state* handle) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.handle.get() != handle)
    return;
  entries_.erase(it);
  if (recent_finished_.insert(id).second) {
    recent_order_.push_back(id);
    if (recent_order_.size() > recent_capacity) {
      recent_finished_.erase(recent_order_.front());
      recent_order_.pop_front();
    }
  }
}

std::vector<caf::actor> request_registry::all_owners() const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<caf::actor> out;
  for (auto& kv : entries_)
    if (kv.second.owner)
      out.push_back(kv.second.owner);
  return out;
}

void request_registry::quarantine(std::shared_ptr<detail::handle_state> handle) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto key = handle.get();
  quarantined_.emplace(key, std::move(handle));
}

bool request_registry::leave_quarantine(const detail::handle_state* handle) {
  std::lock_guard<std::mutex> guard{mtx_};
  return quarantined_.erase(handle) > 0;
}

std::vector<std::shared_ptr<detail::handle_state>> request_registry::take_quarantined() {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<std::shared_ptr<detail::handle_state>> out;
  out.reserve(quarantined_.size());
  for (auto& kv : quarantined_)
    out.push_back(std::move(kv.second));
  quarantined_.clear();
  return out;
}

}  // namespace kvferry
