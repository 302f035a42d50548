// memory_registration over ucp_mem_map. Internal to transport/.
#pragma once

#include "transport/engine.hpp"
#include "kvferry/result.hpp"

#include <ucp/api/ucp.h>

#include <memory>
#include <type_traits>

namespace kvferry::transport {

// The UCP context, shared by the engine and every registration made from it: a registration may
// outlive its engine, and ucp_cleanup must come after its last ucp_mem_unmap.
using shared_context = std::shared_ptr<std::remove_pointer_t<ucp_context_h>>;

// ucp_mem_map of [ptr, ptr+bytes) (allocate == false) or of `bytes` UCX allocates itself
// (allocate == true, ptr ignored), with its rkey packed once. Thread-safe: the context is
// created with mt_workers_shared, which makes UCX lock context-level calls.
result<std::shared_ptr<memory_registration>> map_memory(shared_context context, void* ptr,
                                                        std::size_t bytes, bool allocate);

}  // namespace kvferry::transport
