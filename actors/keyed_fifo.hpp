// keyed_fifo: a first-come-first-served queue whose entries can also leave from the middle, by
// key, in O(1) however long the queue is (a send whose wait for a staging slot expired). A plain
// deque searched on every departure made each departure cost O(queue), and 100,000 waiting
// requests quadratic. No CAF here.
#pragma once

#include <cstddef>
#include <list>
#include <optional>
#include <unordered_map>
#include <utility>

namespace kvferry {

template <class Key, class Value, class Hash = std::hash<Key>>
class keyed_fifo {
 public:
  // Appends; false (and nothing changes) if `key` is queued already.
  bool push_back(const Key& key, Value value) {
    if (index_.count(key) > 0)
      return false;
    index_.emplace(key, order_.insert(order_.end(), entry{key, std::move(value)}));
    return true;
  }
  // Takes the oldest entry out; nullopt when empty.
  std::optional<std::pair<Key, Value>> pop_front() {
    if (order_.empty())
      return std::nullopt;
    auto e = std::move(order_.front());
    order_.pop_front();
    index_.erase(e.key);
    return std::make_pair(std::move(e.key), std::move(e.value));
  }
  // Takes `key`'s entry out, wherever it is; nullopt if it is not queued.
  std::optional<Value> erase(const Key& key) {
    auto it = index_.find(key);
    if (it == index_.end())
      return std::nullopt;
    auto value = std::move(it->second->value);
    order_.erase(it->second);
    index_.erase(it);
    return value;
  }
  bool contains(const Key& key) const { return index_.count(key) > 0; }
  bool empty() const noexcept { return order_.empty(); }
  std::size_t size() const noexcept { return order_.size(); }

 private:
  struct entry {
    Key key;
    Value value;
  };
  std::list<entry> order_;
  std::unordered_map<Key, typename std::list<entry>::iterator, Hash> index_;
};

}  // namespace kvferry
