#include "transport/receive_windows.hpp"

#include <algorithm>

namespace kvferry::transport {

receive_windows::receive_windows() {
  std::random_device seed;
  std::seed_seq seq{seed(), seed(), seed(), seed()};
  random_.seed(seq);
}

std::uint64_t receive_windows::open(std::vector<range> ranges, std::function<void()> on_lost) {
  ranges.erase(std::remove_if(ranges.begin(), ranges.end(),
                              [](const range& r) { return r.bytes == 0; }),
               ranges.end());
  std::sort(ranges.begin(), ranges.end(),
            [](const range& a, const range& b) { return a.addr < b.addr; });
  // Adjacent blocks become one range: a sender may write them with one operation.
  std::size_t kept = 0;
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    if (kept > 0 && ranges[kept - 1].addr + ranges[kept - 1].bytes == ranges[i].addr)
      ranges[kept - 1].bytes += ranges[i].bytes;
    else
      ranges[kept++] = ranges[i];
  }
  ranges.resize(kept);
  std::lock_guard<std::mutex> lock(mutex_);
  std::uint64_t token = 0;
  while (token == 0 || windows_.count(token) != 0)
    token = random_();
  windows_.emplace(token, window{std::move(ranges), std::move(on_lost), 0, false, {}});
  return token;
}

void receive_windows::wait_for_copies(std::unique_lock<std::mutex>& lock, std::uint64_t token) {
  // Bounded by the copy engine: the copies of the landing buffers holding this window's
  // messages (device_landing.hpp; handed over by the end of the progress pass that received
  // them) into memory the engine reaches; they end, with an error at worst.
  copies_done_.wait(lock, [&] {
    auto it = windows_.find(token);
    return it == windows_.end() || it->second.copies == 0;
  });
}

bool receive_windows::close(std::uint64_t token, std::string* copy_error) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto it = windows_.find(token);
  if (it == windows_.end() || it->second.closing)
    return false;
  it->second.closing = true;  // nothing new lands from here on
  wait_for_copies(lock, token);
  it = windows_.find(token);
  if (copy_error != nullptr)
    *copy_error = std::move(it->second.copy_error);
  windows_.erase(it);
  return true;
}

std::string receive_windows::settle(std::uint64_t token) {
  std::unique_lock<std::mutex> lock(mutex_);
  wait_for_copies(lock, token);
  auto it = windows_.find(token);
  return it == windows_.end() ? std::string{} : it->second.copy_error;
}

void receive_windows::copy_finished(std::uint64_t token, const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = windows_.find(token);
    if (it == windows_.end())
      return;  // cannot happen: a window with copies under way is not erased
    --it->second.copies;
    if (!error.empty() && it->second.copy_error.empty())
      it->second.copy_error = error;
  }
  copies_done_.notify_all();
}

bool receive_windows::is_open(std::uint64_t token) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = windows_.find(token);
  return token != 0 && it != windows_.end() && !it->second.closing;
}

std::size_t receive_windows::lose_all() {
  std::unordered_map<std::uint64_t, window> lost;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    // A window a close() is already waiting on is left to that close.
    std::vector<std::uint64_t> tokens;
    for (auto& [token, w] : windows_) {
      if (!w.closing) {
        w.closing = true;
        tokens.push_back(token);
      }
    }
    copies_done_.wait(lock, [&] {
      return std::all_of(tokens.begin(), tokens.end(),
                         [&](std::uint64_t t) { return windows_.at(t).copies == 0; });
    });
    for (std::uint64_t t : tokens) {
      auto it = windows_.find(t);
      lost.emplace(t, std::move(it->second));
      windows_.erase(it);
    }
  }
  for (auto& [token, w] : lost) {
    if (w.on_lost) {
      try {
        w.on_lost();
      } catch (...) {
        // One receive's failure to hear of it must not keep the others from hearing.
      }
    }
  }
  return lost.size();
}

std::size_t receive_windows::open_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<std::size_t>(std::count_if(
    windows_.begin(), windows_.end(), [](const auto& entry) { return !entry.second.closing; }));
}

bool receive_windows::inside(std::uint64_t token, std::uint64_t addr, std::uint64_t bytes) const {
  if (token == 0 || bytes == 0 || addr + bytes < addr)
    return false;
  auto it = windows_.find(token);
  if (it == windows_.end() || it->second.closing)
    return false;
  const auto& ranges = it->second.ranges;
  // The last range starting at or below addr is the only one that can hold it whole (a
  // receive's destination blocks do not overlap; if a caller's did, this may refuse, never
  // accept, a write).
  auto after = std::upper_bound(ranges.begin(), ranges.end(), addr,
                                [](std::uint64_t a, const range& r) { return a < r.addr; });
  if (after == ranges.begin())
    return false;
  const range& r = *std::prev(after);
  return addr - r.addr <= r.bytes && bytes <= r.bytes - (addr - r.addr);
}

}  // namespace kvferry::transport
