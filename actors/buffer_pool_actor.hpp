// buffer pool actor: registered staging buffers handed out as leases.
#pragma once

#include "actors/child_directory.hpp"
#include "actors/messages.hpp"
#include "actors/op_ledger.hpp"

#include <memory>
#include <vector>

namespace kvferry {

class node_health;

struct pool_spec {
  std::uint32_t slots = 0;        // staging buffers ...
  std::uint64_t slot_bytes = 0;   // ... of this many bytes each
  // The buffers, allocated through the transport by the pool's first incarnation and reused by
  // its restarts (a restarted pool hands out the same memory).
  std::shared_ptr<std::vector<desc>> buffers = std::make_shared<std::vector<desc>>();
  std::shared_ptr<const child_directory> children;  // the current transport
  std::shared_ptr<node_health> health;              // poisoned slots are counted there
  // The engines' operations by token (transport_services::ledger): a dead holder's slot comes
  // back once nothing of the holder is in flight, whichever transport incarnation posted it.
  std::shared_ptr<op_ledger> ledger;
};

buffer_pool_actor spawn_buffer_pool_actor(caf::actor_system& sys, pool_spec spec);

}  // namespace kvferry
