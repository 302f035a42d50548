// health supervisor actor
//
//   start ──> spawn transport, buffer pool, sender, receiver (monitored), publish in core
//   tick (every progress_deadline_ms / 4, 25 ms .. 1 s) ──> stalled = work pending and no request
//        terminal for progress_deadline_ms (F14); clears itself when progress resumes. One
//        request timing out is progress, never a stall (F13).
//   child DOWN (normal exit while stopping) ──> nothing
//   child DOWN (any other reason) ──restarts in window < budget──> respawn, core updated,
//        │                                                        sender re-published on the
//        │                                                        same port (asynchronously)
//        └──budget spent──> node marked unhealthy; the child stays down
//
// Counters for health live in node_core (atomics), so health() never waits for an actor.

#include "actors/health_supervisor_actor.hpp"

#include "actors/buffer_pool_actor.hpp"
#include "actors/log.hpp"
#include "actors/node_core.hpp"
#include "actors/receiver_actor.hpp"
#include "actors/sender_actor.hpp"
#include "actors/transport_actor.hpp"

#include <caf/io/middleman.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>

namespace kvferry {

namespace {

using clock_type = std::chrono::steady_clock;

struct supervisor_state {
  supervisor_spec spec;
  std::map<std::string, std::deque<clock_type::time_point>> restarts;  // per child
  static inline const char* name = "kvferry.health_supervisor";
};

using self_ptr = supervisor_actor::stateful_pointer<supervisor_state>;

// Spawns one child (a first start or a restart) and records it in core.
caf::actor spawn_child(caf::actor_system& sys, const std::shared_ptr<node_core>& core,
                       const std::string& which) {
  auto kids = core->children();
  caf::actor spawned;
  if (which == "transport") {
    kids.transport = spawn_transport_actor(sys, core);
    spawned = caf::actor_cast<caf::actor>(kids.transport);
  } else if (which == "pool") {
    kids.pool = spawn_buffer_pool_actor(sys, core);
    spawned = caf::actor_cast<caf::actor>(kids.pool);
  } else if (which == "sender") {
    kids.sender =
      spawn_sender_actor(sys, core->config.node_name, core->config.default_deadline_ms);
    spawned = caf::actor_cast<caf::actor>(kids.sender);
  } else if (which == "receiver") {
    kids.receiver = spawn_receiver_actor(sys, core->config.max_fetches_in_flight);
    spawned = caf::actor_cast<caf::actor>(kids.receiver);
  }
  core->set_children(kids);
  return spawned;
}

constexpr const char* child_names[] = {"transport", "pool", "sender", "receiver"};

std::string child_name(const node_children& kids, const caf::actor_addr& a) {
  if (a == kids.transport.address())
    return "transport";
  if (a == kids.pool.address())
    return "pool";
  if (a == kids.sender.address())
    return "sender";
  if (a == kids.receiver.address())
    return "receiver";
  return {};
}

caf::actor child_handle(const node_children& kids, const std::string& which) {
  if (which == "transport")
    return caf::actor_cast<caf::actor>(kids.transport);
  if (which == "pool")
    return caf::actor_cast<caf::actor>(kids.pool);
  if (which == "sender")
    return caf::actor_cast<caf::actor>(kids.sender);
  if (which == "receiver")
    return caf::actor_cast<caf::actor>(kids.receiver);
  return {};
}

void republish_sender(self_ptr self) {
  auto& spec = self->state.spec;
  auto port = spec.core->port.load();
  if (port == 0)
    return;
  auto mm = self->system().middleman().actor_handle();
  auto sender = caf::actor_cast<caf::strong_actor_ptr>(spec.core->children().sender);
  self->request(mm, std::chrono::seconds{10}, caf::publish_atom::value, port,
                std::move(sender), std::set<std::string>{}, spec.core->config.listen_host, true)
    .then([](std::uint16_t) {},
          [=](caf::error&) {
            self->state.spec.core->unhealthy.store(true);
            self->state.spec.core->notify_health();
          });
}

supervisor_actor::behavior_type supervisor_impl(self_ptr self, supervisor_spec spec) {
  self->state.spec = std::move(spec);
  auto kids = self->state.spec.core->children();
  for (auto which : child_names)
    self->monitor(child_handle(kids, which));
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    auto which = child_name(st.spec.core->children(), dm.source);
    if (which.empty() || dm.reason == caf::exit_reason::user_shutdown)
      return;
    auto now = clock_type::now();
    auto& times = st.restarts[which];
    auto window = std::chrono::milliseconds{st.spec.restart_window_ms};
    while (!times.empty() && now - times.front() > window)
      times.pop_front();
    if (times.size() >= st.spec.max_restarts) {
      logger()->error("child '{}' crashed ({}) and its restart budget is spent: node unhealthy",
                      which, caf::to_string(dm.reason));
      st.spec.core->unhealthy.store(true);
      st.spec.core->notify_health();
      return;
    }
    logger()->warn("child '{}' crashed ({}); restarting it", which, caf::to_string(dm.reason));
    times.push_back(now);
    st.spec.core->restarts.fetch_add(1);
    st.spec.core->notify_health();
    self->monitor(spawn_child(self->system(), st.spec.core, which));
    if (which == "sender")
      republish_sender(self);
  });
  self->set_exit_handler([=](caf::exit_msg& em) {
    // Stopping: take the children down with us.
    auto kids = self->state.spec.core->children();
    for (auto which : child_names)
      self->send_exit(child_handle(kids, which), caf::exit_reason::user_shutdown);
    self->quit(em.reason);
  });
  self->send(self, tick_atom::value);
  return {
    [=](tick_atom) {
      auto& core = *self->state.spec.core;
      auto deadline_ms = core.config.progress_deadline_ms;
      auto now = std::chrono::steady_clock::now().time_since_epoch().count();
      auto idle_ns = now - core.last_progress_ns.load();
      bool stalled = core.in_flight.load() > 0 &&
                     idle_ns > static_cast<std::int64_t>(deadline_ms) * 1000000;
      if (stalled != core.stalled.exchange(stalled)) {
        core.notify_health();
        if (stalled)
          logger()->error("no transfer finished for {} ms with work pending: node unhealthy",
                          idle_ns / 1000000);
        else
          logger()->warn("transfers progress again: node healthy");
      }
      auto tick = std::clamp<std::uint32_t>(deadline_ms / 4, 25, 1000);
      self->delayed_send(self, std::chrono::milliseconds{tick}, tick_atom::value);
    },
    [=](crash_atom, const std::string& which) {
      auto h = child_handle(self->state.spec.core->children(), which);
      if (h)
        self->send_exit(h, caf::exit_reason::kill);
    },
  };
}

}  // namespace

supervisor_actor spawn_health_supervisor(caf::actor_system& sys, supervisor_spec spec) {
  // The children exist before this returns, so the facade can use them at once; the
  // supervisor monitors them from its first message on.
  for (auto which : child_names)
    spawn_child(sys, spec.core, which);
  return sys.spawn(supervisor_impl, std::move(spec));
}

}  // namespace kvferry
