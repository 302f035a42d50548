// The demo/test workload: a KV pool of `requests * layers` blocks per node; request i owns one
// block per layer, scattered through the pool, at different block ids on the two sides. Every
// byte has a known value, so the decode side can verify all of them. No CAF here.
#pragma once

#include "gpu/device_buffer.hpp"
#include "kvferry/node.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kvferry::cli {

struct workload {
  std::uint32_t requests = 64;
  std::uint32_t layers = 32;
  std::uint64_t block_bytes = 64 * 1024;
  std::uint64_t seed = 1;

  std::uint64_t blocks() const { return std::uint64_t{requests} * layers; }
  std::uint64_t pool_bytes() const { return blocks() * block_bytes; }
  std::uint64_t request_bytes() const { return std::uint64_t{layers} * block_bytes; }
  std::string request_id(std::uint32_t i) const;
  // Pool block index of (request, layer) on the prefill (source) and decode (destination) side:
  // two different permutations of the pool, so ids differ and blocks are scattered.
  std::uint64_t source_block(std::uint32_t request, std::uint32_t layer) const;
  std::uint64_t destination_block(std::uint32_t request, std::uint32_t layer) const;
  // The spans of one request in a pool region.
  std::vector<block_span> source_spans(region_id r, std::uint32_t request) const;
  std::vector<block_span> destination_spans(region_id r, std::uint32_t request) const;
  // Writes the expected content of every source block into the prefill pool.
  void fill_source(void* pool) const;
  // Counts the bytes of request `request` that hold their expected value in the decode pool.
  std::uint64_t verify_destination(const void* pool, std::uint32_t request) const;
};

// A KV pool registered with a node: engine-owned memory ("engine": allocated here, then
// registered) or memory the transport allocates ("ucx").
struct pool_memory {
  region_id region = 0;
  void* base = nullptr;  // where the workload writes and checks (kind "cuda": the host copy)
  std::size_t bytes = 0;
  std::vector<unsigned char> owned;  // the memory, for kind "engine"; the host copy, for "cuda"
  std::shared_ptr<gpu::device_buffer> device;  // kind "cuda": the region's memory
};
// Kinds: "engine" (malloc + register), "ucx" (allocated by UCX), "cuda" (device memory of the
// node's device, node_config::device; host memory where that is "emulated").
result<pool_memory> make_pool(node& n, const std::string& kind, std::size_t bytes);
// A "cuda" pool's host copy to the device, and back (blocking); nothing for the other kinds.
error_info push_to_device(const pool_memory& p);
error_info pull_from_device(const pool_memory& p);

// The KV pools of a node process that serves workload after workload (`offer`, `fetch`): a
// pool is handed out again only once every transfer that used it was released (until then UCX
// may still read or write it); otherwise a new one is made. Reused pools are zeroed.
class pool_cache {
 public:
  pool_cache(node& n, std::string kind) : node_(n), kind_(std::move(kind)) {}
  // A pool of at least `bytes`, not in use; stays taken until give_back.
  result<pool_memory*> take(std::uint64_t bytes);
  // The transfers that used `p`: it is free again once all of them are released.
  void give_back(pool_memory* p, std::vector<transfer_handle> users);
  std::size_t pools() const { return entries_.size(); }

 private:
  struct entry {
    std::unique_ptr<pool_memory> memory;
    std::vector<transfer_handle> users;
    bool taken = false;
  };
  node& node_;
  std::string kind_;
  std::vector<entry> entries_;
};

}  // namespace kvferry::cli
