// node facade: owns the actor system and the node's shared ground; translates engine calls
// into messages. Calls never wait on the network except the set-up calls (start, connect,
// register/allocate, stop) and the diagnostics, each bounded.

#include "kvferry/node.hpp"
#include "core/hop_trace.hpp"

#include "actors/handle_state.hpp"
#include "actors/health_supervisor_actor.hpp"
#include "actors/log.hpp"
#include "actors/node_impl.hpp"
#include "actors/peer_input.hpp"
#include "actors/recv_request_actor.hpp"
#include "actors/send_request_actor.hpp"
#include "actors/transfer_plan.hpp"
#include "gpu/copy_engine.hpp"
#include "gpu/device_select.hpp"

#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <caf/logger.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <thread>

namespace kvferry {

namespace {

// Bounds on the blocking calls that are not transfers.
constexpr std::chrono::seconds setup_timeout{60};        // registering or allocating memory
constexpr std::chrono::seconds diagnostics_timeout{3};   // what the transport knows

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

// CAF 0.17 pins its logger in a thread-local of every thread that builds the actor system,
// spawns an actor or makes a scoped_actor, and the system's destructor waits until the logger is
// gone: stop() on a thread other than every such one would wait forever. Engines call from any
// thread, so each entry point that touches CAF drops the pin on its way out (declare it first:
// it must outlive the scoped_actor).
struct caf_thread_scope {
  caf_thread_scope() = default;
  caf_thread_scope(const caf_thread_scope&) = delete;
  caf_thread_scope& operator=(const caf_thread_scope&) = delete;
  ~caf_thread_scope() { caf::logger::set_current_actor_system(nullptr); }
};

// Asks `whom` and waits at most `timeout` for the answer: for set-up calls and diagnostics only.
template <class R, class Handle, class... Ts>
result<R> ask(caf::actor_system& sys, const Handle& whom, caf::timespan timeout, Ts&&... xs) {
  result<R> out{errc::backend_unhealthy, "no answer"};
  caf_thread_scope unpin;
  caf::scoped_actor self{sys};
  self->request(whom, timeout, std::forward<Ts>(xs)...)
    .receive([&](R& r) { out = std::move(r); },
             [&](caf::error& err) {
               auto r = result_from_error(err);
               out = result<R>{err == caf::sec::request_timeout ? errc::timed_out : r.code,
                               std::move(r.message)};
             });
  return out;
}

// The entry (sender) of a connected peer; invalid for an id connect() never gave.
sender_actor entry_of(node::impl& p, peer_id peer) {
  return p.peers->use(peer.value).entry;
}

request_context context_for(node::impl& p, std::shared_ptr<detail::handle_state> handle,
                            const transfer_options& o) {
  return request_context{std::move(handle), p.registry, p.health, p.children,
                         o.deadline_ms != 0 ? o.deadline_ms : p.config.default_deadline_ms,
                         p.watches, p.services->ledger};
}

}  // namespace

node::node(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

namespace {

// The operator's door: answers from health and counters only, on the endpoint's own thread.
result<std::unique_ptr<ops::http_endpoint>> start_operator_endpoint(const node& n) {
  std::string host;
  std::uint16_t port = 0;
  parse_host_port(n.config().metrics_listen, host, port);  // validate() accepted it
  return ops::http_endpoint::start(host, port, [&n](const std::string& path) {
    if (path == "/metrics")
      return ops::http_response{200, "text/plain; version=0.0.4; charset=utf-8", n.metrics()};
    if (path == "/healthz") {
      auto h = n.health();
      if (h.healthy)
        return ops::http_response{200, "text/plain; charset=utf-8", "ok\n"};
      return ops::http_response{503, "text/plain; charset=utf-8", "unhealthy: " + h.reason + "\n"};
    }
    return ops::http_response{404, "text/plain; charset=utf-8",
                              "not found: this endpoint serves /metrics and /healthz\n"};
  });
}

}  // namespace

node::~node() {
  stop(std::chrono::milliseconds{200});
}

result<std::unique_ptr<node>> node::start(const node_config& config) {
  caf_thread_scope unpin;
  return node_access::start(config, nullptr);
}

result<std::unique_ptr<node>> node_access::start(const node_config& config, engine_wrapper wrap,
                                                 copier_wrapper wrap_copier) {
  using out_t = result<std::unique_ptr<node>>;
  if (auto err = validate(config))
    return out_t{errc::invalid_argument, err->message()};
  set_log_level(config.log_level);
  auto p = std::make_unique<node::impl>();
  p->config = config;
  if (tls_enabled(config)) {
    auto tls = tls_policy::enable(config);
    if (!tls)
      return out_t{tls.error()};
    p->tls = std::move(tls.value());
  }
  p->epoch = new_epoch();
  p->regions = std::make_shared<region_table>(config.max_blocks_per_request);
  p->health = std::make_shared<node_health>(config.quarantine_budget);
  p->peers = std::make_shared<peer_table>(
    config.max_peers, [health = p->health](std::size_t n) { health->set_peers(n); });
  // The engine reports endpoint failures to whichever transport actor is current.
  std::weak_ptr<child_directory> children = p->children;
  auto copier = gpu::select_copier(config.device);
  if (!copier)
    return out_t{copier.error()};
  if (wrap_copier)
    copier.value().engine = wrap_copier(std::move(copier.value().engine));
  transport::engine_options eo;
  eo.tls = config.transport;
  eo.keepalive_interval_ms = config.keepalive_interval_ms;
  if (copier.value().device_memory) {
    // Peers' data messages for cuda regions go through the copy engine (engine.hpp).
    eo.device_copy = [engine = copier.value().engine](std::vector<copy_op> segments,
                                                      std::function<void(errc, const std::string&)>
                                                        done) {
      engine->submit(std::move(segments), std::move(done));
    };
    if (copier.value().pin_staging) {
      // A refusal leaves those copies slower, not wrong (as for the staging pool).
      eo.pin_host = [](void* ptr, std::size_t bytes) {
        return gpu::pin_host_range(ptr, bytes) == errc::none;
      };
      eo.unpin_host = [](void* ptr) { (void)gpu::unpin_host_range(ptr); };
    }
  }
  auto eng = transport::engine::start(eo, [children](std::uint64_t peer, errc code,
                                                     const std::string& detail) {
    logger()->warn("UCX endpoint to peer {:#x} failed: {}", peer, detail);
    if (auto c = children.lock())
      caf::anon_send(c->current().transport, peer_down_atom::value, peer,
                     caf::make_error(code, detail));
  });
  if (!eng)
    return out_t{eng.error()};
  if (wrap)
    eng.value() = wrap(std::move(eng.value()));
  p->services = std::make_shared<transport_services>();
  p->services->engine = std::shared_ptr<transport::engine>(std::move(eng.value()));
  p->services->copier = copier.value().engine;
  p->services->pin_staging = copier.value().pin_staging;
  p->device_memory = copier.value().device_memory;
  p->no_device_memory = std::move(copier.value().why_not);
  p->windows = p->services->engine->windows();
  // Weak: a receive must not keep the engine past stop(); empty once it is gone.
  p->worker_address = [engine = std::weak_ptr<transport::engine>(p->services->engine)] {
    auto e = engine.lock();
    return e ? e->worker_address() : std::vector<std::uint8_t>{};
  };
  // CAF: kvferry owns the command line; CAF reads no ini file and no argv here.
  p->cfg.load<caf::io::middleman>();
  if (p->tls) {
    // CAF reads the files again at every connection, from wherever the process is by then.
    p->cfg.load<caf::openssl::manager>();
    p->cfg.openssl_certificate = std::filesystem::absolute(config.tls_certificate).string();
    p->cfg.openssl_key = std::filesystem::absolute(config.tls_key).string();
    p->cfg.openssl_cafile = std::filesystem::absolute(config.tls_ca).string();
    p->cfg.openssl_passphrase = p->tls->token();
  }
  p->cfg.add_message_types<caf::id_block::kvferry>();
  p->cfg.add_error_category(caf::atom("kvferry"), [](std::uint8_t code, caf::atom_value,
                                                      const caf::message& ctx) {
    auto text = std::string{"kvferry: "} + to_string(static_cast<errc>(code));
    if (!ctx.empty() && ctx.match_elements<std::string>())
      text += " (" + ctx.get_as<std::string>(0) + ")";
    return text;
  });
  auto threads = config.scheduler_threads != 0
                   ? config.scheduler_threads
                   : std::max(2u, std::thread::hardware_concurrency());
  p->cfg.set("scheduler.max-threads", static_cast<std::size_t>(threads));
  // How CAF's scheduler workers wait for work. After each job a CAF 0.17 worker spins 100 times,
  // then polls `moderate-poll-attempts` times (default 500) with a 50 us sleep in between (80-130
  // us here: the kernel's timer slack), then waits on its condition variable. A message from
  // outside the scheduler (the API, the network, the UCX progress thread, a spawn) notifies only
  // a worker in that last phase: one in the sleeping polls finds it when its sleep ends. A
  // transfer's critical path has six such messages. With 20 sleeping polls a one-in-flight 4 KiB
  // transfer took 0.58 ms at p50, without them 0.30, and an idle node woke 84 times a second
  // instead of 64 (issue 13; bench/RESULTS.md, "Scheduler wake-ups"). So a worker spins, then
  // waits to be notified; only stealing what another worker queued for itself waits for the
  // 50 ms timeout of that wait.
  p->cfg.set("work-stealing.moderate-poll-attempts", std::size_t{0});
  p->cfg.set("work-stealing.relaxed-sleep-duration", caf::timespan{std::chrono::milliseconds{50}});
  p->cfg.set("logger.verbosity", caf::atom("quiet"));
  p->sys = std::make_unique<caf::actor_system>(p->cfg);
  supervisor_spec spec;
  spec.children = p->children;
  spec.health = p->health;
  spec.transport = transport_spec{p->services, p->health};
  spec.pool = pool_spec{config.staging_slots, config.staging_slot_bytes,
                        std::make_shared<staging_slots>(), p->children, p->health,
                        p->services->ledger};
  spec.sender.node_name = config.node_name;
  spec.sender.layout_tag = config.layout_tag;
  spec.sender.registry = p->registry;
  spec.sender.default_park_ms = config.default_deadline_ms;
  spec.sender.limits = fetch_limits{config.max_request_id_bytes, config.max_blocks_per_request};
  spec.sender.max_parked = config.max_parked_fetches;
  spec.sender.max_parked_per_peer = config.max_parked_fetches_per_peer;
  spec.sender.health = p->health;
  spec.sender.book = p->book;
  spec.receiver = receiver_spec{config.max_fetches_in_flight, p->admissions, p->registry};
  spec.progress_deadline_ms = config.progress_deadline_ms;
  spec.listen_host = config.listen_host;
  spec.network_stall_ms = config.network_stall_ms;
  if (p->tls) {
    // The policy outlives the actor system, so every probe job finds it.
    spec.on_network_thread = [tls = p->tls.get()] { tls->sweep(); };
  }
  p->supervisor = spawn_health_supervisor(*p->sys, std::move(spec));
  // The supervisor is this node's anchor: its address goes out in every fetch the node sends,
  // and CAF 0.17 lets whoever holds an address end the actor (a `kill` skips its exit handler).
  // Ended before stop(), it restarts nothing and checks no deadline any more: the node says so,
  // and stop() tells the children to exit itself.
  p->supervisor->attach_functor(
    [health = p->health, stopping = p->stopping](const caf::error& why) {
      if (!stopping->load())
        health->set_unhealthy("the node's health supervisor ended (" + describe_error(why) +
                              "): nothing restarts this node's actors any more; stop the node "
                              "and start it again");
    });
  auto header = std::make_shared<fetch_msg>();
  header->node_name = config.node_name;
  header->epoch = p->epoch;
  header->anchor = caf::actor_cast<caf::actor_addr>(p->supervisor);
  header->layout_tag = config.layout_tag;
  p->fetch_header = std::move(header);
  auto& sys = *p->sys;
  auto kids = p->children->current();
  std::unique_ptr<node> n{new node(std::move(p))};
  auto& impl = *n->impl_;
  // The staging buffers: allocated by the transport for the pool before start returns.
  auto slots = ask<std::uint32_t>(sys, kids.pool, setup_timeout, ready_atom::value);
  if (!slots) {
    n->stop(std::chrono::milliseconds{0});
    return out_t{slots.error()};
  }
  auto port = impl.tls ? caf::openssl::publish(kids.sender, config.listen_port,
                                               config.listen_host.c_str(), true)
                       : sys.middleman().publish(kids.sender, config.listen_port,
                                                 config.listen_host.c_str(), true);
  if (!port) {
    auto msg = "cannot listen on " + config.listen_host + ":" +
               std::to_string(config.listen_port) + ": " + sys.render(port.error());
    n->stop(std::chrono::milliseconds{0});
    return out_t{errc::transport_error, msg};
  }
  impl.port = *port;
  caf::anon_send(impl.supervisor, caf::publish_atom::value, *port);
  if (!config.metrics_listen.empty()) {
    auto http = start_operator_endpoint(*n);
    if (!http) {
      n->stop(std::chrono::milliseconds{0});
      return out_t{http.error()};
    }
    impl.http = std::move(http.value());
    logger()->info("node '{}': /metrics and /healthz on {} (port {})", config.node_name,
                   config.metrics_listen, impl.http->port());
  }
  logger()->info("node '{}' epoch {:#x} listening on {}:{} (UCX transports: {}, TLS {})",
                 config.node_name, impl.epoch, config.listen_host, *port, config.transport,
                 impl.tls ? "on" : "off");
  if (!impl.tls)
    logger()->warn("node '{}': TLS is off (tls_certificate, tls_key, tls_ca): any process that "
                   "reaches {}:{} can fetch what this node offers",
                   config.node_name, config.listen_host, *port);
  return n;
}

std::uint16_t node::metrics_port() const noexcept {
  return impl_->http ? impl_->http->port() : 0;
}

std::string node::metrics() const {
  auto& p = *impl_;
  ops::metrics_input in;
  in.node_name = p.config.node_name;
  in.epoch = p.epoch;
  in.health = health();
  in.send = p.health->side(request_side::send);
  in.receive = p.health->side(request_side::receive);
  in.peers = p.peers->size();
  return ops::prometheus_text(in);
}

std::uint16_t node::port() const noexcept {
  return impl_->port;
}

const node_config& node::config() const noexcept {
  return impl_->config;
}

std::uint64_t node::epoch() const noexcept {
  return impl_->epoch;
}

result<region_id> node::register_region(void* ptr, std::size_t bytes, memory_kind kind) {
  if (impl_->stopped)
    return result<region_id>{errc::stopped, "the node is stopped"};
  if (ptr == nullptr || bytes == 0)
    return result<region_id>{errc::invalid_argument,
                             "register_region needs a non-null pointer and a non-zero size"};
  const bool device = kind == memory_kind::cuda;
  if (device && !impl_->device_memory)
    return result<region_id>{errc::unsupported,
                             "cuda region refused: " + impl_->no_device_memory};
  auto reg = ask<registered_memory>(*impl_->sys, impl_->children->current().transport,
                                    setup_timeout, register_atom::value, addr_of(ptr),
                                    std::uint64_t{bytes}, device);
  if (!reg)
    return result<region_id>{reg.error()};
  return impl_->regions->add(
    region_info{reg->base, reg->bytes, kind, std::move(reg.value().packed_rkey)});
}

result<region_id> node::allocate_region(std::size_t bytes) {
  if (impl_->stopped)
    return result<region_id>{errc::stopped, "the node is stopped"};
  if (bytes == 0)
    return result<region_id>{errc::invalid_argument, "allocate_region needs a non-zero size"};
  auto reg = ask<registered_memory>(*impl_->sys, impl_->children->current().transport,
                                    setup_timeout, allocate_atom::value, std::uint64_t{bytes});
  if (!reg)
    return result<region_id>{reg.error()};
  return impl_->regions->add(region_info{reg->base, reg->bytes, memory_kind::host,
                                         std::move(reg.value().packed_rkey), true});
}

void* node::region_base(region_id r) const noexcept {
  return ptr_of(impl_->regions->find(r).base);
}

namespace {

// A layout tag as an error message shows it: quoted if printable, else its first bytes in hex.
std::string render_tag(const std::string& tag) {
  bool printable = std::all_of(tag.begin(), tag.end(),
                               [](char c) { return c >= 0x20 && c < 0x7f; });
  if (printable && tag.size() <= 80)
    return "'" + tag + "'";
  static const char* hex = "0123456789abcdef";
  std::string out = std::to_string(tag.size()) + " bytes 0x";
  for (std::size_t i = 0; i < tag.size() && i < 16; ++i) {
    out += hex[static_cast<unsigned char>(tag[i]) >> 4];
    out += hex[static_cast<unsigned char>(tag[i]) & 15];
  }
  return out + (tag.size() > 16 ? "..." : "");
}

}  // namespace

result<peer_id> node::connect(const std::string& host, std::uint16_t port) {
  if (impl_->stopped)
    return result<peer_id>{errc::stopped, "the node is stopped"};
  auto& sys = *impl_->sys;
  caf_thread_scope unpin;
  caf::scoped_actor self{sys};
  result<peer_id> out{errc::peer_unreachable, "no answer"};
  auto timeout = std::chrono::milliseconds{impl_->config.connect_timeout_ms};
  auto until = std::chrono::steady_clock::now() + timeout;
  auto where = host + ":" + std::to_string(port);
  sender_actor entry;
  self->request(network_of(sys), timeout, caf::connect_atom::value, host, port)
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
        entry = caf::actor_cast<sender_actor>(std::move(ptr));
      },
      [&](caf::error& err) {
        out = result<peer_id>{errc::peer_unreachable,
                              "cannot connect to " + where + ": " + describe_error(err)};
      });
  if (!entry)
    return out;
  auto left = [until] {
    return std::max(std::chrono::milliseconds{1},
                    std::chrono::duration_cast<std::chrono::milliseconds>(
                      until - std::chrono::steady_clock::now()));
  };
  // The peer's blocks must be what ours are (model, layout, dtype...): asked before any transfer.
  bool compatible = false;
  self->request(entry, left(), layout_atom::value)
    .receive(
      [&](const std::string& tag) {
        if (tag != impl_->config.layout_tag) {
          out = result<peer_id>{errc::incompatible_peer,
                                "the node at " + where + " declares layout tag " +
                                  render_tag(tag) + ", this node " +
                                  render_tag(impl_->config.layout_tag) +
                                  ": not connected (node_config::layout_tag)"};
          return;
        }
        compatible = true;
      },
      [&](caf::error& err) {
        out = result<peer_id>{errc::peer_unreachable,
                              "the node at " + where + " did not say its layout tag: " +
                                describe_error(err)};
      });
  if (!compatible)
    return out;
  // Which process it is: if it maps our UCX-allocated memory, its end proves its writes ended
  // (F20). Not an admission check: a peer that does not say stays unknown (nothing proven).
  process_identity process;
  self->request(entry, left(), identity_atom::value)
    .receive([&](process_identity& p) { process = std::move(p); }, [&](caf::error&) {});
  // The same node again (CAF hands out one proxy per remote actor): the same peer id, so that
  // connecting per transfer does not grow the peer list.
  std::uint32_t evicted = 0;
  out = peer_id{impl_->peers->add(entry, std::move(process), &evicted)};
  if (evicted > 0)
    logger()->info("connected to {}: the least recently used peer was forgotten (max_peers {})",
                   where, impl_->config.max_peers);
  return out;
}

errc node::disconnect(peer_id peer) {
  return impl_->peers->remove(peer.value) ? errc::none : errc::not_connected;
}

namespace {

// Request ids are 1 .. max_request_id_bytes bytes, here as on the wire (the peer's limit may be
// lower: its refusal then comes with the fetch's answer).
std::optional<std::string> bad_request_id(const node::impl& p, const std::string& id) {
  if (id.empty())
    return std::string{"a request id must not be empty"};
  if (id.size() > p.config.max_request_id_bytes)
    return "request id of " + std::to_string(id.size()) + " bytes is longer than the " +
           std::to_string(p.config.max_request_id_bytes) + " allowed (max_request_id_bytes)";
  return std::nullopt;
}

}  // namespace

transfer_handle node::send(const std::string& request_id, const std::vector<block_span>& blocks,
                           const transfer_options& options) {
  auto& p = *impl_;
  caf_thread_scope unpin;  // sends to the sender
  if (p.stopped || !p.accepting.load())
    return refused(request_id, errc::stopped, "the node is stopping; send refused");
  if (auto why = bad_request_id(p, request_id))
    return refused(request_id, errc::invalid_argument, "send: " + *why);
  auto resolved = p.regions->resolve(blocks);
  if (!resolved)
    return refused(request_id, resolved.error().code,
                   "send '" + request_id + "': " + resolved.error().message);
  if (auto bad = check_layers(options.layer_blocks, blocks.size()))
    return refused(request_id, bad->code, "send '" + request_id + "': " + bad->message);
  sender_actor bound;
  if (options.bound_to.value != 0 && !(bound = entry_of(p, options.bound_to)))
    return refused(request_id, errc::not_connected,
                   "send '" + request_id + "': bound to peer " +
                     std::to_string(options.bound_to.value) + ", which is not connected");
  auto st = std::make_shared<detail::handle_state>(request_id, p.events);
  st->set_layers(static_cast<std::uint32_t>(options.layer_blocks.size()));
  if (!p.registry->reserve(request_id, st))
    return refused(request_id, errc::duplicate_request_id,
                   "request id '" + request_id + "' is already in use on this node");
  // UCX cannot read device memory here: blocks in a cuda region always go through staging.
  const bool staged =
    options.stage_through_pool || p.regions->any_of_kind(resolved.value(), memory_kind::cuda);
  // No actor until a peer fetches it: the offer waits in the book (offer_book.hpp), its owner
  // inside; the sender learns of it (a fetch may be parked for it already).
  p.registry->attach_owner(request_id, caf::actor{}, true);
  auto o = make_held(send_spec{context_for(p, st, options), std::move(resolved.value()),
                                staged, std::move(bound), options.layer_blocks},
                      request_side::send, p.sys->clock().now());
  if (!p.book->add(o)) {  // stop() closed the book after the check above
    end_held(std::move(o), make_result(transfer_status::failed, errc::stopped,
                                       "the node is stopping; send refused"));
    return transfer_handle{std::move(st)};
  }
  caf::anon_send(p.children->current().sender, announce_atom::value, request_id);
  return transfer_handle{std::move(st)};
}

transfer_handle node::receive(const std::string& request_id, peer_id peer,
                              const std::vector<block_span>& blocks,
                              const transfer_options& options) {
  KVFERRY_HOP(api_receive);
  auto& p = *impl_;
  caf_thread_scope unpin;  // sends to the receiver
  if (p.stopped || !p.accepting.load())
    return refused(request_id, errc::stopped, "the node is stopping; receive refused");
  if (auto why = bad_request_id(p, request_id))
    return refused(request_id, errc::invalid_argument, "receive: " + *why);
  auto from = p.peers->use(peer.value);
  if (!from.entry)
    return refused(request_id, errc::not_connected,
                   "receive '" + request_id + "': peer " + std::to_string(peer.value) +
                     " is not connected (use connect())");
  auto resolved = p.regions->resolve(blocks);
  if (!resolved)
    return refused(request_id, resolved.error().code,
                   "receive '" + request_id + "': " + resolved.error().message);
  if (auto overlap = region_table::find_overlap(resolved.value()))
    return refused(request_id, overlap->code, "receive '" + request_id + "': " + overlap->message);
  std::vector<std::uint32_t> ranges;
  for (auto& r : options.fetch_ranges) {
    ranges.push_back(r.first);
    ranges.push_back(r.count);
  }
  // The offer's size is the sender's to check; here: well formed, and one block each.
  auto wanted = count_ranges(ranges, std::uint64_t{1} << 33);
  if (!wanted)
    return refused(request_id, wanted.error().code,
                   "receive '" + request_id + "': " + wanted.error().message);
  if (!ranges.empty() && wanted.value() != resolved.value().size())
    return refused(request_id, errc::size_mismatch,
                   "receive '" + request_id + "': the block ranges select " +
                     std::to_string(wanted.value()) + " blocks for " +
                     std::to_string(resolved.value().size()) + " destination blocks");
  auto st = std::make_shared<detail::handle_state>(request_id, p.events);
  if (!p.registry->reserve(request_id, st))
    return refused(request_id, errc::duplicate_request_id,
                   "request id '" + request_id + "' is already in use on this node");
  // No actor until the receiver admits it: it waits in the admission queue, its owner inside.
  auto q = make_held(recv_spec{context_for(p, st, options), std::move(from.entry),
                               std::move(resolved.value()), std::move(ranges), p.fetch_header,
                               p.regions, p.windows, std::move(from.process), p.worker_address},
                     request_side::receive, p.sys->clock().now());
  if (!p.admissions->add(q)) {  // stop() closed the queue after the check above
    end_held(std::move(q), make_result(transfer_status::failed, errc::stopped,
                                       "the node is stopping; receive refused"));
    return transfer_handle{std::move(st)};
  }
  caf::anon_send(p.children->current().receiver, admit_atom::value);
  return transfer_handle{std::move(st)};
}

error_info node::layer_ready(const std::string& request_id, std::uint32_t layer) {
  auto& p = *impl_;
  const auto what = "layer_ready('" + request_id + "', " + std::to_string(layer) + ")";
  if (p.stopped)
    return {errc::stopped, what + ": the node is stopped"};
  caf::actor owner;
  auto handle = p.registry->send_handle_of(request_id, &owner);
  if (!handle)
    return {errc::unknown_request_id, what + ": no send of that id on this node"};
  if (auto r = handle->result())
    return {errc::unknown_request_id, what + ": the send has ended (" + to_string(r->status) +
                                        ", " + to_string(r->code) + "); no layer is needed"};
  switch (handle->claim_layer(layer)) {
    case errc::none:
      break;
    case errc::out_of_range:
      return {errc::out_of_range, what + ": the send has fewer layers"};
    default:
      return {errc::invalid_argument, handle->layers() == 0
                                        ? what + ": the send was not offered in layers "
                                                 "(transfer_options::layer_blocks)"
                                        : what + ": that layer was marked ready already"};
  }
  // Recorded in the offer while no peer has fetched it; else its actor hears it (the sender
  // registers the actor before the offer leaves the book).
  if (p.book->mark_ready(request_id, layer))
    return {};
  if (p.registry->send_handle_of(request_id, &owner) == handle && owner)
    caf::anon_send(owner, layer_atom::value, layer);
  return {};
}

cancel_result node::cancel(const std::string& request_id) {
  if (impl_->stopped)
    return cancel_result::backend_unhealthy;
  if (auto o = impl_->book->take(request_id)) {  // no peer fetched it: it ends here
    end_held(std::move(*o), make_result(transfer_status::cancelled, errc::cancelled,
                                        "cancelled by the engine before a peer fetched"));
    return cancel_result::cancelled_before_advertise;
  }
  if (auto q = impl_->admissions->take(request_id)) {  // not admitted: it ends here
    end_held(std::move(*q), make_result(transfer_status::cancelled, errc::cancelled,
                                        "cancelled by the engine before the fetch was sent"));
    return cancel_result::cancelled_before_advertise;
  }
  bool recent = false;
  auto owner = impl_->registry->owner_of(request_id, &recent);
  if (!owner) {
    // Still registered without an actor: taken out of the book or the queue by its end.
    if (recent || impl_->registry->registered(request_id))
      return cancel_result::already_complete;
    return cancel_result::not_found;
  }
  auto out = cancel_result::backend_unhealthy;
  caf_thread_scope unpin;
  caf::scoped_actor self{*impl_->sys};
  self->request(owner, std::chrono::milliseconds{impl_->config.cancel_timeout_ms},
                cancel_atom::value)
    .receive([&](cancel_result r) { out = r; },
             [&](caf::error& err) {
               // The owner finished between the lookup and the request: nothing left to cancel.
               out = err == caf::sec::request_timeout ? cancel_result::backend_unhealthy
                                                      : cancel_result::already_complete;
             });
  return out;
}

result<cancel_result> node::decline(const std::string& request_id, peer_id peer) {
  auto& p = *impl_;
  if (p.stopped)
    return result<cancel_result>{errc::stopped, "the node is stopped"};
  auto entry = entry_of(p, peer);
  if (!entry)
    return result<cancel_result>{errc::not_connected,
                                 "decline '" + request_id + "': peer " +
                                   std::to_string(peer.value) + " is not connected"};
  auto answer = ask<cancel_result>(*p.sys, entry,
                                   std::chrono::milliseconds{p.config.cancel_timeout_ms},
                                   decline_atom::value, request_id);
  if (!answer && answer.error().code == errc::internal_error)
    return result<cancel_result>{errc::peer_unreachable,
                                 "decline '" + request_id + "': " + answer.error().message};
  return answer;
}

std::vector<transfer_event> node::poll() {
  return impl_->events->drain();
}

std::vector<transfer_event> node::wait_events(std::chrono::milliseconds timeout) {
  return impl_->events->wait_and_drain(timeout);
}

bool node::wait_health(const std::function<bool(const health_snapshot&)>& pred,
                       std::chrono::milliseconds timeout) const {
  return impl_->health->wait_for(pred, timeout);
}

health_snapshot node::health() const {
  auto h = impl_->health->snapshot();
  h.tls_refused = impl_->tls ? impl_->tls->refused() : 0;
  return h;
}

std::vector<std::string> node::transports_to(std::uint64_t peer_epoch) const {
  if (impl_->stopped)
    return {};
  auto r = ask<std::vector<std::string>>(*impl_->sys, impl_->children->current().transport,
                                         diagnostics_timeout, endpoint_atom::value, peer_epoch);
  return r ? std::move(r.value()) : std::vector<std::string>{};
}

std::vector<std::uint64_t> node::sent_to_peers() const {
  if (impl_->stopped)
    return {};
  auto r = ask<std::vector<std::uint64_t>>(*impl_->sys, impl_->children->current().transport,
                                           diagnostics_timeout, peers_atom::value);
  return r ? std::move(r.value()) : std::vector<std::uint64_t>{};
}

void node::stop(std::chrono::milliseconds drain_timeout) {
  if (!impl_ || impl_->stopped)
    return;
  auto& p = *impl_;
  p.http.reset();  // no scrape reads the node while it is torn down
  p.stopping->store(true);
  p.accepting.store(false);
  p.health->wait_for([](const health_snapshot& h) { return h.in_flight == 0; }, drain_timeout);
  // Offers no peer fetched, and receives not admitted, end here (nothing of them was exposed);
  // none can be handed to an actor any more once the book and the queue are closed.
  for (auto& o : p.book->close())
    end_held(std::move(o), make_result(transfer_status::failed, errc::stopped,
                                       "the node stopped before a peer fetched the send"));
  for (auto& q : p.admissions->close())
    end_held(std::move(q), make_result(transfer_status::failed, errc::stopped,
                                       "the node stopped before the fetch was sent"));
  for (auto& owner : p.registry->all_owners())
    caf::anon_send_exit(owner, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(p.supervisor, caf::exit_reason::user_shutdown);
  // The supervisor takes its children down with it (its exit is ahead of any DOWN from them in
  // its mailbox, so it restarts none of them); if it ended early (see start), only this does.
  auto kids = p.children->current();
  for (auto which : all_children)
    if (auto kid = kids.get(which))
      caf::anon_send_exit(kid, caf::exit_reason::user_shutdown);
  p.sys->await_all_actors_done();
  p.stopped = true;
  // Every request has ended; those whose memory was never proven quiescent are quarantined.
  auto quarantined = p.registry->take_quarantined();
  p.peers->clear();
  p.supervisor = nullptr;
  p.children->set({});
  // No actor is left: destroying the engines cancels and completes every operation, after which
  // no memory of the node is touched. Their last callbacks still hold actor handles, so the
  // actor system goes after them.
  p.services->copier.reset();
  p.services->engine.reset();
  p.services.reset();
  p.sys.reset();
  // The transport is gone, so nothing can read or write that memory any more: released (F22).
  for (auto& h : quarantined) {
    h->release();
    p.health->request_released_late();
  }
}

}  // namespace kvferry
