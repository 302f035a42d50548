// transport actor
//
//   put_request ──> [puts posted] ──engine completion (any outcome)──> answer the requester
//   copy        ──> [copy queued] ──copy engine completion──────────> answer the requester
//   (a requester may have one batch of puts and one copy outstanding at once: a staged send
//    gathers its next chunk while the last one is put)
//                     │  ^
//   cancel (puts only)│  │ the completion still comes exactly once (engine contract)
//                     v  │
//                  [cancel asked]
//
//   register / allocate ──> the engine registers (or allocates) memory; kept for the node's life
//   address / endpoint / peers / refresh ──> what the engine knows (set-up and diagnostics)
//
// The actor never blocks on a transfer: both engines work on their own threads and report
// completions back as op_done messages. A requester's answer is sent only after the completion
// callback, which is the proof that the operation's memory is quiescent. The callback also
// marks the operation done in the op ledger (transport_services), which outlives this actor: a
// requester whose transport crashed learns its proof there.

#include "actors/transport_actor.hpp"
#include "core/hop_trace.hpp"

#include "actors/node_health.hpp"
#include "actors/peer_input.hpp"
#include "actors/request_lifecycle.hpp"
#include "actors/transport_services.hpp"

#include <cstring>
#include <set>
#include <unordered_map>
#include <vector>

namespace kvferry {

namespace {

struct pending_op {
  bool is_put = false;
  std::uint64_t engine_op = 0;  // the engine's id, for cancel (puts only)
  std::uint64_t bytes = 0;
  caf::typed_response_promise<put_done> put_promise;      // a put's requester
  caf::typed_response_promise<std::uint64_t> copy_promise;  // a copy's
};

struct transport_state {
  transport_spec spec;
  std::unordered_map<std::uint64_t, pending_op> puts;    // token -> its batch of puts
  std::unordered_map<std::uint64_t, pending_op> copies;  // token -> its copy
  std::unordered_map<std::uint64_t, pending_op>& ops(bool is_put) {
    return is_put ? puts : copies;
  }
  // Peer epoch -> the worker address its endpoint was made for. A peer's address changes when
  // it replaced a wedged worker; its next fetch carries the new one, and we connect again.
  std::unordered_map<std::uint64_t, std::vector<std::uint8_t>> connected;
  std::set<std::uint64_t> put_to;  // every peer epoch we posted puts to (diagnostics)
  static inline const char* name = "kvferry.transport";

  transport::engine& engine() { return *spec.services->engine; }
};

using self_ptr = transport_actor::stateful_pointer<transport_state>;

// The engine's counters, into health.
void report_engine_counts(self_ptr self) {
  const auto stats = self->state.engine().stats();
  self->state.spec.health->set_engine_counts(stats.worker_replacements, stats.writes_refused,
                                             stats.lost_wakeups);
}

template <class Promise>
Promise refuse(Promise rp, errc code, std::string msg) {
  rp.deliver(make_kvferry_error(code, std::move(msg)));
  return rp;
}

// Reports a completion from another thread: to the ledger (whoever waits there, even if this
// actor is gone), then as an op_done message to this actor.
auto completion_to(self_ptr self, std::uint64_t token, bool is_put) {
  auto me = caf::actor_cast<transport_actor>(self);
  auto ledger = self->state.spec.services->ledger;
  return [me, ledger, token, is_put](errc code, const std::string& detail) {
    ledger->completed(token);
    if (code == errc::none)
      caf::anon_send(me, op_done_atom::value, token, is_put, caf::error{}, detail);
    else
      caf::anon_send(me, op_done_atom::value, token, is_put, make_kvferry_error(code, detail),
                     std::string{});
  };
}

caf::result<registered_memory> keep(self_ptr self,
                                    result<std::shared_ptr<transport::memory_registration>> reg) {
  if (!reg)
    return make_kvferry_error(reg.error().code, reg.error().message);
  auto& r = *reg.value();
  registered_memory out{addr_of(r.base()), r.bytes(), r.packed_rkey()};
  self->state.spec.services->keep(std::move(reg.value()));
  return out;
}

caf::typed_response_promise<put_done> on_put(self_ptr self, put_request& req) {
  KVFERRY_HOP(put_at_transport);
  auto rp = self->make_response_promise<put_done>();
  auto& st = self->state;
  if (st.puts.count(req.token) > 0)
    return refuse(rp, errc::internal_error,
                  "transport token " + std::to_string(req.token) + " already has puts in flight");
  auto& engine = st.engine();
  if (auto& known = st.connected[req.peer_epoch]; known != req.peer_address) {
    known = req.peer_address;
    engine.connect(req.peer_epoch, req.peer_address);
  }
  st.put_to.insert(req.peer_epoch);
  std::uint64_t bytes = 0;
  for (auto& op : req.ops)
    bytes += op.dst.bytes;
  transport::put_batch batch{req.peer_epoch, std::move(req.rkeys), std::move(req.ops), req.window};
  std::uint64_t op = 0;
  auto& ledger = *st.spec.services->ledger;
  if (!ledger.posted(req.token))
    return refuse(rp, errc::cancelled, "the request that asked for these puts has ended");
  try {
    op = engine.put(std::move(batch), completion_to(self, req.token, true));
  } catch (...) {
    // The engine threw before taking the batch: nothing was posted, so this request fails on
    // its own and the transport keeps serving the others (F10).
    ledger.completed(req.token);
    return refuse(rp, errc::internal_error,
                  "the transport threw while posting puts: " +
                    describe_exception(std::current_exception()));
  }
  st.puts.emplace(req.token, pending_op{true, op, bytes, rp, {}});
  return rp;
}

caf::typed_response_promise<std::uint64_t> on_copy(self_ptr self, std::uint64_t token,
                                                   std::vector<copy_op>& copies) {
  auto rp = self->make_response_promise<std::uint64_t>();
  auto& st = self->state;
  if (st.copies.count(token) > 0)
    return refuse(rp, errc::internal_error,
                  "transport token " + std::to_string(token) + " already has a copy in flight");
  std::uint64_t bytes = 0;
  for (auto& c : copies)
    bytes += c.dst.bytes;
  std::uint64_t ticket = 0;
  auto& ledger = *st.spec.services->ledger;
  if (!ledger.posted(token))
    return refuse(rp, errc::cancelled, "the request that asked for this copy has ended");
  try {
    ticket = st.spec.services->copier->submit(std::move(copies), completion_to(self, token, false));
  } catch (...) {
    ledger.completed(token);
    return refuse(rp, errc::internal_error,
                  "the copy engine threw while taking a copy: " +
                    describe_exception(std::current_exception()));
  }
  st.copies.emplace(token, pending_op{false, ticket, bytes, {}, rp});
  return rp;
}

transport_actor::behavior_type transport_impl(self_ptr self, transport_spec spec) {
  self->state.spec = std::move(spec);
  drop_unexpected_quietly(self);
  return {
    [=](put_atom, put_request& req) { return on_put(self, req); },
    [=](copy_atom, std::uint64_t token, std::vector<copy_op>& copies) {
      return on_copy(self, token, copies);
    },
    [=](cancel_atom, std::uint64_t token) {
      auto it = self->state.puts.find(token);  // a copy runs out on its own
      if (it != self->state.puts.end())
        self->state.engine().cancel(it->second.engine_op);
    },
    [=](op_done_atom, std::uint64_t token, bool is_put, caf::error& err, std::string& how) {
      auto& ops = self->state.ops(is_put);
      auto it = ops.find(token);
      if (it == ops.end())
        return;  // its requester was answered by an earlier incarnation; nothing to do
      auto op = std::move(it->second);
      ops.erase(it);
      if (!op.is_put && !err)
        op.copy_promise.deliver(op.bytes);
      else if (!op.is_put)
        op.copy_promise.deliver(std::move(err));
      else if (!err)
        op.put_promise.deliver(put_done{op.bytes, std::move(how)});
      else
        op.put_promise.deliver(std::move(err));
    },
    [=](peer_down_atom, std::uint64_t peer_epoch, const caf::error&) {
      // The engine already failed that peer's operations; reconnect on the next put. A worker
      // replacement reports every peer this way: the count in health follows.
      self->state.connected.erase(peer_epoch);
      report_engine_counts(self);
    },
    [=](quiescent_atom, std::uint64_t token) {
      return !self->state.spec.services->ledger->in_flight(token);
    },
    [=](stale_worker_atom, std::uint64_t peer_epoch, const std::vector<std::uint8_t>& address) {
      // Only the endpoint to that worker: a later put may have connected to its successor.
      auto it = self->state.connected.find(peer_epoch);
      if (it != self->state.connected.end() && it->second == address) {
        self->state.connected.erase(it);
        self->state.engine().disconnect(peer_epoch);
      }
    },
    [=](forget_peer_atom, std::uint64_t peer_epoch) {
      // Endpoint state stays bounded as peers come and go; in-flight puts to it complete with
      // an error (each still answers its requester exactly once).
      if (self->state.connected.erase(peer_epoch) > 0)
        self->state.engine().disconnect(peer_epoch);
    },
    [=](register_atom, std::uint64_t addr, std::uint64_t bytes, bool device) {
      auto& engine = self->state.engine();
      return keep(self, device ? engine.register_device_memory(ptr_of(addr), bytes)
                               : engine.register_memory(ptr_of(addr), bytes));
    },
    [=](allocate_atom, std::uint64_t bytes) {
      auto reg = self->state.engine().allocate_memory(bytes);
      // Zero-filled, and every page faulted in now rather than by the first transfer into it.
      if (reg) {
        std::memset(reg.value()->base(), 0, bytes);
        self->state.spec.services->pin(reg.value()->base(), bytes);
      }
      return keep(self, std::move(reg));
    },
    [=](endpoint_atom, std::uint64_t peer_epoch) {
      return self->state.engine().endpoint_transports(peer_epoch);
    },
    [=](peers_atom) {
      // Diagnostics: whoever asks gets health's engine counts brought up to date first.
      report_engine_counts(self);
      auto& p = self->state.put_to;
      return std::vector<std::uint64_t>(p.begin(), p.end());
    },
    [=](refresh_atom) {
      report_engine_counts(self);
    },
  };
}

}  // namespace

transport_actor spawn_transport_actor(caf::actor_system& sys, transport_spec spec) {
  return sys.spawn(transport_impl, std::move(spec));
}

}  // namespace kvferry
