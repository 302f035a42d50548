#include "actors/transfer_plan.hpp"

#include "transport/wire_check.hpp"

#include <algorithm>

namespace kvferry {

result<std::uint64_t> count_ranges(const std::vector<std::uint32_t>& ranges,
                                   std::uint64_t offered) {
  using out_t = std::uint64_t;
  if (ranges.size() % 2 != 0)
    return result<out_t>{errc::malformed_message, "block ranges come as (first, count) pairs"};
  std::uint64_t next_free = 0;  // the first index a range may start at (ascending, disjoint)
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < ranges.size(); i += 2) {
    std::uint64_t first = ranges[i], count = ranges[i + 1];
    auto which = "block range " + std::to_string(i / 2) + " [" + std::to_string(first) + ", +" +
                 std::to_string(count) + ")";
    if (count == 0)
      return result<out_t>{errc::invalid_argument, which + " is empty"};
    if (first < next_free)
      return result<out_t>{errc::invalid_argument,
                           which + " overlaps or precedes the range before it"};
    if (first + count > offered)
      return result<out_t>{errc::out_of_range,
                           which + " lies outside the " + std::to_string(offered) +
                             " blocks offered"};
    next_free = first + count;
    total += count;
  }
  return total;
}

result<std::vector<desc>> select_blocks(const std::vector<desc>& source,
                                        const std::vector<std::uint32_t>& ranges) {
  if (ranges.empty())
    return source;
  auto total = count_ranges(ranges, source.size());
  if (!total)
    return result<std::vector<desc>>{total.error()};
  std::vector<desc> out;
  out.reserve(total.value());
  for (std::size_t i = 0; i < ranges.size(); i += 2)
    out.insert(out.end(), source.begin() + ranges[i], source.begin() + ranges[i] + ranges[i + 1]);
  return out;
}

std::optional<error_info> check_destination(const destination& dst, const fetch_limits& limits) {
  auto refuse = [](errc code, std::string msg) { return error_info{code, std::move(msg)}; };
  const auto& id = dst.request_id;
  if (id.empty())
    return refuse(errc::malformed_message, "a fetch carries no request id");
  if (id.size() > limits.max_request_id_bytes)
    return refuse(errc::limit_exceeded, "a fetch's request id has " + std::to_string(id.size()) +
                                          " bytes, more than the " +
                                          std::to_string(limits.max_request_id_bytes) +
                                          " allowed (max_request_id_bytes)");
  const auto fetch = "fetch for '" + id + "'";
  if (dst.blocks.empty())
    return refuse(errc::malformed_message, fetch + " names no destination block");
  if (dst.blocks.size() > limits.max_blocks)
    return refuse(errc::limit_exceeded, fetch + " names " + std::to_string(dst.blocks.size()) +
                                          " blocks, more than the " +
                                          std::to_string(limits.max_blocks) +
                                          " allowed (max_blocks_per_request)");
  if (dst.ranges.size() % 2 != 0 || dst.ranges.size() / 2 > dst.blocks.size())
    return refuse(errc::malformed_message,
                  fetch + " carries " + std::to_string(dst.ranges.size()) +
                    " range numbers: (first, count) pairs, at most one per block");
  if (dst.epoch == 0)
    return refuse(errc::stale_epoch, fetch + " carries no node epoch");
  if (dst.worker_address.empty())
    return refuse(errc::malformed_message, fetch + " carries no worker address");
  const auto rkeys = dst.rkeys.size();
  if (rkeys == 0 || rkeys > dst.blocks.size())
    return refuse(errc::malformed_message, fetch + " carries " + std::to_string(rkeys) +
                                             " rkeys for " + std::to_string(dst.blocks.size()) +
                                             " blocks");
  if (dst.region_bases.size() != rkeys || dst.region_bytes.size() != rkeys)
    return refuse(errc::malformed_message, fetch + " describes " +
                                             std::to_string(dst.region_bases.size()) +
                                             " regions for " + std::to_string(rkeys) + " rkeys");
  for (std::size_t i = 0; i < dst.blocks.size(); ++i) {
    const auto& to = dst.blocks[i];
    const auto block = "block " + std::to_string(i) + " of '" + id + "'";
    if (to.bytes == 0)
      return refuse(errc::malformed_message, block + " is empty");
    if (to.key >= rkeys)
      return refuse(errc::malformed_message, block + " names rkey " + std::to_string(to.key) +
                                               " of " + std::to_string(rkeys));
    auto base = dst.region_bases[to.key];
    auto size = dst.region_bytes[to.key];
    if (to.addr < base || to.addr - base > size || to.bytes > size - (to.addr - base))
      return refuse(errc::out_of_range, block + " lies outside its destination region");
  }
  return std::nullopt;
}

std::optional<error_info> check_fetch(const destination& dst, const fetch_limits& limits) {
  if (auto bad = check_destination(dst, limits))
    return bad;
  const auto fetch = "fetch for '" + dst.request_id + "'";
  if (auto why = transport::check_worker_address(dst.worker_address.data(),
                                                 dst.worker_address.size()))
    return error_info{errc::malformed_message, fetch + ": unusable worker address: " + *why};
  for (std::size_t k = 0; k < dst.rkeys.size(); ++k)
    if (auto why = transport::check_packed_rkey(dst.rkeys[k].data(), dst.rkeys[k].size(),
                                                dst.worker_address.data(),
                                                dst.worker_address.size()))
      return error_info{errc::malformed_message,
                        fetch + ": rkey " + std::to_string(k) + " is unusable: " + *why};
  return std::nullopt;
}

result<std::vector<copy_op>> plan_puts(const std::vector<desc>& source, const destination& dst) {
  auto layers = plan_layer_puts(
    source, {static_cast<std::uint32_t>(std::min<std::size_t>(source.size(), UINT32_MAX))}, dst);
  if (!layers)
    return result<std::vector<copy_op>>{layers.error()};
  return std::move(layers.value().front());
}

result<std::vector<std::vector<copy_op>>> plan_layer_puts(
  const std::vector<desc>& source, const std::vector<std::uint32_t>& layer_sizes,
  const destination& dst) {
  using out_type = result<std::vector<std::vector<copy_op>>>;
  const auto& id = dst.request_id;
  if (dst.blocks.size() != source.size())
    return out_type{errc::size_mismatch, "fetch for '" + id + "' names " +
                                           std::to_string(dst.blocks.size()) +
                                           " destination blocks, the sender has " +
                                           std::to_string(source.size())};
  std::uint64_t total = 0;
  for (auto n : layer_sizes)
    total += n;
  if (total != source.size())
    return out_type{errc::internal_error, "the layers of '" + id + "' hold " +
                                            std::to_string(total) + " of its " +
                                            std::to_string(source.size()) + " blocks"};
  std::vector<std::vector<copy_op>> out(layer_sizes.size());
  std::size_t i = 0;
  for (std::size_t layer = 0; layer < layer_sizes.size(); ++layer) {
    auto& ops = out[layer];
    for (std::uint32_t k = 0; k < layer_sizes[layer]; ++k, ++i) {
      const auto& to = dst.blocks[i];
      if (to.bytes != source[i].bytes)
        return out_type{errc::size_mismatch, "block " + std::to_string(i) + " of '" + id +
                                               "': destination has " + std::to_string(to.bytes) +
                                               " bytes, source " +
                                               std::to_string(source[i].bytes)};
      if (!ops.empty()) {
        auto& last = ops.back();
        if (last.dst.key == to.key && last.src + last.dst.bytes == source[i].addr &&
            last.dst.addr + last.dst.bytes == to.addr) {
          last.dst.bytes += to.bytes;
          continue;
        }
      }
      ops.push_back(copy_op{source[i].addr, to});
    }
  }
  return out;
}

std::vector<std::uint32_t> selected_per_layer(const std::vector<std::uint32_t>& layer_blocks,
                                              const std::vector<std::uint32_t>& ranges,
                                              std::uint64_t offered) {
  std::vector<std::uint64_t> ends;  // one past each layer's last offered block
  std::uint64_t end = 0;
  for (auto n : layer_blocks)
    ends.push_back(end += n);
  if (ends.empty())
    ends.push_back(offered);
  std::vector<std::uint32_t> out(ends.size(), 0);
  auto count = [&](std::uint64_t first, std::uint64_t n) {
    // Ranges ascend, so the layer index only moves forward; a range may span several layers.
    std::size_t layer = std::upper_bound(ends.begin(), ends.end(), first) - ends.begin();
    while (n > 0 && layer < ends.size()) {
      auto here = std::min(n, ends[layer] - first);
      out[layer] += static_cast<std::uint32_t>(here);
      first += here;
      n -= here;
      ++layer;
    }
  };
  if (ranges.empty())
    count(0, offered);
  for (std::size_t i = 0; i + 1 < ranges.size(); i += 2)
    count(ranges[i], ranges[i + 1]);
  return out;
}

result<std::vector<std::vector<copy_op>>> plan_fetch(const std::vector<desc>& source,
                                                     const std::vector<std::uint32_t>& layer_blocks,
                                                     const destination& dst) {
  auto selected = select_blocks(source, dst.ranges);
  if (!selected)
    return {selected.error()};
  return plan_layer_puts(selected.value(),
                         selected_per_layer(layer_blocks, dst.ranges, source.size()), dst);
}

std::optional<error_info> check_layers(const std::vector<std::uint32_t>& layer_blocks,
                                       std::uint64_t offered) {
  if (layer_blocks.empty())
    return std::nullopt;
  if (layer_blocks.size() > max_layers)
    return error_info{errc::invalid_argument,
                      std::to_string(layer_blocks.size()) + " layers, more than the " +
                        std::to_string(max_layers) + " allowed"};
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < layer_blocks.size(); ++i) {
    if (layer_blocks[i] == 0)
      return error_info{errc::invalid_argument, "layer " + std::to_string(i) + " has no blocks"};
    sum += layer_blocks[i];
  }
  if (sum != offered)
    return error_info{errc::invalid_argument,
                      "the layers hold " + std::to_string(sum) + " blocks, the send offers " +
                        std::to_string(offered)};
  return std::nullopt;
}

staged_chunk next_chunk(const std::vector<copy_op>& ops, std::size_t& next, std::uint64_t& offset,
                        const desc& staging) {
  staged_chunk out;
  std::uint64_t used = 0;
  while (next < ops.size() && used < staging.bytes) {
    const auto& op = ops[next];
    auto n = std::min(op.dst.bytes - offset, staging.bytes - used);
    out.copies.push_back(copy_op{op.src + offset, desc{staging.addr + used, n, 0}});
    out.puts.push_back(copy_op{staging.addr + used, desc{op.dst.addr + offset, n, op.dst.key}});
    used += n;
    offset += n;
    if (offset == op.dst.bytes) {
      ++next;
      offset = 0;
    }
  }
  return out;
}

}  // namespace kvferry
