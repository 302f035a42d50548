// buffer pool actor: registered staging buffers handed out as leases.
#pragma once

#include "actors/messages.hpp"

#include <memory>

namespace kvferry {

struct node_core;

// Spawns the pool: config.staging_slots buffers of config.staging_slot_bytes each, allocated
// and registered through the node's engine once (the registrations live as long as the node
// core, so a restarted pool reuses them).
buffer_pool_actor spawn_buffer_pool_actor(caf::actor_system& sys, std::shared_ptr<node_core> core);

}  // namespace kvferry
