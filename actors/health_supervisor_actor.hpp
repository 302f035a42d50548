// health supervisor actor: spawns, monitors and restarts the node's children.
#pragma once

#include "actors/messages.hpp"

#include <cstdint>
#include <memory>
#include <string>

namespace kvferry {

struct node_core;

struct supervisor_spec {
  std::shared_ptr<node_core> core;
  std::uint32_t max_restarts = 5;  // per child per window; beyond it the node is unhealthy
  std::uint32_t restart_window_ms = 60000;
};

// Spawns the supervisor, which spawns the children at once and stores them in core.
supervisor_actor spawn_health_supervisor(caf::actor_system& sys, supervisor_spec spec);

}  // namespace kvferry
