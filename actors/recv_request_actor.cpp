// recv-request actor (one per decode-side transfer): one behaviour per phase.
//
// Until the receiver admits it, a receive is an entry of the node's admission queue
// (receiver_actor.hpp), with no actor: the receiver spawns this one at admission, with the
// entry's owner and what is left of its deadline, and sends the fetch before it takes a message.
//
//   admitted ──window, worker address, fetch──> fetching ──the sender's answer──> end
//                                                 │ cancel: cancel_fetch to the sender
//                                                 │ deadline: timed_out delivered now,
//                                                 v   cancel_fetch to the sender
//                                            stopping ──the sender's answer──> end
//
//   The sender answers only after its puts completed, so its answer (success or a kvferry error)
//   proves the destination quiescent: released. A peer that goes away (its entry DOWN, an
//   undeliverable fetch: CAF's own errors) gives no such answer (F15, F20). The receive window
//   then is the proof: the fetch names a window opened over the destination blocks, the peer's
//   data messages land only while it is open, and the end closes it
//   (transport/receive_windows.hpp). So the request is failed and released at once, unless a
//   destination block lies in UCX-allocated memory, which a peer on this host maps and writes
//   without messages: that stays unreleased (quarantined) while the peer's process may run, and
//   is released once it provably ended (core/process_identity.hpp: a dead process has no
//   mappings).
//
//   A layer-wise send's sender tells of each layer as it lands (layer_atom, from its sender
//   actor only): fetching, each becomes a layer_landed event; the success answer lands any
//   layer not heard of yet, before the completed event.
//
//   At admission the window is opened, then our worker address read, then the fetch sent, in one
//   step. When the engine replaces a wedged worker it publishes the new address and then loses
//   every window (window_lost_atom): a window found lost right after the read is opened again and
//   the address read again; once the fetch is out, the sender writes to a worker that is gone,
//   so we fail at once (transport_error), tell the sender to stop, and release as above.
//
// Every end goes through request_base::end() (request_lifecycle.hpp).

#include "actors/recv_request_actor.hpp"
#include "core/hop_trace.hpp"

#include "actors/handle_state.hpp"

#include <algorithm>
#include <chrono>

namespace kvferry {

namespace {

struct recv_request_state {
  request_base base;
  sender_actor peer;
  std::vector<desc> blocks;  // until the fetch carries them
  std::vector<std::uint32_t> ranges;
  std::shared_ptr<const fetch_msg> header;
  std::shared_ptr<const region_table> regions;
  std::shared_ptr<transport::receive_windows> windows;
  std::function<std::vector<std::uint8_t>()> worker_address;
  transport::window_lease window;  // open from admission to the end (or until lost)
  std::uint64_t window_number = 0;  // of `window`: a window_lost naming another one is stale
  bool mappable = false;  // a destination block lies in UCX-allocated memory (see above)
  bool device = false;    // a destination block lies in a cuda region (copied in by the engine)
  process_identity peer_process;  // the prefill's process, as connect() heard it
  static inline const char* name = "kvferry.recv_request";
};

using self_ptr = recv_request_actor::stateful_pointer<recv_request_state>;
using behavior = recv_request_actor::behavior_type;

behavior fetching(self_ptr self);
behavior stopping(self_ptr self);
behavior awaiting_proof(self_ptr self, std::uint32_t checks_left);

// When a same-host prefill that maps our memory is seen gone (its connection closed), its
// process may still be finishing its exit: looked at again after these waits, then given up.
constexpr std::uint32_t proof_checks = 6;
std::chrono::milliseconds proof_wait(std::uint32_t checks_left) {
  return std::chrono::milliseconds{5u << (2 * (proof_checks - checks_left))};  // 5 ms .. 5 s
}

void end_recv(self_ptr self, transfer_result r, bool quiescent) {
  auto& st = self->state;
  // Closing the window waits for a data message being copied into it and refuses every later
  // one: with no mappable block, nothing can write the destination after this line (F20). A
  // window lost to a worker replacement was closed the same way.
  const bool had_window = st.window.token() != 0;
  st.window.close();
  if (had_window && !st.mappable)
    quiescent = true;
  if (!quiescent && had_window && r.code != errc::stopped && process_checkable(st.peer_process)) {
    // A peer on this host maps the destination: its process's end is the proof. Terminal now;
    // released once it is seen ended (a node that stops releases at its teardown instead).
    if (process_gone(st.peer_process)) {
      quiescent = true;
    } else {
      st.base.owner->finish(std::move(r));
      st.base.owner->ended();  // nothing moves any more: not work the progress check waits on
      st.base.monitors.clear(self);
      self->become(awaiting_proof(self, proof_checks));
      self->delayed_send(self, proof_wait(proof_checks), proof_check_atom::value);
      return;
    }
  }
  st.base.end(self, std::move(r), quiescent);
}

// The peer is watched exactly while the fetch is out: then the destination is exposed to it.
bool quiescent_now(self_ptr self) {
  return !self->state.base.monitors.watching(self->state.peer.address());
}

// A layer of a layer-wise send landed (the peer's sender says so, and only it may): its event
// goes out now. A success answer names the layer count, and every layer not heard of by then
// landed too (the answer proves all its puts completed).
void on_layer(self_ptr self, const std::string& id, std::uint32_t layer, std::uint32_t layers) {
  auto& st = self->state;
  auto from = self->current_sender();
  if (!from || from->node() != st.peer.node() || id != st.base.owner->id())
    return;
  // Device memory is written by copies the window counts: a layer has landed once they ended
  // (a failed one fails the whole receive at its end).
  if (st.device)
    st.window.settle();
  st.base.ctx.handle->land_layer(layer, layers);
}

void land_every_layer(self_ptr self, std::uint32_t layers) {
  auto& handle = *self->state.base.ctx.handle;
  for (std::uint32_t i = 0; i < layers && handle.layers_landed() < layers; ++i)
    handle.land_layer(i, layers);
}

// The sender's answer (or CAF's word that none will come) ends the request.
void on_answer(self_ptr self, caf::expected<transfer_done> answer) {
  KVFERRY_HOP(answer_at_receive);
  if (answer) {
    // Every byte reached this node; those for device memory land when the engine's copies
    // through our window ended: closing it waits for them, and names one that failed.
    std::string copy_error;
    self->state.window.close(&copy_error);
    if (!copy_error.empty()) {
      end_recv(self, make_result(transfer_status::failed, errc::transport_error, copy_error),
               true);
      return;
    }
    self->state.base.owner->set_first_byte_us(answer->first_byte_us);
    self->state.base.owner->set_transport(std::move(answer->transport));
    land_every_layer(self, answer->layers);
    end_recv(self, make_result(transfer_status::succeeded, errc::none, {}, answer->bytes), true);
    return;
  }
  // Our own codes come from the sender after its puts stopped. CAF's request_receiver_down is a
  // bounce: the fetch reached no actor that could take it (the send-request had quit, the sender
  // or the connection was gone), so nothing was posted for it. Any other CAF error proves
  // nothing (a send-request that ended with puts in flight sends one): the destination may
  // still be written.
  const auto& err = answer.error();
  bool quiescent = is_kvferry_error(err) || err == caf::sec::request_receiver_down;
  end_recv(self, result_from_error(err), quiescent);
}

void send_fetch(self_ptr self, std::vector<std::uint8_t> worker_address) {
  auto& st = self->state;
  st.base.owner->set_in_flight();
  st.base.owner->started_moving();
  st.base.monitors.watch(self, st.peer.address());
  fetch_msg fetch = *st.header;
  fetch.request_id = st.base.owner->id();
  fetch.worker_address = std::move(worker_address);
  st.device = st.regions->any_of_kind(st.blocks, memory_kind::cuda);
  auto regions = st.regions->index_regions(st.blocks);
  st.mappable = regions.any_mappable;
  fetch.window = st.window.token();
  fetch.rkeys = std::move(regions.rkeys);
  fetch.region_bases = std::move(regions.bases);
  fetch.region_bytes = std::move(regions.bytes);
  fetch.blocks = std::move(st.blocks);
  fetch.ranges = std::move(st.ranges);
  if (st.base.ctx.deadline_ms > 0) {
    // The sender parks an early fetch no longer than what is left of our deadline.
    auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - st.base.ctx.called);
    fetch.deadline_ms = static_cast<std::uint32_t>(
      std::max<std::int64_t>(1, st.base.ctx.deadline_ms - spent.count()));
  }
  self->become(fetching(self));
  KVFERRY_HOP(fetch_sent);
  self->request(st.peer, caf::infinite, std::move(fetch))
    .then([=](transfer_done& done) { on_answer(self, std::move(done)); },
          [=](caf::error& err) { on_answer(self, std::move(err)); });
}

// Opens (or opens again) the window over our blocks. Its loss comes to us as window_lost_atom,
// with its number.
void open_window(self_ptr self) {
  auto& st = self->state;
  std::vector<transport::receive_windows::range> ranges;
  ranges.reserve(st.blocks.size());
  for (const auto& b : st.blocks)
    ranges.push_back({b.addr, b.bytes});
  auto me = caf::actor_cast<recv_request_actor>(self);
  const std::uint64_t number = ++st.window_number;
  st.window = transport::window_lease(st.windows, std::move(ranges), [me, number] {
    caf::anon_send(me, window_lost_atom::value, number);
  });
}

// True when a window_lost names the window the fetch went out with (not one lost and opened
// again before it).
bool lost_current(self_ptr self, std::uint64_t number) {
  return number == self->state.window_number;
}

// Admitted: a window, then our worker address (it changes when a wedged worker is replaced),
// then the fetch. The window is opened first: a replacement that the address read predates
// closes it, and then it is opened again and the new address read, rather than a fetch sent
// that no data can answer. Read from the engine directly (no message to the transport actor):
// two local hops fewer on every receive's critical path.
void start_fetch(self_ptr self) {
  auto& st = self->state;
  // A replacement takes at least the wedge timeout (engine_options::wedge_timeout_ms), so losing
  // a window this many times in a row means the engine is replacing workers without end.
  constexpr int attempts = 8;
  for (int i = 0; i < attempts && st.windows && st.worker_address; ++i) {
    open_window(self);
    auto address = st.worker_address();
    if (address.empty())
      break;  // the engine is gone (the node is stopping)
    if (st.window.is_open()) {
      send_fetch(self, std::move(address));
      return;
    }
  }
  end_recv(self,
           make_result(transfer_status::failed, errc::backend_unhealthy,
                       "this node's transport engine gave no worker address to fetch with (it "
                       "is stopping, or kept replacing its worker)"),
           true);
}

// `worker_replaced`: our worker was replaced, so the sender's writes to the one the fetch named
// will never be acknowledged; it closes that endpoint instead of waiting.
void send_cancel_fetch(self_ptr self, bool worker_replaced = false) {
  auto& st = self->state;
  self->send(st.peer, cancel_fetch_atom::value, st.base.owner->id(), st.header->epoch,
             worker_replaced);
}

// -- behaviours -------------------------------------------------------------------------------

// Our worker was replaced while the fetch was out: the sender writes to one that no longer
// exists, so this transfer cannot finish. It fails now and the sender is told to stop; with no
// mappable block the lost window already proves the destination quiescent.
void on_window_lost(self_ptr self) {
  auto r = make_result(transfer_status::failed, errc::transport_error,
                       "this node replaced its UCX worker while the transfer was in flight (a "
                       "shared-memory peer probably died in the middle of a message); the sender "
                       "was writing to the old one, so nothing more can arrive: retry the transfer");
  send_cancel_fetch(self, true);
  if (!self->state.mappable) {
    end_recv(self, std::move(r), true);
    return;
  }
  self->state.base.owner->finish(std::move(r));
  self->become(stopping(self));
}

behavior fetching(self_ptr self) {
  return {
    [=](cancel_atom) {
      send_cancel_fetch(self);
      self->become(stopping(self));
      return cancel_result::cancel_requested_in_flight;
    },
    [=](deadline_atom) {
      self->state.base.owner->finish(make_result(
        transfer_status::failed, errc::timed_out,
        self->state.base.deadline_text() +
          " in flight; the destination is released once the sender confirms it stopped"));
      send_cancel_fetch(self);
      self->become(stopping(self));
    },
    [=](window_lost_atom, std::uint64_t number) {
      if (lost_current(self, number))
        on_window_lost(self);
    },
    [=](proof_check_atom) {},
    [=](layer_atom, const std::string& id, std::uint32_t layer, std::uint32_t layers) {
      on_layer(self, id, layer, layers);
    },
  };
}

behavior stopping(self_ptr self) {
  return {
    [=](cancel_atom) {
      return self->state.base.owner->terminal() ? cancel_result::already_complete
                                                : cancel_result::cancel_requested_in_flight;
    },
    [=](deadline_atom) {
      self->state.base.owner->finish(
        make_result(transfer_status::failed, errc::timed_out,
                    self->state.base.deadline_text() + " while its fetch was being cancelled"));
    },
    [=](window_lost_atom, std::uint64_t number) {
      // Cancelled or past its deadline, waiting for the sender's word that it stopped: with no
      // mappable block, the lost window is that proof already. The sender waits for the old
      // worker's acknowledgements: told, it stops waiting.
      if (!lost_current(self, number))
        return;  // lost before the fetch went out: the sender writes to the worker we have
      send_cancel_fetch(self, true);
      if (!self->state.mappable)
        end_recv(self,
                 make_result(transfer_status::cancelled, errc::cancelled,
                             "cancelled in flight; this node's UCX worker was replaced meanwhile"),
                 true);
    },
    [=](proof_check_atom) {},
    [=](layer_atom, const std::string&, std::uint32_t, std::uint32_t) {},  // being cancelled
  };
}

// Terminal, its window closed; a prefill on this host that maps the destination was seen gone,
// and its process's end is awaited: released when seen, else unreleased after the last look.
behavior awaiting_proof(self_ptr self, std::uint32_t checks_left) {
  return {
    [=](cancel_atom) { return cancel_result::already_complete; },
    [=](deadline_atom) {},
    [=](window_lost_atom, std::uint64_t) {},
    [=](proof_check_atom) {
      auto& st = self->state;
      auto r = make_result(transfer_status::failed);  // already terminal: this one is not used
      if (process_gone(st.peer_process)) {
        st.base.end(self, std::move(r), true);
        return;
      }
      if (checks_left <= 1) {
        st.base.end(self, std::move(r), false);  // quarantined until the node stops
        return;
      }
      self->become(awaiting_proof(self, checks_left - 1));
      self->delayed_send(self, proof_wait(checks_left - 1), proof_check_atom::value);
    },
    [=](layer_atom, const std::string&, std::uint32_t, std::uint32_t) {},
  };
}

behavior recv_request_impl(self_ptr self, recv_spec spec, std::unique_ptr<request_owner> owner,
                           std::uint32_t deadline_left_ms) {
  KVFERRY_HOP(recv_started);
  auto& st = self->state;
  st.base.ctx = std::move(spec.ctx);
  st.base.owner = std::move(owner);
  st.peer = std::move(spec.peer);
  st.blocks = std::move(spec.blocks);
  st.ranges = std::move(spec.ranges);
  st.header = std::move(spec.header);
  st.regions = std::move(spec.regions);
  st.windows = std::move(spec.windows);
  st.peer_process = std::move(spec.peer_process);
  st.worker_address = std::move(spec.worker_address);
  start_lifecycle(self, request_side::receive, end_recv, quiescent_now, deadline_left_ms);
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    if (!st.base.monitors.watching(dm.source))
      return;
    end_recv(self,
             make_result(transfer_status::failed, errc::peer_failed,
                         "the prefill node went away during the transfer: " +
                           describe_error(dm.reason)),
             false);
  });
  start_fetch(self);
  // Fetching (send_fetch chose it), or ended already: an empty behaviour keeps what become() set.
  return behavior::make_empty_behavior();
}

}  // namespace

recv_request_actor spawn_recv_request_actor(caf::actor_system& sys, recv_spec spec,
                                            std::unique_ptr<request_owner> owner,
                                            std::uint32_t deadline_left_ms) {
  return sys.spawn(recv_request_impl, std::move(spec), std::move(owner), deadline_left_ms);
}

}  // namespace kvferry
