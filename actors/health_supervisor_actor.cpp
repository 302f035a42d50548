// health supervisor actor
//
//   start ──> spawn transport, buffer pool, sender, receiver (monitored), record them in the
//             child directory
//   tick (every progress_deadline_ms / 4, 25 ms .. 1 s) ──> stalled = work pending and no request
//        terminal for progress_deadline_ms (F14); clears itself when progress resumes. One
//        request timing out is progress, never a stall (F13). The transport refreshes its
//        counters in health.
//   exit (the node is stopping) ──> stopping; children told to exit ──> quit
//   child DOWN while stopping ──> nothing
//   child DOWN, for whatever reason (a peer can end the sender with any, user_shutdown too)
//        ├──restarts in window < budget──> respawn, directory updated, sender re-published on
//        │                                 the same port (asynchronously)
//        └──budget spent──> node marked unhealthy; the child stays down
//
// Counters live in node_health (atomics), so health() never waits for an actor.

#include "actors/health_supervisor_actor.hpp"

#include "actors/log.hpp"
#include "actors/node_health.hpp"
#include "actors/peer_input.hpp"
#include "actors/receiver_actor.hpp"
#include "actors/sender_actor.hpp"

#include <caf/io/middleman.hpp>
#include <caf/io/network/multiplexer.hpp>
#include <caf/openssl/manager.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <deque>
#include <map>

namespace kvferry {

caf::actor node_children::get(child_kind k) const {
  switch (k) {
    case child_kind::transport: return caf::actor_cast<caf::actor>(transport);
    case child_kind::pool: return caf::actor_cast<caf::actor>(pool);
    case child_kind::sender: return caf::actor_cast<caf::actor>(sender);
    case child_kind::receiver: return caf::actor_cast<caf::actor>(receiver);
  }
  return {};
}

bool node_children::find(const caf::actor_addr& a, child_kind* k) const {
  for (auto kind : all_children) {
    if (a && get(kind).address() == a) {
      *k = kind;
      return true;
    }
  }
  return false;
}

namespace {

using clock_type = std::chrono::steady_clock;

struct supervisor_state {
  supervisor_spec spec;
  std::uint16_t port = 0;  // where the sender is published (0: not yet)
  bool stopping = false;   // the node stops: children that end stay down
  std::map<child_kind, std::deque<clock_type::time_point>> restarts;
  static inline const char* name = "kvferry.health_supervisor";
};

using self_ptr = supervisor_actor::stateful_pointer<supervisor_state>;

// Spawns one child (a first start or a restart) and records it in the directory.
caf::actor spawn_child(caf::actor_system& sys, const supervisor_spec& spec, child_kind which) {
  auto kids = spec.children->current();
  switch (which) {
    case child_kind::transport: kids.transport = spawn_transport_actor(sys, spec.transport); break;
    case child_kind::pool: kids.pool = spawn_buffer_pool_actor(sys, spec.pool); break;
    case child_kind::sender:
      kids.sender = spawn_sender_actor(sys, spec.sender);
      break;
    case child_kind::receiver:
      kids.receiver = spawn_receiver_actor(sys, spec.receiver);
      break;
  }
  spec.children->set(kids);
  // Offers put into the book, and receives queued, while the directory still named the child's
  // predecessor were announced to it: the new one looks at the whole book or queue once it is
  // the one named.
  if (which == child_kind::sender)
    caf::anon_send(kids.sender, announce_atom::value, std::string{});
  if (which == child_kind::receiver)
    caf::anon_send(kids.receiver, admit_atom::value);
  return kids.get(which);
}

}  // namespace

caf::io::middleman_actor network_of(caf::actor_system& sys) {
  return sys.has_openssl_manager() ? sys.openssl_manager().actor_handle()
                                   : sys.middleman().actor_handle();
}

namespace {

// Publishes the current sender on the node's port; a port still busy (its old doorman closing)
// is tried again, `attempts` times in all, 100 ms apart.
void publish_sender(self_ptr self, std::int32_t attempts) {
  auto& st = self->state;
  auto& sys = self->system();
  auto sender = caf::actor_cast<caf::strong_actor_ptr>(st.spec.children->current().sender);
  // With its interface: connect() checks it before it trusts the entry.
  self->request(network_of(sys), std::chrono::seconds{10}, caf::publish_atom::value, st.port,
                std::move(sender), sys.message_types<sender_actor>(), st.spec.listen_host, true)
    .then([=](std::uint16_t) { self->state.spec.health->entry_published(); },
          [=](caf::error& err) {
            if (attempts > 1) {
              self->delayed_send(self, std::chrono::milliseconds{100}, caf::publish_atom::value,
                                 attempts - 1);
              return;
            }
            self->state.spec.health->set_unhealthy("the restarted entry actor could not be "
                                                   "published again: " +
                                                   describe_error(err));
          });
}

// The port still names the dead sender (CAF keeps a published actor's port open after it dies,
// and answers connects with it): unpublish that one, then publish its successor on the same port.
void republish_sender(self_ptr self, const caf::actor_addr& dead) {
  if (self->state.port == 0)
    return;
  auto done = [=] { publish_sender(self, 20); };
  self->request(network_of(self->system()), std::chrono::seconds{10}, caf::unpublish_atom::value,
                dead, self->state.port)
    .then(done, [=](caf::error&) { done(); });
}

void on_child_down(self_ptr self, const caf::down_msg& dm) {
  auto& st = self->state;
  child_kind which;
  // Not the reason: a peer can tell the sender to exit with any, user_shutdown included.
  if (st.stopping || !st.spec.children->current().find(dm.source, &which))
    return;
  auto now = clock_type::now();
  auto& times = st.restarts[which];
  auto window = std::chrono::milliseconds{st.spec.restart_window_ms};
  while (!times.empty() && now - times.front() > window)
    times.pop_front();
  if (times.size() >= st.spec.max_restarts) {
    logger()->error("child '{}' crashed ({}) and its restart budget is spent: node unhealthy",
                    to_string(which), describe_error(dm.reason));
    st.spec.health->set_unhealthy("child '" + std::string{to_string(which)} +
                                  "' crashed and its restart budget is spent");
    return;
  }
  logger()->warn("child '{}' crashed ({}); restarting it", to_string(which),
                 describe_error(dm.reason));
  times.push_back(now);
  st.spec.health->child_restarted();
  self->monitor(spawn_child(self->system(), st.spec, which));
  if (which == child_kind::sender)
    republish_sender(self, dm.source);
}

// CAF's network thread (the multiplexer) runs every connection's reads and writes: a huge
// allocation or a blocking call there stalls every peer while the actors look fine. A probe
// posted to it, still pending after network_stall_ms, says so in health().
void probe_network(self_ptr self) {
  auto& st = self->state;
  if (st.spec.network_stall_ms == 0)
    return;
  std::chrono::milliseconds waited{0};
  if (st.spec.health->check_network(std::chrono::milliseconds{st.spec.network_stall_ms}, &waited) &&
      st.spec.health->snapshot().network_stalled)
    logger()->error("CAF's network thread has not run for {} ms: node unhealthy",
                    waited.count());
  if (st.spec.health->network_probe_due()) {
    self->system().middleman().backend().post(
      [health = st.spec.health, extra = st.spec.on_network_thread] {
        health->network_probe_ran();
        if (extra)
          extra();
      });
  }
}

supervisor_actor::behavior_type supervisor_impl(self_ptr self, supervisor_spec spec) {
  self->state.spec = std::move(spec);
  auto kids = self->state.spec.children->current();
  for (auto which : all_children)
    self->monitor(kids.get(which));
  drop_unexpected_quietly(self);
  self->set_down_handler([=](caf::down_msg& dm) { on_child_down(self, dm); });
  self->set_exit_handler([=](caf::exit_msg& em) {
    // Stopping: take the children down with us.
    self->state.stopping = true;
    auto kids = self->state.spec.children->current();
    for (auto which : all_children)
      self->send_exit(kids.get(which), caf::exit_reason::user_shutdown);
    self->quit(em.reason);
  });
  self->send(self, tick_atom::value);
  return {
    [=](tick_atom) {
      auto& st = self->state;
      auto deadline = std::chrono::milliseconds{st.spec.progress_deadline_ms};
      std::chrono::milliseconds idle{0};
      if (st.spec.health->check_progress(deadline, &idle)) {
        if (st.spec.health->snapshot().stalled)
          logger()->error("no transfer finished for {} ms with work pending: node unhealthy",
                          idle.count());
        else
          logger()->warn("transfers progress again: node healthy");
      }
      probe_network(self);
      self->send(st.spec.children->current().transport, refresh_atom::value);
      auto shortest = st.spec.network_stall_ms == 0
                        ? st.spec.progress_deadline_ms
                        : std::min(st.spec.progress_deadline_ms, st.spec.network_stall_ms);
      auto tick = std::clamp<std::uint32_t>(shortest / 4, 25, 1000);
      self->delayed_send(self, std::chrono::milliseconds{tick}, tick_atom::value);
    },
    [=](caf::publish_atom, std::uint16_t port) { self->state.port = port; },
    [=](caf::publish_atom, std::int32_t attempts) { publish_sender(self, attempts); },
    [=](crash_atom, child_kind which) {
      if (auto h = self->state.spec.children->current().get(which))
        self->send_exit(h, caf::exit_reason::kill);
    },
  };
}

}  // namespace

supervisor_actor spawn_health_supervisor(caf::actor_system& sys, supervisor_spec spec) {
  // The children exist before this returns, so the facade can use them at once; the supervisor
  // monitors them from its first message on.
  for (auto which : all_children)
    spawn_child(sys, spec, which);
  return sys.spawn(supervisor_impl, std::move(spec));
}

}  // namespace kvferry
