// transport actor: wraps transport::engine (UCX) for the other actors of a node.
#pragma once

#include "actors/messages.hpp"

#include <memory>

namespace kvferry {

struct node_core;

// Spawns the transport actor over the node's engine. Its state maps each operation token to the
// response promise of the requester; engine completions come back as op_done messages.
transport_actor spawn_transport_actor(caf::actor_system& sys, std::shared_ptr<node_core> core);

}  // namespace kvferry
