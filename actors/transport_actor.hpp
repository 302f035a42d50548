// transport actor: the one door to the UCX engine and the copy engine for the other actors.
#pragma once

#include "actors/messages.hpp"

#include <memory>

namespace kvferry {

struct transport_services;
class node_health;

struct transport_spec {
  std::shared_ptr<transport_services> services;
  std::shared_ptr<node_health> health;  // the engine's worker replacements are reported there
};

// Spawns the transport actor. Its state maps each operation token to the response promise of
// the requester; completions of both engines come back as op_done messages.
transport_actor spawn_transport_actor(caf::actor_system& sys, transport_spec spec);

}  // namespace kvferry
