// memory_registration over ucp_mem_map. Internal to transport/.
#pragma once

#include "transport/engine.hpp"
#include "kvferry/result.hpp"

#include <ucp/api/ucp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <type_traits>

namespace kvferry::transport {

// The UCP context, shared by the engine and every registration made from it: a registration may
// outlive its engine, and ucp_cleanup must come after its last ucp_mem_unmap.
using shared_context = std::shared_ptr<std::remove_pointer_t<ucp_context_h>>;

// The ranges this engine's registrations cover: where a peer's data message may write (see
// engine_put.cpp). A registration adds itself when made and removes itself when destroyed, so a
// write for memory no longer registered is refused rather than landing in freed memory.
// Thread-safe (registrations come and go on any thread; lookups run on the progress thread).
class writable_ranges {
 public:
  void add(std::uintptr_t base, std::size_t bytes);
  void remove(std::uintptr_t base, std::size_t bytes);
  // True when [addr, addr+bytes) lies inside one registered range.
  bool contains(std::uint64_t addr, std::uint64_t bytes) const;

 private:
  mutable std::mutex mutex_;
  std::multimap<std::uintptr_t, std::size_t> ranges_;  // base -> bytes (a pool may be registered twice)
};

// Device memory as a registration: nothing is mapped; the range is in `ranges` while it lives,
// and its packed rkey is `rkey_source`'s (kept alive with it).
std::shared_ptr<memory_registration> device_memory(void* ptr, std::size_t bytes,
                                                   std::shared_ptr<memory_registration> rkey_source,
                                                   std::shared_ptr<writable_ranges> ranges);

// ucp_mem_map of [ptr, ptr+bytes) (allocate == false) or of `bytes` UCX allocates itself
// (allocate == true, ptr ignored), with its rkey packed once. Thread-safe: the context is
// created with mt_workers_shared, which makes UCX lock context-level calls.
// `ranges` (may be null) learns the registration's range for as long as it lives.
result<std::shared_ptr<memory_registration>> map_memory(shared_context context, void* ptr,
                                                        std::size_t bytes, bool allocate,
                                                        std::shared_ptr<writable_ranges> ranges);

}  // namespace kvferry::transport
