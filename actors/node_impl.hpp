// What a node is made of, and the internal door to it (node_access): used by node.cpp and by
// the test library (tests/support), never by engines. Includes CAF.
#pragma once

#include "actors/child_directory.hpp"
#include "actors/event_sink.hpp"
#include "actors/messages.hpp"
#include "actors/node_health.hpp"
#include "actors/offer_book.hpp"
#include "actors/peer_table.hpp"
#include "actors/receiver_actor.hpp"
#include "actors/region_table.hpp"
#include "actors/request_registry.hpp"
#include "actors/tls_policy.hpp"
#include "actors/transport_services.hpp"
#include "actors/watch_index.hpp"
#include "kvferry/node.hpp"
#include "ops/http_endpoint.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace kvferry {

struct node::impl {
  node_config config;
  std::uint64_t epoch = 0;
  // Shared ground, one object per concern; each actor's spec carries the ones it uses.
  // Only the transport actor calls into it, but for two thread-safe reads a receive makes: the
  // engine's windows and its worker address (both below).
  std::shared_ptr<transport_services> services;
  std::shared_ptr<region_table> regions;
  bool device_memory = false;    // cuda regions accepted (node_config::device)
  std::string no_device_memory;  // otherwise: why not, for register_region's error
  std::shared_ptr<transport::receive_windows> windows;  // the engine's (receive requests open them)
  // The engine's worker address now (recv_spec::worker_address); empty once the engine is gone.
  std::function<std::vector<std::uint8_t>()> worker_address;
  std::shared_ptr<request_registry> registry = std::make_shared<request_registry>();
  // Sends no peer has fetched yet (the sender, which hands them to actors, holds it too).
  std::shared_ptr<offer_book> book = std::make_shared<offer_book>();
  // Receives waiting for admission (the receiver, which admits them, holds it too).
  std::shared_ptr<admission_queue> admissions = std::make_shared<admission_queue>();
  std::shared_ptr<node_health> health;
  std::shared_ptr<detail::event_sink> events = std::make_shared<detail::event_sink>();
  std::shared_ptr<child_directory> children = std::make_shared<child_directory>();
  std::shared_ptr<watch_index> watches = std::make_shared<watch_index>();
  std::unique_ptr<tls_policy> tls;  // none: TLS off. Outlives the actor system.
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  supervisor_actor supervisor;
  // This node's part of every fetch it sends: name, epoch, and its anchor, the supervisor (it
  // lives as long as the node), through which peers watch this node (fetch_msg::anchor).
  std::shared_ptr<const fetch_msg> fetch_header;
  std::uint16_t port = 0;  // where the sender is published
  std::atomic<bool> accepting{true};
  // Set when stop() begins: the supervisor ending after that is the node's own doing.
  std::shared_ptr<std::atomic<bool>> stopping = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<peer_table> peers;  // peer_id.value -> the peer's entry actor
  bool stopped = false;
  // /metrics and /healthz (node_config::metrics_listen); none while off. Stopped first.
  std::unique_ptr<ops::http_endpoint> http;
};

// The internal door to a node.
struct node_access {
  // Wraps the node's UCX engine before anything uses it (the test library's fault plans).
  using engine_wrapper =
    std::function<std::unique_ptr<transport::engine>(std::unique_ptr<transport::engine>)>;
  // Wraps the node's copy engine likewise (staging copies and copies into device memory).
  using copier_wrapper =
    std::function<std::shared_ptr<gpu::copy_engine>(std::shared_ptr<gpu::copy_engine>)>;
  static result<std::unique_ptr<node>> start(const node_config& config, engine_wrapper wrap,
                                             copier_wrapper wrap_copier = nullptr);
  static node::impl& of(node& n) { return *n.impl_; }
};

}  // namespace kvferry
