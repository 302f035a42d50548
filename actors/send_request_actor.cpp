// send-request actor (one per prefill-side transfer)
//
//   waiting_for_peer ──fetch (valid)──> putting ──transport answer──> done: finish + release
//        │   └──fetch (invalid)──> done: error to the fetcher, failed, release (nothing posted)
//        │ engine cancel                 │ engine cancel / peer cancel_fetch
//        v                               v
//   done: cancelled_before_advertise   cancel asked of the transport; its answer (cancelled,
//   (nothing exposed, release now)     or success if the puts won the race) ends the request
//
//   transport DOWN while putting ──> failed now, memory NOT released (no proof of quiescence)
//
// Exactly one exit: request_owner::finish() then release() (or not), then quit.

#include "actors/send_request_actor.hpp"

#include "actors/node_core.hpp"

namespace kvferry {

namespace {

enum class send_phase { waiting_for_peer, putting, done };

struct send_request_state {
  std::unique_ptr<request_owner> owner;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> blocks;
  send_phase phase = send_phase::waiting_for_peer;
  bool cancel_requested = false;
  std::uint64_t fetch_epoch = 0;
  transport_actor transport;
  static inline const char* name = "kvferry.send_request";
};

using self_ptr = send_request_actor::stateful_pointer<send_request_state>;

void end_request(self_ptr self, transfer_result r, bool quiescent) {
  auto& st = self->state;
  st.phase = send_phase::done;
  st.owner->conclude(std::move(r), quiescent);
  self->quit();
}

void ask_transport_to_stop(self_ptr self) {
  auto& st = self->state;
  if (st.cancel_requested)
    return;
  st.cancel_requested = true;
  self->send(st.transport, cancel_atom::value, self->id());
}

send_request_actor::behavior_type send_request_impl(self_ptr self, send_spec spec) {
  auto& st = self->state;
  st.owner = std::make_unique<request_owner>(spec.core, spec.handle, request_side::send);
  st.blocks = std::move(spec.blocks);
  st.transport = spec.core->children().transport;
  self->monitor(st.transport);
  // The node is stopping: the terminal event says so; the memory is released only by the
  // engine's teardown, after which nothing touches it.
  self->set_exit_handler(
    [=](caf::exit_msg& em) { end_request(self, stopped_result(em.reason), false); });
  self->set_down_handler([=](caf::down_msg& dm) {
    if (dm.source == self->state.transport.address() && self->state.phase == send_phase::putting)
      end_request(self,
                  make_result(transfer_status::failed, errc::backend_unhealthy,
                              "the transport terminated while puts were in flight; the source "
                              "blocks stay pinned (quiescence unknown)"),
                  false);
  });
  self->send(spec.core->children().sender, announce_atom::value, st.owner->id(),
             caf::actor_cast<send_request_actor>(self));
  return {
    [=](fetch_msg& fetch) -> caf::typed_response_promise<transfer_done> {
      auto rp = self->make_response_promise<transfer_done>();
      auto& st = self->state;
      if (st.phase != send_phase::waiting_for_peer) {
        rp.deliver(caf::make_error(errc::duplicate_request_id,
                                   "request '" + fetch.request_id + "' is already being sent"));
        return rp;
      }
      auto plan = plan_puts(st.blocks, fetch);
      if (!plan) {
        rp.deliver(plan.error());
        end_request(self, result_from_error(plan.error()), true);
        return rp;
      }
      st.phase = send_phase::putting;
      st.fetch_epoch = fetch.epoch;
      st.owner->set_in_flight();
      st.owner->core().note_peer(fetch.epoch);
      put_request req{self->id(), fetch.epoch, std::move(fetch.worker_address),
                      std::move(fetch.rkeys), std::move(*plan)};
      auto id = st.owner->id();
      self->request(st.transport, caf::infinite, put_atom::value, std::move(req))
        .then(
          [=](std::uint64_t bytes) mutable {
            rp.deliver(transfer_done{id, bytes});
            end_request(self, make_result(transfer_status::succeeded, errc::none, {}, bytes),
                        true);
          },
          [=](caf::error& err) mutable {
            rp.deliver(err);
            auto r = result_from_error(err);
            if (self->state.cancel_requested && r.code == errc::cancelled)
              r.status = transfer_status::cancelled;
            // The transport answers only after every UCX request completed: quiescent.
            end_request(self, std::move(r), true);
          });
      return rp;
    },
    [=](cancel_atom) -> cancel_answer {
      auto& st = self->state;
      switch (st.phase) {
        case send_phase::waiting_for_peer:
          end_request(self,
                      make_result(transfer_status::cancelled, errc::cancelled,
                                  "cancelled by the engine before a peer fetched"),
                      true);
          return cancel_answer::cancelled_before_advertise;
        case send_phase::putting:
          ask_transport_to_stop(self);
          return cancel_answer::cancel_requested_in_flight;
        default:
          return cancel_answer::already_complete;
      }
    },
    [=](cancel_fetch_atom, const std::string&, std::uint64_t epoch) {
      auto& st = self->state;
      if (st.phase == send_phase::putting && epoch == st.fetch_epoch)
        ask_transport_to_stop(self);
    },
  };
}

}  // namespace

caf::expected<std::vector<put_item>>
plan_puts(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& source,
          const fetch_msg& fetch) {
  if (fetch.blocks.size() != source.size())
    return caf::make_error(errc::size_mismatch,
                           "fetch for '" + fetch.request_id + "' names " +
                             std::to_string(fetch.blocks.size()) + " destination blocks, the "
                             "sender has " + std::to_string(source.size()));
  std::vector<put_item> out;
  out.reserve(source.size());
  for (std::size_t i = 0; i < source.size(); ++i) {
    const auto& dst = fetch.blocks[i];
    if (dst.bytes != source[i].second)
      return caf::make_error(errc::size_mismatch,
                             "block " + std::to_string(i) + " of '" + fetch.request_id +
                               "': destination has " + std::to_string(dst.bytes) +
                               " bytes, source " + std::to_string(source[i].second));
    if (dst.rkey_index >= fetch.rkeys.size())
      return caf::make_error(errc::malformed_message,
                             "block " + std::to_string(i) + " of '" + fetch.request_id +
                               "' names rkey " + std::to_string(dst.rkey_index) + " of " +
                               std::to_string(fetch.rkeys.size()));
    if (dst.addr + dst.bytes < dst.addr)
      return caf::make_error(errc::out_of_range, "block " + std::to_string(i) +
                                                   " wraps around the address space");
    if (!out.empty()) {
      auto& last = out.back();
      if (last.rkey_index == dst.rkey_index && last.local_addr + last.bytes == source[i].first &&
          last.remote_addr + last.bytes == dst.addr) {
        last.bytes += dst.bytes;
        continue;
      }
    }
    out.push_back(put_item{source[i].first, dst.bytes, dst.addr, dst.rkey_index});
  }
  return out;
}

send_request_actor spawn_send_request_actor(caf::actor_system& sys, send_spec spec) {
  return sys.spawn(send_request_impl, std::move(spec));
}

}  // namespace kvferry
