#include "cli/workload.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>

namespace kvferry::cli {

namespace {

std::uint64_t mix(std::uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A multiplier coprime with n, derived from salt: i -> (i * m + salt) mod n is a permutation.
std::uint64_t permute(std::uint64_t i, std::uint64_t n, std::uint64_t salt) {
  std::uint64_t m = (mix(salt) % n) | 1;
  while (std::gcd(m, n) != 1)
    m += 2;
  return (i * m + mix(salt + 1)) % n;
}

// The 8-byte word `w` of (request, layer).
std::uint64_t word(std::uint64_t seed, std::uint32_t request, std::uint32_t layer, std::uint64_t w) {
  return mix(seed ^ (std::uint64_t{request} << 40) ^ (std::uint64_t{layer} << 24) ^ w);
}

}  // namespace

std::string workload::request_id(std::uint32_t i) const {
  return "req-" + std::to_string(seed) + "-" + std::to_string(i);
}

std::uint64_t workload::source_block(std::uint32_t request, std::uint32_t layer) const {
  return permute(std::uint64_t{request} * layers + layer, blocks(), seed * 2 + 11);
}

std::uint64_t workload::destination_block(std::uint32_t request, std::uint32_t layer) const {
  return permute(std::uint64_t{request} * layers + layer, blocks(), seed * 2 + 12);
}

std::vector<block_span> workload::source_spans(region_id r, std::uint32_t request) const {
  std::vector<block_span> out;
  for (std::uint32_t l = 0; l < layers; ++l)
    out.push_back(block_span{r, source_block(request, l) * block_bytes, block_bytes});
  return out;
}

std::vector<block_span> workload::destination_spans(region_id r, std::uint32_t request) const {
  std::vector<block_span> out;
  for (std::uint32_t l = 0; l < layers; ++l)
    out.push_back(block_span{r, destination_block(request, l) * block_bytes, block_bytes});
  return out;
}

void workload::fill_source(void* pool) const {
  auto* base = static_cast<unsigned char*>(pool);
  for (std::uint32_t i = 0; i < requests; ++i) {
    for (std::uint32_t l = 0; l < layers; ++l) {
      auto* blk = base + source_block(i, l) * block_bytes;
      for (std::uint64_t off = 0; off < block_bytes; off += 8) {
        auto v = word(seed, i, l, off / 8);
        // A constant size for whole words: an inlined store, not a call (a sanitizer
        // intercepts every memcpy call, and a pool holds hundreds of millions of words).
        if (block_bytes - off >= 8)
          std::memcpy(blk + off, &v, 8);
        else
          std::memcpy(blk + off, &v, block_bytes - off);
      }
    }
  }
}

std::uint64_t workload::verify_destination(const void* pool, std::uint32_t request) const {
  auto* base = static_cast<const unsigned char*>(pool);
  std::uint64_t good = 0;
  for (std::uint32_t l = 0; l < layers; ++l) {
    auto* blk = base + destination_block(request, l) * block_bytes;
    for (std::uint64_t off = 0; off < block_bytes; off += 8) {
      auto v = word(seed, request, l, off / 8);
      if (block_bytes - off >= 8) {  // whole words by value, as fill_source writes them
        std::uint64_t got;
        std::memcpy(&got, blk + off, 8);
        good += got == v ? 8 : 0;
        continue;
      }
      auto n = block_bytes - off;
      if (std::memcmp(blk + off, &v, n) == 0)
        good += n;
    }
  }
  return good;
}

result<pool_memory> make_pool(node& n, const std::string& kind, std::size_t bytes) {
  pool_memory p;
  p.bytes = bytes;
  if (kind == "engine") {
    p.owned.resize(bytes);
    p.base = p.owned.data();
    auto r = n.register_region(p.base, bytes);
    if (!r)
      return result<pool_memory>{r.error()};
    p.region = r.value();
  } else if (kind == "cuda") {
    auto buffer = gpu::allocate_device_buffer(bytes, n.config().device);
    if (!buffer)
      return result<pool_memory>{buffer.error()};
    p.device = std::move(buffer.value());
    p.owned.assign(bytes, 0);
    p.base = p.owned.data();
    if (auto e = push_to_device(p); e.code != errc::none)
      return result<pool_memory>{e};
    auto r = n.register_region(p.device->data(), bytes, memory_kind::cuda);
    if (!r)
      return result<pool_memory>{r.error()};
    p.region = r.value();
  } else {
    auto r = n.allocate_region(bytes);
    if (!r)
      return result<pool_memory>{r.error()};
    p.region = r.value();
    p.base = n.region_base(p.region);
  }
  return p;
}

error_info push_to_device(const pool_memory& p) {
  return p.device ? p.device->write(0, p.base, p.bytes) : error_info{};
}

error_info pull_from_device(const pool_memory& p) {
  return p.device ? p.device->read(0, p.base, p.bytes) : error_info{};
}

result<pool_memory*> pool_cache::take(std::uint64_t bytes) {
  for (auto& e : entries_) {
    if (e.taken || e.memory->bytes < bytes)
      continue;
    bool quiet = std::all_of(e.users.begin(), e.users.end(),
                             [](const transfer_handle& h) { return h.released(); });
    if (!quiet)
      continue;
    e.users.clear();
    e.taken = true;
    std::memset(e.memory->base, 0, e.memory->bytes);
    if (auto err = push_to_device(*e.memory); err.code != errc::none)
      return result<pool_memory*>{err};
    return e.memory.get();
  }
  auto made = make_pool(node_, kind_, bytes);
  if (!made)
    return result<pool_memory*>{made.error()};
  entries_.push_back(entry{std::make_unique<pool_memory>(std::move(made.value())), {}, true});
  return entries_.back().memory.get();
}

void pool_cache::give_back(pool_memory* p, std::vector<transfer_handle> users) {
  for (auto& e : entries_) {
    if (e.memory.get() == p) {
      e.users = std::move(users);
      e.taken = false;
    }
  }
}

}  // namespace kvferry::cli
