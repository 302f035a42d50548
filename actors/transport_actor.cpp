// transport actor
//
//   put_request ──> [posted] ──engine completion (any outcome)──> answer the requester
//                     │  ^
//              cancel │  │ the completion still comes exactly once (engine contract)
//                     v  │
//                  [cancel asked]
//
// The actor never blocks: the engine posts UCX work to its own progress thread and reports
// completions back as op_done messages. A requester's answer is sent only after the engine's
// completion callback, which is the transport's proof of quiescence for the batch's memory.

#include "actors/transport_actor.hpp"

#include "actors/node_core.hpp"

#include <unordered_map>
#include <vector>

namespace kvferry {

namespace {

struct pending_op {
  std::uint64_t engine_op = 0;
  std::uint64_t bytes = 0;
  caf::typed_response_promise<std::uint64_t> promise;
};

struct transport_state {
  std::shared_ptr<node_core> core;
  std::unordered_map<std::uint64_t, pending_op> ops;  // token -> operation
  // Peer epoch -> the worker address its endpoint was made for. A peer's address changes when
  // it replaced a wedged worker; its next fetch carries the new one, and we connect again.
  std::unordered_map<std::uint64_t, std::vector<std::uint8_t>> connected;
  static inline const char* name = "kvferry.transport";
};

transport_actor::behavior_type transport_impl(
  transport_actor::stateful_pointer<transport_state> self, std::shared_ptr<node_core> core) {
  self->state.core = std::move(core);
  return {
    [=](put_atom, put_request& req) -> caf::typed_response_promise<std::uint64_t> {
      auto rp = self->make_response_promise<std::uint64_t>();
      auto& st = self->state;
      if (st.ops.count(req.token) > 0) {
        rp.deliver(caf::make_error(errc::internal_error,
                                   "transport token " + std::to_string(req.token) + " in use"));
        return rp;
      }
      auto& engine = *st.core->engine;
      if (auto& known = st.connected[req.peer_epoch]; known != req.peer_address) {
        known = req.peer_address;
        engine.connect(req.peer_epoch, req.peer_address);
      }
      transport::put_batch batch;
      batch.peer = req.peer_epoch;
      batch.rkeys = std::move(req.rkeys);
      batch.ops.reserve(req.items.size());
      std::uint64_t bytes = 0;
      for (auto& it : req.items) {
        batch.ops.push_back(transport::put_op{reinterpret_cast<const void*>(it.local_addr),
                                              static_cast<std::size_t>(it.bytes),
                                              it.remote_addr, it.rkey_index});
        bytes += it.bytes;
      }
      auto token = req.token;
      auto me = caf::actor_cast<transport_actor>(self);
      std::uint64_t op = 0;
      try {
        op = engine.put(std::move(batch), [me, token](errc code, const std::string& detail) {
          caf::anon_send(me, op_done_atom::value, token,
                         code == errc::none ? caf::error{} : caf::make_error(code, detail));
        });
      } catch (...) {
        // The engine threw before taking the batch: nothing was posted, so this request fails
        // on its own and the transport keeps serving the others (F10).
        rp.deliver(caf::make_error(errc::internal_error,
                                   "the transport threw while posting puts: " +
                                     describe_exception(std::current_exception())));
        return rp;
      }
      st.ops.emplace(token, pending_op{op, bytes, rp});
      return rp;
    },
    [=](cancel_atom, std::uint64_t token) {
      auto it = self->state.ops.find(token);
      if (it != self->state.ops.end())
        self->state.core->engine->cancel(it->second.engine_op);
    },
    [=](op_done_atom, std::uint64_t token, caf::error& err) {
      auto it = self->state.ops.find(token);
      if (it == self->state.ops.end())
        return;  // its requester was answered by an earlier incarnation; nothing to do
      auto op = std::move(it->second);
      self->state.ops.erase(it);
      if (!err)
        op.promise.deliver(op.bytes);
      else
        op.promise.deliver(std::move(err));
    },
    [=](peer_down_atom, std::uint64_t peer_epoch, const caf::error&) {
      // The engine already failed that peer's operations; reconnect on the next put.
      self->state.connected.erase(peer_epoch);
    },
    [=](quiescent_atom, std::uint64_t token) { return self->state.ops.count(token) == 0; },
    [=](forget_peer_atom, std::uint64_t peer_epoch) {
      // Endpoint state stays bounded as peers come and go; in-flight puts to it complete with
      // an error (each still answers its requester exactly once).
      if (self->state.connected.erase(peer_epoch) > 0)
        self->state.core->engine->disconnect(peer_epoch);
    },
  };
}

}  // namespace

transport_actor spawn_transport_actor(caf::actor_system& sys, std::shared_ptr<node_core> core) {
  return sys.spawn(transport_impl, std::move(core));
}

}  // namespace kvferry
