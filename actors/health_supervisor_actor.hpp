// health supervisor actor: spawns, monitors and restarts the node's children.
#pragma once

#include "actors/buffer_pool_actor.hpp"
#include "actors/child_directory.hpp"
#include "actors/messages.hpp"
#include "actors/request_registry.hpp"
#include "actors/transport_actor.hpp"

#include <cstdint>
#include <memory>
#include <string>

namespace kvferry {

class node_health;

struct supervisor_spec {
  std::shared_ptr<child_directory> children;  // kept current here (first start and restarts)
  std::shared_ptr<node_health> health;
  transport_spec transport;
  pool_spec pool;
  std::string node_name;                  // the sender's name in errors to fetchers
  std::string layout_tag;                 // the sender's (node_config::layout_tag)
  std::shared_ptr<const request_registry> registry;  // the sender's, for declines
  std::uint32_t default_park_ms = 0;      // the sender's bound on parking a fetch
  std::uint32_t max_fetches_in_flight = 1;  // the receiver's admission limit
  std::uint32_t progress_deadline_ms = 30000;
  std::string listen_host;                // where a restarted sender is re-published
  std::uint32_t max_restarts = 5;         // per child per window; beyond it the node is unhealthy
  std::uint32_t restart_window_ms = 60000;
};

// Spawns the supervisor, which spawns the children at once and records them in the directory
// before this returns (the facade can address them at once).
supervisor_actor spawn_health_supervisor(caf::actor_system& sys, supervisor_spec spec);

}  // namespace kvferry
