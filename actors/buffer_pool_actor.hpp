// buffer pool actor: registered staging buffers handed out as leases.
#pragma once

#include "actors/child_directory.hpp"
#include "actors/messages.hpp"
#include "actors/op_ledger.hpp"

#include <memory>
#include <vector>

namespace kvferry {

class node_health;

// What outlives a pool incarnation. A restarted pool hands out the same memory, and must not
// hand out a slot an earlier incarnation leased (its holder may still copy into it, or UCX still
// read it) or poisoned. Only the current incarnation touches it (a restart begins after the
// previous one ended).
struct staging_slots {
  std::vector<desc> buffers;             // allocated through the transport by the first one
  std::vector<caf::actor_addr> holders;  // per buffer: who holds it (invalid: free)
  std::vector<bool> poisoned;            // per buffer: never handed out again
};

struct pool_spec {
  std::uint32_t slots = 0;        // staging buffers ...
  std::uint64_t slot_bytes = 0;   // ... of this many bytes each
  std::shared_ptr<staging_slots> table = std::make_shared<staging_slots>();
  std::shared_ptr<const child_directory> children;  // the current transport
  std::shared_ptr<node_health> health;              // poisoned slots are counted there
  // The engines' operations by token (transport_services::ledger): a dead holder's slot comes
  // back once nothing of the holder is in flight, whichever transport incarnation posted it.
  std::shared_ptr<op_ledger> ledger;
};

buffer_pool_actor spawn_buffer_pool_actor(caf::actor_system& sys, pool_spec spec);

}  // namespace kvferry
