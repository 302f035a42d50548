// node facade: owns the actor system, the transport engine and the node core; translates
// engine calls into messages. Calls never wait on the network except the set-up calls.

#include "actors/node.hpp"

#include "actors/health_supervisor_actor.hpp"
#include "actors/log.hpp"
#include "actors/node_core.hpp"
#include "actors/recv_request_actor.hpp"
#include "actors/send_request_actor.hpp"
#include "transport/fault_plan.hpp"

#include <caf/io/all.hpp>
#include <spdlog/spdlog.h>

#include <cstring>
#include <mutex>
#include <random>
#include <thread>

namespace kvferry {

const char* to_string(cancel_result r) noexcept {
  switch (r) {
    case cancel_result::not_found: return "not_found";
    case cancel_result::already_complete: return "already_complete";
    case cancel_result::cancelled_before_advertise: return "cancelled_before_advertise";
    case cancel_result::cancel_requested_in_flight: return "cancel_requested_in_flight";
    case cancel_result::backend_unhealthy: return "backend_unhealthy";
    case cancel_result::not_cancellable: return "not_cancellable";
  }
  return "unknown";
}

std::string health_snapshot::to_string() const {
  return std::string{healthy ? "healthy" : "UNHEALTHY"} + " in_flight=" +
         std::to_string(in_flight) + " succeeded=" + std::to_string(succeeded) +
         " failed=" + std::to_string(failed) + " cancelled=" + std::to_string(cancelled) +
         " unreleased=" + std::to_string(unreleased) + " poisoned=" + std::to_string(poisoned) +
         " restarts=" + std::to_string(restarts) +
         " worker_replacements=" + std::to_string(worker_replacements) +
         " ms_since_progress=" + std::to_string(ms_since_progress);
}

struct node::impl {
  std::shared_ptr<node_core> core;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  supervisor_actor supervisor;
  mutable std::mutex peers_mtx;
  std::vector<sender_actor> peers;  // peer_id.value = index + 1
  bool stopped = false;
};

namespace {

// A node's incarnation: the start time in microseconds since the Unix epoch, with random low
// bits (two starts in one microsecond; never zero). A restarted node has a larger epoch than the
// one it replaces, as long as its clock did not step back by more than the restart took (the
// same choice as Cassandra's generation number); a sender uses that to tell which of two fetches
// for one request is stale.
std::uint64_t new_epoch() {
  std::random_device rd;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(
              std::chrono::system_clock::now().time_since_epoch())
              .count();
  return (static_cast<std::uint64_t>(us) << 8) | (rd() & 0xffu) | 1u;
}

// A handle that is already resolved, for calls refused before any actor exists. It has no
// event sink: a refused call is not a transfer and shows up in no poll().
transfer_handle refused(const std::string& id, errc code, std::string msg) {
  auto st = std::make_shared<detail::handle_state>(id, std::weak_ptr<detail::event_sink>{});
  st->resolve(make_result(transfer_status::failed, code, std::move(msg)));
  st->release();
  return transfer_handle{std::move(st)};
}

std::uint32_t deadline_of(const transfer_options& o, const node_config& c) {
  return o.deadline_ms != 0 ? o.deadline_ms : c.default_deadline_ms;
}

cancel_result to_cancel_result(cancel_answer a) {
  return static_cast<cancel_result>(a);
}
static_assert(static_cast<int>(cancel_answer::not_cancellable) ==
              static_cast<int>(cancel_result::not_cancellable));

}  // namespace

node::node(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

node::~node() {
  stop(std::chrono::milliseconds{200});
}

result<std::unique_ptr<node>> node::start(const node_config& config) {
  return start(config, nullptr);
}

result<std::unique_ptr<node>> node::start(const node_config& config,
                                          std::shared_ptr<transport::fault_plan> faults) {
  if (auto err = validate(config))
    return result<std::unique_ptr<node>>{errc::invalid_argument, err->message()};
  set_log_level(config.log_level);
  auto p = std::make_unique<impl>();
  p->core = std::make_shared<node_core>(config, new_epoch());
  auto& core = *p->core;
  // The engine reports endpoint failures to whichever transport actor is current.
  std::weak_ptr<node_core> weak_core = p->core;
  transport::engine_options eo;
  eo.tls = config.transport;
  eo.keepalive_interval_ms = config.keepalive_interval_ms;
  auto eng = transport::engine::start(eo, [weak_core](std::uint64_t peer, errc code,
                                                      const std::string& detail) {
    logger()->warn("UCX endpoint to peer {:#x} failed: {}", peer, detail);
    if (auto c = weak_core.lock())
      caf::anon_send(c->children().transport, peer_down_atom::value, peer,
                     caf::make_error(code, detail));
  });
  if (!eng)
    return result<std::unique_ptr<node>>{eng.error()};
  if (faults)
    eng.value() = transport::make_faulty_engine(std::move(eng.value()), std::move(faults));
  core.engine = std::shared_ptr<transport::engine>(std::move(eng.value()));
  for (std::uint32_t i = 0; i < config.staging_slots; ++i) {
    auto buf = core.engine->allocate_memory(config.staging_slot_bytes);
    if (!buf)
      return result<std::unique_ptr<node>>{
        errc::out_of_memory, "staging buffer " + std::to_string(i) + " of " +
                               std::to_string(config.staging_slot_bytes) +
                               " bytes: " + buf.error().message};
    core.staging.push_back(std::move(buf.value()));
  }
  core.copier = gpu::make_cpu_copy_engine();
  // CAF: kvferry owns the command line; CAF reads no ini file and no argv here.
  p->cfg.load<caf::io::middleman>();
  p->cfg.add_message_types<caf::id_block::kvferry>();
  p->cfg.add_error_category(caf::atom("kvferry"), [](std::uint8_t code, caf::atom_value,
                                                      const caf::message& ctx) {
    auto text = std::string{"kvferry: "} + to_string(static_cast<errc>(code));
    if (!ctx.empty() && ctx.match_elements<std::string>())
      text += " (" + ctx.get_as<std::string>(0) + ")";
    return text;
  });
  p->cfg.set("scheduler.max-threads", 2);
  p->cfg.set("logger.verbosity", caf::atom("quiet"));
  p->sys = std::make_unique<caf::actor_system>(p->cfg);
  p->supervisor = spawn_health_supervisor(*p->sys, supervisor_spec{p->core});
  core.anchor = caf::actor_cast<caf::actor_addr>(p->supervisor);
  auto port = p->sys->middleman().publish(core.children().sender, config.listen_port,
                                          config.listen_host.c_str(), true);
  if (!port) {
    auto msg = "cannot listen on " + config.listen_host + ":" +
               std::to_string(config.listen_port) + ": " + p->sys->render(port.error());
    std::unique_ptr<node> n{new node(std::move(p))};
    n->stop(std::chrono::milliseconds{0});
    return result<std::unique_ptr<node>>{errc::transport_error, msg};
  }
  core.port.store(*port);
  logger()->info("node '{}' epoch {:#x} listening on {}:{} (UCX transports: {})",
                 config.node_name, core.epoch, config.listen_host, *port, config.transport);
  return std::unique_ptr<node>{new node(std::move(p))};
}

std::uint16_t node::port() const noexcept {
  return impl_->core->port.load();
}

const node_config& node::config() const noexcept {
  return impl_->core->config;
}

std::uint64_t node::epoch() const noexcept {
  return impl_->core->epoch;
}

result<region_id> node::register_region(void* ptr, std::size_t bytes, memory_kind kind) {
  if (impl_->stopped)
    return result<region_id>{errc::stopped, "the node is stopped"};
  if (ptr == nullptr || bytes == 0)
    return result<region_id>{errc::invalid_argument,
                             "register_region needs a non-null pointer and a non-zero size"};
  if (kind == memory_kind::cuda)
    return result<region_id>{errc::unsupported,
                             "cuda regions need the CUDA copy engine, which this release does "
                             "not have yet"};
  auto reg = impl_->core->engine->register_memory(ptr, bytes);
  if (!reg)
    return result<region_id>{reg.error()};
  return impl_->core->add_region(registered_region{ptr, bytes, kind, std::move(reg.value())});
}

result<region_id> node::allocate_region(std::size_t bytes) {
  if (impl_->stopped)
    return result<region_id>{errc::stopped, "the node is stopped"};
  if (bytes == 0)
    return result<region_id>{errc::invalid_argument, "allocate_region needs a non-zero size"};
  auto reg = impl_->core->engine->allocate_memory(bytes);
  if (!reg)
    return result<region_id>{reg.error()};
  auto base = reg.value()->base();
  // Zero-filled, and every page faulted in now rather than by the first transfer into it.
  std::memset(base, 0, bytes);
  return impl_->core->add_region(
    registered_region{base, bytes, memory_kind::host, std::move(reg.value())});
}

void* node::region_base(region_id r) const noexcept {
  auto reg = impl_->core->find_region(r);
  return reg ? reg->base : nullptr;
}

result<peer_id> node::connect(const std::string& host, std::uint16_t port) {
  if (impl_->stopped)
    return result<peer_id>{errc::stopped, "the node is stopped"};
  auto& sys = *impl_->sys;
  caf::scoped_actor self{sys};
  result<peer_id> out{errc::peer_unreachable, "no answer"};
  auto timeout = std::chrono::milliseconds{impl_->core->config.connect_timeout_ms};
  auto where = host + ":" + std::to_string(port);
  self->request(sys.middleman().actor_handle(), timeout, caf::connect_atom::value, host, port)
    .receive(
      [&](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>& ifs) {
        if (!ptr) {
          out = result<peer_id>{errc::peer_unreachable, "no kvferry node published at " + where};
          return;
        }
        auto expected = sys.message_types<sender_actor>();
        if (!std::includes(ifs.begin(), ifs.end(), expected.begin(), expected.end())) {
          out = result<peer_id>{errc::peer_unreachable,
                                "the actor at " + where + " is not a kvferry node entry"};
          return;
        }
        std::lock_guard<std::mutex> guard{impl_->peers_mtx};
        impl_->peers.push_back(caf::actor_cast<sender_actor>(std::move(ptr)));
        out = peer_id{impl_->peers.size()};
      },
      [&](caf::error& err) {
        out = result<peer_id>{errc::peer_unreachable,
                              "cannot connect to " + where + ": " + sys.render(err)};
      });
  return out;
}

transfer_handle node::send(const std::string& request_id, const std::vector<block_span>& blocks,
                           const transfer_options& options) {
  auto& core = impl_->core;
  if (impl_->stopped || !core->accepting.load())
    return refused(request_id, errc::stopped, "the node is stopping; send refused");
  auto resolved = core->resolve_blocks(blocks);
  if (!resolved)
    return refused(request_id, resolved.error().code,
                   "send '" + request_id + "': " + resolved.error().message);
  auto st = std::make_shared<detail::handle_state>(request_id, core->events);
  if (!core->reserve(request_id, st))
    return refused(request_id, errc::duplicate_request_id,
                   "request id '" + request_id + "' is already in use on this node");
  auto owner = spawn_send_request_actor(
    *impl_->sys, send_spec{core, st, std::move(resolved.value()), options.stage_through_pool,
                           deadline_of(options, core->config)});
  core->attach_owner(request_id, caf::actor_cast<caf::actor>(owner));
  return transfer_handle{std::move(st)};
}

transfer_handle node::receive(const std::string& request_id, peer_id peer,
                              const std::vector<block_span>& blocks,
                              const transfer_options& options) {
  auto& core = impl_->core;
  if (impl_->stopped || !core->accepting.load())
    return refused(request_id, errc::stopped, "the node is stopping; receive refused");
  sender_actor entry;
  {
    std::lock_guard<std::mutex> guard{impl_->peers_mtx};
    if (peer.value == 0 || peer.value > impl_->peers.size())
      return refused(request_id, errc::not_connected,
                     "receive '" + request_id + "': peer " + std::to_string(peer.value) +
                       " is not connected (use connect())");
    entry = impl_->peers[peer.value - 1];
  }
  std::vector<region_id> regions;
  auto resolved = core->resolve_blocks(blocks, &regions);
  if (!resolved)
    return refused(request_id, resolved.error().code,
                   "receive '" + request_id + "': " + resolved.error().message);
  fetch_msg fetch;
  fetch.request_id = request_id;
  fetch.node_name = core->config.node_name;
  fetch.epoch = core->epoch;
  fetch.worker_address = core->engine->worker_address();
  fetch.anchor = core->anchor;
  std::vector<region_id> rkey_of;  // region ids in rkey order
  fetch.blocks.reserve(blocks.size());
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    auto pos = std::find(rkey_of.begin(), rkey_of.end(), regions[i]);
    if (pos == rkey_of.end()) {
      rkey_of.push_back(regions[i]);
      auto* reg = core->find_region(regions[i]);
      fetch.rkeys.push_back(reg->registration->packed_rkey());
      fetch.region_bases.push_back(reinterpret_cast<std::uint64_t>(reg->base));
      fetch.region_bytes.push_back(reg->bytes);
      pos = rkey_of.end() - 1;
    }
    fetch.blocks.push_back(remote_block{static_cast<std::uint32_t>(pos - rkey_of.begin()),
                                        resolved.value()[i].first, resolved.value()[i].second});
  }
  auto st = std::make_shared<detail::handle_state>(request_id, core->events);
  if (!core->reserve(request_id, st))
    return refused(request_id, errc::duplicate_request_id,
                   "request id '" + request_id + "' is already in use on this node");
  auto owner = spawn_recv_request_actor(
    *impl_->sys,
    recv_spec{core, st, std::move(entry), std::move(fetch), deadline_of(options, core->config)});
  core->attach_owner(request_id, caf::actor_cast<caf::actor>(owner));
  return transfer_handle{std::move(st)};
}

cancel_result node::cancel(const std::string& request_id) {
  if (impl_->stopped)
    return cancel_result::backend_unhealthy;
  bool recent = false;
  auto owner = impl_->core->owner_of(request_id, &recent);
  if (!owner)
    return recent ? cancel_result::already_complete : cancel_result::not_found;
  auto out = cancel_result::backend_unhealthy;
  caf::scoped_actor self{*impl_->sys};
  self->request(owner, std::chrono::milliseconds{impl_->core->config.cancel_timeout_ms},
                cancel_atom::value)
    .receive([&](cancel_answer a) { out = to_cancel_result(a); },
             [&](caf::error& err) {
               // The owner finished between the lookup and the request: nothing left to cancel.
               out = err == caf::sec::request_timeout ? cancel_result::backend_unhealthy
                                                      : cancel_result::already_complete;
             });
  return out;
}

std::vector<transfer_event> node::poll() {
  return impl_->core->events->drain();
}

std::vector<transfer_event> node::wait_events(std::chrono::milliseconds timeout) {
  return impl_->core->events->wait_and_drain(timeout);
}

bool node::wait_health(const std::function<bool(const health_snapshot&)>& pred,
                       std::chrono::milliseconds timeout) const {
  auto& c = *impl_->core;
  auto until = std::chrono::steady_clock::now() + timeout;
  std::unique_lock<std::mutex> guard{c.health_mtx};
  for (;;) {
    auto seen = c.health_changes;
    guard.unlock();
    if (pred(health()))
      return true;
    guard.lock();
    if (!c.health_cv.wait_until(guard, until, [&] { return c.health_changes != seen; }))
      return false;
  }
}

health_snapshot node::health() const {
  auto& c = *impl_->core;
  health_snapshot h;
  h.stalled = c.stalled.load();
  h.unreleased = c.unreleased.load();
  h.poisoned = c.poisoned.load();
  h.quarantine_full = h.unreleased + h.poisoned >= c.config.quarantine_budget;
  h.healthy = !c.unhealthy.load() && !h.stalled && !h.quarantine_full;
  h.ms_since_progress = static_cast<std::uint64_t>(
    (std::chrono::steady_clock::now().time_since_epoch().count() - c.last_progress_ns.load()) /
    1000000);
  h.in_flight = c.in_flight.load();
  h.succeeded = c.succeeded.load();
  h.failed = c.failed.load();
  h.cancelled = c.cancelled.load();
  h.restarts = c.restarts.load();
  h.worker_replacements = c.engine ? c.engine->stats().worker_replacements : 0;
  h.bytes_sent = c.bytes_sent.load();
  h.bytes_received = c.bytes_received.load();
  return h;
}

std::vector<std::string> node::transports_to(std::uint64_t peer_epoch) const {
  if (impl_->stopped)
    return {};
  return impl_->core->engine->endpoint_transports(peer_epoch);
}

std::vector<std::uint64_t> node::sent_to_peers() const {
  return impl_->core->peers();
}

void node::crash_child_for_testing(const std::string& child) {
  if (!impl_->stopped)
    caf::anon_send(impl_->supervisor, crash_atom::value, child);
}

void node::crash_request_for_testing(const std::string& request_id) {
  if (impl_->stopped)
    return;
  if (auto owner = impl_->core->owner_of(request_id, nullptr))
    caf::anon_send_exit(owner, caf::exit_reason::kill);
}

void node::stop(std::chrono::milliseconds drain_timeout) {
  if (!impl_ || impl_->stopped)
    return;
  auto& core = *impl_->core;
  core.accepting.store(false);
  auto until = std::chrono::steady_clock::now() + drain_timeout;
  while (core.in_flight.load() > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds{2});
  for (auto& owner : core.all_owners())
    caf::anon_send_exit(owner, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(impl_->supervisor, caf::exit_reason::user_shutdown);
  impl_->sys->await_all_actors_done();
  impl_->stopped = true;
  {
    std::lock_guard<std::mutex> guard{impl_->peers_mtx};
    impl_->peers.clear();
  }
  impl_->supervisor = nullptr;
  core.set_children({});
  // No actor is left: destroying the engine cancels and completes every UCX operation, after
  // which no memory of the node is touched. Its last callbacks still hold actor handles, so
  // the actor system goes after it.
  core.copier.reset();
  core.staging.clear();
  core.engine.reset();
  impl_->sys.reset();
}

}  // namespace kvferry
