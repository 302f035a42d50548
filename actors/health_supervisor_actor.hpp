// health supervisor actor: spawns, monitors and restarts the node's children.
#pragma once

#include "actors/buffer_pool_actor.hpp"
#include "actors/child_directory.hpp"
#include "actors/messages.hpp"
#include "actors/receiver_actor.hpp"
#include "actors/request_registry.hpp"
#include "actors/sender_actor.hpp"
#include "actors/transport_actor.hpp"

#include <caf/io/middleman_actor.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace kvferry {

class node_health;

struct supervisor_spec {
  std::shared_ptr<child_directory> children;  // kept current here (first start and restarts)
  std::shared_ptr<node_health> health;
  transport_spec transport;
  pool_spec pool;
  sender_spec sender;                     // each start of the sender gets this
  receiver_spec receiver;                 // each start of the receiver gets this
  std::uint32_t progress_deadline_ms = 30000;
  std::string listen_host;                // where a restarted sender is re-published
  // The network probe: each tick posts a job to CAF's multiplexer (the network thread) unless
  // one is pending; one pending for longer than this makes the node unhealthy. 0: no probe
  // (a system without the middleman, as in virtual-time tests).
  std::uint32_t network_stall_ms = 0;
  std::function<void()> on_network_thread;  // also run by each probe (TLS handshake sweep)
  std::uint32_t max_restarts = 5;         // per child per window; beyond it the node is unhealthy
  std::uint32_t restart_window_ms = 60000;
};

// The middleman actor a node publishes and connects through: CAF's OpenSSL one when the node
// has TLS (tls_policy), else the plain one.
caf::io::middleman_actor network_of(caf::actor_system& sys);

// Spawns the supervisor, which spawns the children at once and records them in the directory
// before this returns (the facade can address them at once).
supervisor_actor spawn_health_supervisor(caf::actor_system& sys, supervisor_spec spec);

}  // namespace kvferry
