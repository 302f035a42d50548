#include "actors/region_table.hpp"

#include <algorithm>
#include <mutex>
#include <string>

namespace kvferry {

region_id region_table::add(region_info r) {
  std::unique_lock<std::shared_mutex> guard{mtx_};
  regions_.push_back(std::move(r));
  return static_cast<region_id>(regions_.size());
}

region_info region_table::find(region_id id) const {
  std::shared_lock<std::shared_mutex> guard{mtx_};
  if (id == 0 || id > regions_.size())
    return {};
  return regions_[id - 1];
}

result<std::vector<desc>> region_table::resolve(const std::vector<block_span>& blocks) const {
  using out_t = std::vector<desc>;
  if (blocks.empty())
    return result<out_t>{errc::invalid_argument, "a transfer needs at least one block"};
  if (blocks.size() > max_blocks_)
    return result<out_t>{errc::invalid_argument,
                         "request has " + std::to_string(blocks.size()) +
                           " blocks, more than max_blocks_per_request (" +
                           std::to_string(max_blocks_) + ")"};
  out_t out;
  out.reserve(blocks.size());
  std::shared_lock<std::shared_mutex> guard{mtx_};
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const auto& b = blocks[i];
    if (b.region == 0 || b.region > regions_.size())
      return result<out_t>{errc::unknown_region, "block " + std::to_string(i) +
                                                   " names unknown region " +
                                                   std::to_string(b.region)};
    const auto& reg = regions_[b.region - 1];
    if (b.bytes == 0)
      return result<out_t>{errc::invalid_argument,
                           "block " + std::to_string(i) + " is empty (0 bytes)"};
    if (b.offset > reg.bytes || b.bytes > reg.bytes - b.offset)
      return result<out_t>{errc::out_of_range,
                           "block " + std::to_string(i) + " [" + std::to_string(b.offset) +
                             ", +" + std::to_string(b.bytes) + ") lies outside region " +
                             std::to_string(b.region) + " of " + std::to_string(reg.bytes) +
                             " bytes"};
    out.push_back(desc{reg.base + b.offset, b.bytes, b.region});
  }
  return out;
}

std::optional<error_info> region_table::find_overlap(const std::vector<desc>& blocks) {
  std::vector<std::size_t> order(blocks.size());
  for (std::size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return blocks[a].addr != blocks[b].addr ? blocks[a].addr < blocks[b].addr : a < b;
  });
  // Sorted by start: a block overlaps an earlier one iff it starts before the furthest end so far.
  std::size_t furthest = 0;
  for (std::size_t k = 1; k < order.size(); ++k) {
    const auto& far = blocks[order[furthest]];
    const auto& cur = blocks[order[k]];
    if (cur.addr < far.addr + far.bytes) {
      auto a = std::min(order[furthest], order[k]), b = std::max(order[furthest], order[k]);
      return error_info{errc::invalid_argument,
                        "destination blocks " + std::to_string(a) + " and " + std::to_string(b) +
                          " overlap (each byte may be written by one block only)"};
    }
    if (cur.addr + cur.bytes > far.addr + far.bytes)
      furthest = k;
  }
  return std::nullopt;
}

indexed_regions region_table::index_regions(std::vector<desc>& blocks) const {
  indexed_regions out;
  std::vector<std::uint32_t> ids;  // region id per index: a handful
  std::shared_lock<std::shared_mutex> guard{mtx_};
  for (auto& b : blocks) {
    auto pos = std::find(ids.begin(), ids.end(), b.key);
    if (pos == ids.end()) {
      const auto& reg = regions_.at(b.key - 1);  // resolved blocks name known regions
      ids.push_back(b.key);
      out.rkeys.push_back(reg.packed_rkey);
      out.bases.push_back(reg.base);
      out.bytes.push_back(reg.bytes);
      out.any_mappable = out.any_mappable || reg.mappable;
      pos = ids.end() - 1;
    }
    b.key = static_cast<std::uint32_t>(pos - ids.begin());
  }
  return out;
}

bool region_table::any_of_kind(const std::vector<desc>& blocks, memory_kind kind) const {
  std::shared_lock<std::shared_mutex> guard{mtx_};
  return std::any_of(blocks.begin(), blocks.end(),
                     [&](const desc& b) { return regions_.at(b.key - 1).kind == kind; });
}

}  // namespace kvferry
