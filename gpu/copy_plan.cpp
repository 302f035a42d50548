// The host-side planning of copies (copy_plan.hpp).
#include "gpu/copy_plan.hpp"

#include <algorithm>
#include <iterator>
#include <utility>

namespace kvferry::gpu {

namespace {

// [begin, end) of one side of a segment. Sums do not wrap for memory that exists; a range
// that would wrap is clamped so the comparisons below stay meaningful.
struct interval {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

interval range_of(std::uint64_t addr, std::uint64_t bytes) {
  const std::uint64_t end = addr + bytes < addr ? ~std::uint64_t{0} : addr + bytes;
  return interval{addr, end};
}

}  // namespace

std::string check_segments(const std::vector<copy_op>& segments) {
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const auto& s = segments[i];
    const auto bytes = s.dst.bytes;
    if (bytes == 0) continue;
    if (s.dst.addr == 0 || s.src == 0) {
      return "segment " + std::to_string(i) + ": null " + (s.dst.addr == 0 ? "dst" : "src") +
             " with " + std::to_string(bytes) + " bytes";
    }
    const interval d = range_of(s.dst.addr, bytes);
    const interval r = range_of(s.src, bytes);
    if (d.begin < r.end && r.begin < d.end) {
      return "segment " + std::to_string(i) + ": source and destination overlap";
    }
  }
  return {};
}

bool segments_interfere(const std::vector<copy_op>& segments) {
  std::vector<interval> dsts;
  dsts.reserve(segments.size());
  for (const auto& s : segments) {
    if (s.dst.bytes != 0) dsts.push_back(range_of(s.dst.addr, s.dst.bytes));
  }
  if (dsts.size() < 2) return false;  // one segment cannot interfere with itself once checked
  std::sort(dsts.begin(), dsts.end(),
            [](const interval& a, const interval& b) { return a.begin < b.begin; });
  // Sorted by start, some two destinations overlap iff two neighbours do: when a overlaps c,
  // any b between them starts inside a too.
  for (std::size_t i = 1; i < dsts.size(); ++i) {
    if (dsts[i].begin < dsts[i - 1].end) return true;
  }
  // Destinations are now disjoint and sorted, so their ends are sorted too: the only candidate
  // for a source is the first destination ending after the source starts. A hit is always
  // another segment's destination: check_segments() refused a segment overlapping itself.
  for (const auto& s : segments) {
    if (s.dst.bytes == 0) continue;
    const interval r = range_of(s.src, s.dst.bytes);
    auto it = std::upper_bound(dsts.begin(), dsts.end(), r.begin,
                               [](std::uint64_t v, const interval& d) { return v < d.end; });
    if (it != dsts.end() && it->begin < r.end) return true;
  }
  return false;
}

std::vector<planned_segment> coalesce_segments(const std::vector<copy_op>& segments) {
  std::vector<planned_segment> out;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const copy_op& s = segments[i];
    if (s.dst.bytes == 0) continue;
    if (!out.empty()) {
      copy_op& prev = out.back().op;
      const std::uint64_t bytes = prev.dst.bytes;
      if (prev.src + bytes == s.src && prev.dst.addr + bytes == s.dst.addr &&
          bytes + s.dst.bytes > bytes) {
        prev.dst.bytes += s.dst.bytes;
        out.back().last = i;
        continue;
      }
    }
    out.push_back(planned_segment{s, i, i});
  }
  return out;
}

copy_plan plan_copy(const std::vector<copy_op>& segments, const copy_limits& limits) {
  copy_plan plan;
  if (segments_interfere(segments)) {
    plan.ordered = true;
    plan.method = copy_method::memcpy_each;
    for (std::size_t i = 0; i < segments.size(); ++i) {
      if (segments[i].dst.bytes != 0) plan.segments.push_back(planned_segment{segments[i], i, i});
    }
    return plan;
  }
  plan.segments = coalesce_segments(segments);
  if (plan.segments.empty()) {
    plan.method = copy_method::nothing;
  } else if (plan.segments.size() >= limits.kernel_min_segments) {
    plan.method = copy_method::kernel;
  } else {
    plan.method = copy_method::memcpy_each;
  }
  return plan;
}

std::vector<copy_piece> split_pieces(const std::vector<copy_piece>& ranges,
                                     std::uint64_t max_piece_bytes) {
  const std::uint64_t step = max_piece_bytes == 0 ? 1 : max_piece_bytes;
  std::vector<copy_piece> out;
  std::size_t count = 0;
  for (const auto& r : ranges) count += static_cast<std::size_t>((r.bytes + step - 1) / step);
  out.reserve(count);
  for (const auto& r : ranges) {
    for (std::uint64_t done = 0; done < r.bytes; done += step) {
      out.push_back(copy_piece{r.src + done, r.dst + done, std::min(step, r.bytes - done)});
    }
  }
  return out;
}

std::vector<launch_range> split_launches(std::size_t pieces, std::size_t max_per_launch) {
  const std::size_t step = max_per_launch == 0 ? 1 : max_per_launch;
  std::vector<launch_range> out;
  for (std::size_t first = 0; first < pieces; first += step) {
    out.push_back(launch_range{first, std::min(step, pieces - first)});
  }
  return out;
}

bool kernel_can_access(const pointer_info& info, int device) noexcept {
  switch (info.kind) {
    case pointer_kind::pinned_host:
    case pointer_kind::managed:
      return true;
    case pointer_kind::device:
      return info.device == device;
    case pointer_kind::pageable:
      return false;
  }
  return false;
}

bool pointer_resolver::resolve(std::uint64_t addr, pointer_info* out, std::string* error) {
  auto it = known_.upper_bound(addr);
  if (it != known_.begin()) {
    --it;
    if (addr < it->second.end) {
      *out = it->second.info;
      return true;
    }
  }
  pointer_range r;
  std::string why;
  ++lookups_;
  if (!lookup_ || !lookup_(addr, &r, &why)) {
    if (error) *error = why.empty() ? "no lookup for the address" : why;
    return false;
  }
  *out = r.info;
  // An answer whose range does not hold `addr` is not cached: a lookup bug must not spread to
  // other addresses.
  if (r.begin <= addr && addr < r.end) known_[r.begin] = r;
  return true;
}

bool pinned_ranges::add(std::uint64_t begin, std::uint64_t bytes, std::uint64_t device_offset) {
  if (bytes == 0) return false;
  const interval r = range_of(begin, bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  auto next = ranges_.lower_bound(begin);
  if (next != ranges_.end() && next->first < r.end) return false;
  if (next != ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->second.end > begin) return false;
  }
  ranges_.emplace(begin, entry{r.end, device_offset});
  return true;
}

bool pinned_ranges::remove(std::uint64_t begin) {
  std::lock_guard<std::mutex> lock(mutex_);
  return ranges_.erase(begin) == 1;
}

bool pinned_ranges::find(std::uint64_t addr, pointer_range* out) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return false;
  --it;
  if (addr >= it->second.end) return false;
  out->info = pointer_info{pointer_kind::pinned_host, -1, it->second.device_offset};
  out->begin = it->first;
  out->end = it->second.end;
  return true;
}

std::size_t pinned_ranges::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return ranges_.size();
}

}  // namespace kvferry::gpu
