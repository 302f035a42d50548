// send-request actor (one per prefill-side transfer, from its fetch on): one behaviour per phase.
//
// Until a peer fetches it, a send is an offer in the node's offer book (offer_book.hpp), with no
// actor: the sender spawns this one when a fetch fits the offer, moves the offer's owner into it
// and relays it that fetch, so `waiting_for_peer` lasts until the relayed fetch arrives (a
// cancel, a decline or the rest of the deadline may still come first, as below).
//
//                         fetch (valid): puts planned
//   waiting_for_peer ─────────────────────────────────> transferring ──last step answered──> end
//     │ fetch (invalid, or not fitting the offer): error  │  (steps: puts; or, staged, per
//     │   to the fetcher; the offer waits on              │   chunk: lease a slot -> copy into
//     │ cancel / decline: cancelled_before_advertise, end │   it -> put from it -> slot back,
//     │                                                   │   chunk n+1 leased and gathered
//     │                                                   │   while chunk n is put: at most one
//     │                                                   │   copy and one batch of puts)
//     │ deadline: timed_out, end (nothing exposed)        │
//     │ bound peer DOWN: peer_failed, end (released)      │
//     │ bound, a fetch or decline from another node:      │
//     │   refused (a decline: not_found), the offer waits │
//     v                                                   │ cancel / cancel_fetch / deadline /
//    end (released: nothing was exposed)                  │ fetching peer DOWN: stop the step
//                                                         v
//                                       stopping ──the last answer──> end (released: the
//                                         (a lease wait is dropped,     transport answered,
//                                          a copy runs out, puts are    so nothing is in
//                                          cancelled at the transport)  flight any more)
//
//   deadline or peer DOWN while transferring: the terminal event (timed_out / peer_failed) is
//     delivered at once, the release waits for the steps' answers (F4, F11, F15)
//   a step fails while another is outstanding: a stop (the failure is what the fetcher hears)
//   transport DOWN while it holds a step: failed now (the fetcher hears it too); `orphaned`
//     until the op ledger says the engine completed what it posted for this request, then
//     released, its staging slots given back (F9)
//   an exception in a handler: failed; released only if no copy or put was outstanding (F10)
//
//   layer-wise (spec.layer_blocks): the fetch plans each layer's puts; transferring sends the
//     ready layers one after the other (each its steps as above), tells the fetcher of each as
//     it lands, and waits with nothing outstanding while no layer is ready (layer_ready marks
//     one). Without layers there is one layer, ready from the start.
//
// Each phase is a behaviour (the messages it takes) plus what the answer of an outstanding
// step means in it (`on_step`: the answers are responses, so they reach the phase through the
// state, entered together with the behaviour by enter_transferring / enter_stopping).
// Every end goes through end_send() -> request_base::end() (request_lifecycle.hpp).

#include "actors/send_request_actor.hpp"
#include "core/hop_trace.hpp"

#include "actors/log.hpp"
#include "actors/transfer_plan.hpp"

#include <spdlog/spdlog.h>

#include <memory>
#include <optional>

namespace kvferry {

namespace {

// Bound on waiting for a staging buffer; the request's deadline ends the wait earlier.
constexpr std::uint32_t staging_wait_ms = 30000;

// What the request waits for from another actor while transferring: a staged send may wait for
// all three at once (the next chunk's lease, then its copy, beside the current chunk's puts).
enum class step : std::uint8_t { lease, copy, puts };

// A staging slot and the puts out of it of the chunk gathered there.
struct chunk_slot {
  lease slot;
  std::vector<copy_op> puts;
};

struct send_request_state;
using self_ptr = send_request_actor::stateful_pointer<send_request_state>;
using behavior = send_request_actor::behavior_type;

struct send_request_state {
  request_base base;
  std::vector<desc> blocks;
  bool staged = false;
  caf::actor_addr bound;  // the entry of the only node that may fetch it (watched until then)
  // A layer-wise send's layers (absent: one layer, ready at the call; nothing allocated).
  struct layered {
    std::vector<std::uint32_t> blocks;  // transfer_options::layer_blocks
    std::vector<std::uint32_t> ready;   // marked ready, in that order; sent up to ready_next
    std::size_t ready_next = 0;
    std::vector<std::vector<copy_op>> plans;  // from the fetch: each layer's puts
    caf::actor_addr requester;  // the fetching actor: layer progress goes there (via the sender)
  };
  std::unique_ptr<layered> layers;
  // From the fetch on:
  caf::typed_response_promise<transfer_done> fetch_rp;  // the fetcher's answer
  caf::actor_addr fetcher;  // the decode node's anchor, else the fetching actor (watched)
  std::uint64_t fetch_epoch = 0;
  transport_actor transport;
  put_request puts;               // peer, address and rkeys; ops filled per step
  std::uint32_t layers_sent = 0;  // layers whose puts all completed
  std::uint32_t layer = 0;        // the layer being sent
  std::vector<copy_op> plan;      // its puts (staged: progress through them below)
  std::size_t next_op = 0;        // staged: progress through the plan
  std::uint64_t op_offset = 0;
  std::uint64_t bytes_done = 0;
  // Staged: the chunk being gathered (copy outstanding, or gathered and waiting for the puts
  // of the one before), and the chunk being put.
  std::optional<chunk_slot> filling;
  std::optional<chunk_slot> sending;
  bool lease_wait = false;  // outstanding steps
  bool copy_wait = false;
  bool puts_wait = false;
  bool sent_all = false;  // stopping: the last puts completed before the stop took hold
  caf::error stop_reason;         // why a stop was asked: what the fetcher hears
  // What the answer of the outstanding step means in the current phase (set with the phase's
  // behaviour by enter_transferring / enter_stopping): the answers are responses, not messages.
  void (*on_step)(self_ptr, step done, std::uint64_t bytes, caf::error& err) = nullptr;
  static inline const char* name = "kvferry.send_request";

  // Nothing of this request in the copy engine or in UCX (a lease wait exposes nothing).
  bool engines_idle() const { return !copy_wait && !puts_wait; }
  bool idle() const { return engines_idle() && !lease_wait; }
  // Records the answer of `done`.
  void answered(step done) {
    (done == step::lease ? lease_wait : done == step::copy ? copy_wait : puts_wait) = false;
  }
};

void enter_transferring(self_ptr self);
void enter_stopping(self_ptr self);
void enter_orphaned(self_ptr self);
void pump(self_ptr self);
void post_puts(self_ptr self, std::vector<copy_op> ops);

std::uint32_t layer_count(const send_request_state& st) {
  return st.layers ? static_cast<std::uint32_t>(st.layers->blocks.size()) : 1;
}

// Where a lease goes back: the current pool, which a restart replaces (the restarted one takes
// over its predecessor's leases).
buffer_pool_actor current_pool(self_ptr self) {
  return self->state.base.ctx.children->current().pool;
}

// A staging slot goes back to the pool, or, when its copy or puts may still be running, is
// poisoned (out of service for good).
void give_back(self_ptr self, std::optional<chunk_slot>& c, bool maybe_in_use) {
  if (!c)
    return;
  if (maybe_in_use)
    self->send(current_pool(self), poison_atom::value, c->slot.slot);
  else
    self->send(current_pool(self), release_atom::value, c->slot.slot);
  c.reset();
}

// The send side's end: a staging slot UCX may still read from is poisoned, never given back.
void end_send(self_ptr self, transfer_result r, bool quiescent) {
  auto& st = self->state;
  // A fetch not answered yet (the transport went down, an exception) hears why the offer ended,
  // now rather than at its deadline. A kvferry error tells the receiver nothing more will be
  // written (it releases its destination); CAF's own, that puts may still land (it quarantines).
  if (st.fetch_rp.pending()) {
    if (quiescent)
      st.fetch_rp.deliver(make_kvferry_error(
        r.code == errc::none ? errc::internal_error : r.code, r.message));
    else
      st.fetch_rp.deliver(caf::make_error(
        caf::sec::runtime_error, "the offer ended while its puts may still be in flight: " +
                                   r.message));
  }
  give_back(self, st.filling, !quiescent && st.copy_wait);
  give_back(self, st.sending, !quiescent && st.puts_wait);
  st.base.end(self, std::move(r), quiescent);
}

bool quiescent_now(self_ptr self) {
  return self->state.engines_idle();
}

// Every step has been answered: the fetcher hears the outcome and the request ends, released.
void finish_transfer(self_ptr self, const caf::error& err) {
  auto& st = self->state;
  if (!err) {
    st.fetch_rp.deliver(transfer_done{st.base.owner->id(), st.bytes_done,
                                      st.base.owner->first_byte_us(),
                                      st.layers ? layer_count(st) : 0,
                                      st.base.owner->transport()});
    end_send(self, make_result(transfer_status::succeeded, errc::none, {}, st.bytes_done), true);
    return;
  }
  st.fetch_rp.deliver(err);
  end_send(self, result_from_error(err), true);  // an earlier terminal result stands
}

// -- layers -----------------------------------------------------------------------------------

// The current layer's puts all completed: the fetching actor hears it (a layer-wise send only),
// through this node's sender, which keeps this actor's address from the peer.
void layer_landed(self_ptr self) {
  auto& st = self->state;
  ++st.layers_sent;
  if (st.layers)
    self->send(st.base.ctx.children->current().sender, layer_atom::value, st.layers->requester,
               st.base.owner->id(), st.layer, layer_count(st));
}

// The next layer to send, if one is ready (without layers: the one layer, once).
bool take_ready(send_request_state& st) {
  if (!st.layers) {
    st.layer = 0;
    return st.layers_sent == 0;
  }
  auto& l = *st.layers;
  if (l.ready_next == l.ready.size())
    return false;
  st.layer = l.ready[l.ready_next++];
  st.plan = std::move(l.plans[st.layer]);
  return true;
}

// Sends the next ready layer (one with nothing the fetch wants lands at once), or ends the
// transfer after the last. With none ready, it waits for node::layer_ready with nothing in
// flight: the engine's work, not the node's, so not counted as moving (node_health).
void next_layer(self_ptr self) {
  auto& st = self->state;
  for (;;) {
    if (st.layers_sent == layer_count(st)) {
      finish_transfer(self, caf::error{});
      return;
    }
    if (!take_ready(st)) {
      st.base.owner->stop_moving();
      return;
    }
    st.next_op = 0;
    st.op_offset = 0;
    if (st.plan.empty()) {
      layer_landed(self);
      continue;
    }
    st.base.owner->set_moving();
    if (st.staged)
      pump(self);
    else
      post_puts(self, std::move(st.plan));
    return;
  }
}

// The engine marked `layer` ready (node::layer_ready checked it, once per layer).
void on_layer_ready(self_ptr self, std::uint32_t layer, bool transferring) {
  auto& st = self->state;
  if (!st.layers || layer >= st.layers->blocks.size())
    return;
  st.layers->ready.push_back(layer);
  if (transferring && st.idle())  // it was waiting for this
    next_layer(self);
}

// -- steps ------------------------------------------------------------------------------------

// The transport is watched while it holds a copy or puts of this request (its death orphans
// them), not while the request only waits for a lease: posting watches, an answer that leaves
// nothing outstanding unwatches (never watches: once orphaned, the watches stay off).
void watch_transport(self_ptr self) {
  self->state.base.monitors.watch(self, self->state.transport.address());
}

// The answer of `done` reaches the current phase.
void answer(self_ptr self, step done, std::uint64_t bytes, caf::error err) {
  auto& st = self->state;
  st.answered(done);
  if (st.engines_idle())
    st.base.monitors.unwatch(self, st.transport.address());
  st.on_step(self, done, bytes, err);
}

void post_puts(self_ptr self, std::vector<copy_op> ops) {
  auto& st = self->state;
  auto req = st.puts;  // peer, address, rkeys
  req.ops = std::move(ops);
  st.puts_wait = true;
  watch_transport(self);
  self->request(st.transport, caf::infinite, put_atom::value, std::move(req))
    .then(
      [=](put_done& done) {
        self->state.base.owner->set_transport(std::move(done.transport));
        answer(self, step::puts, done.bytes, caf::error{});
      },
      [=](caf::error& err) {
        if (err == caf::sec::request_receiver_down)  // our own transport, not the peer
          err = make_kvferry_error(errc::backend_unhealthy,
                                   "the transport was down (restarting) when the puts were posted");
        answer(self, step::puts, 0, std::move(err));
      });
}

void post_copy(self_ptr self, std::vector<copy_op> copies) {
  auto& st = self->state;
  st.copy_wait = true;
  watch_transport(self);
  self->request(st.transport, caf::infinite, copy_atom::value, self->id(), std::move(copies))
    .then([=](std::uint64_t) { answer(self, step::copy, 0, caf::error{}); },
          [=](caf::error& err) { answer(self, step::copy, 0, std::move(err)); });
}

void lease_slot(self_ptr self) {
  auto& st = self->state;
  st.lease_wait = true;
  // The pool answers within staging_wait_ms; the extra second covers a pool that died with our
  // request (a restarted pool does not know it), so the wait is bounded either way.
  self->request(current_pool(self), std::chrono::milliseconds{staging_wait_ms + 1000},
                acquire_atom::value, staging_wait_ms)
    .then(
      [=](lease& l) {
        // Held from now on, whatever the phase: the end gives it back.
        self->state.filling = chunk_slot{l, {}};
        answer(self, step::lease, 0, caf::error{});
      },
      [=](caf::error& err) { answer(self, step::lease, 0, std::move(err)); });
}

// Staged, while transferring: the chunk gathered goes out once the puts before it completed,
// the next chunk is leased as soon as no chunk is being gathered, and the layer has landed once
// every chunk's puts completed.
void pump(self_ptr self) {
  auto& st = self->state;
  if (st.filling && !st.copy_wait && !st.puts_wait) {
    st.sending = std::move(st.filling);
    st.filling.reset();
    post_puts(self, std::move(st.sending->puts));
  }
  const bool chunks_left = st.next_op < st.plan.size();
  if (!st.filling && !st.lease_wait && chunks_left)
    lease_slot(self);
  if (st.idle() && !st.filling && !chunks_left) {
    layer_landed(self);
    next_layer(self);
  }
}

// The next step after `done` succeeded, while transferring.
void advance(self_ptr self, step done) {
  auto& st = self->state;
  if (!st.staged) {  // the layer's puts completed
    layer_landed(self);
    next_layer(self);
    return;
  }
  switch (done) {
    case step::lease: {  // gather the next chunk into the slot
      auto chunk = next_chunk(st.plan, st.next_op, st.op_offset, st.filling->slot.buffer);
      st.filling->puts = std::move(chunk.puts);
      post_copy(self, std::move(chunk.copies));
      break;
    }
    case step::copy:
      break;
    case step::puts:  // the chunk's slot goes back
      give_back(self, st.sending, false);
      break;
  }
  pump(self);
}

// The fetching node replaced the UCX worker our puts go to: nothing there acknowledges them any
// more. The transport closes the endpoint if it still leads to that worker (not if a later
// fetch already connected to the new one), which fails what waits for it and so answers the
// outstanding step (the endpoint's close is the engine's proof that UCX let go of our blocks).
void drop_stale_worker(self_ptr self) {
  auto& st = self->state;
  self->send(st.transport, stale_worker_atom::value, st.fetch_epoch, st.puts.peer_address);
}

// Asks the outstanding steps to stop; their answers end the request (behaviour `stopping`).
void stop(self_ptr self, caf::error reason) {
  auto& st = self->state;
  st.stop_reason = std::move(reason);
  if (st.engines_idle()) {
    // Nothing in flight (a lease wait exposes nothing: the pool drops it when we are gone).
    finish_transfer(self, st.stop_reason);
    return;
  }
  if (st.puts_wait)
    self->send(st.transport, cancel_atom::value, self->id());
  // A copy runs out on its own.
  enter_stopping(self);
}

caf::error cancelled_error(self_ptr self, const char* by) {
  return make_kvferry_error(errc::cancelled,
                            "request '" + self->state.base.owner->id() + "' cancelled by " + by);
}

caf::error timed_out_error(self_ptr self) {
  return make_kvferry_error(errc::timed_out, "request '" + self->state.base.owner->id() +
                                               "' passed the sender's deadline");
}

// -- behaviours -------------------------------------------------------------------------------

caf::typed_response_promise<transfer_done> refuse_second_fetch(self_ptr self,
                                                                const fetch_msg& fetch,
                                                                const caf::actor_addr&) {
  auto rp = self->make_response_promise<transfer_done>();
  rp.deliver(make_kvferry_error(errc::duplicate_request_id,
                                "request '" + fetch.request_id + "' is already being sent"));
  return rp;
}

caf::typed_response_promise<transfer_done> on_fetch(self_ptr self, fetch_msg& fetch,
                                                    const caf::actor_addr& requester) {
  KVFERRY_HOP(fetch_at_owner);
  auto rp = self->make_response_promise<transfer_done>();
  auto& st = self->state;
  // The sender matched the fetch with the offer before it spawned this actor; checked again
  // all the same (a fetch delivered here by anyone else meets the same rules).
  static const std::vector<std::uint32_t> one_layer;
  auto plan = match_fetch(st.base.owner->id(), st.blocks,
                          st.layers ? st.layers->blocks : one_layer,
                          st.bound ? st.bound.node() : caf::node_id{}, fetch,
                          fetch.anchor ? fetch.anchor.node() : requester.node());
  if (!plan) {
    rp.deliver(std::move(plan.error()));
    return rp;
  }
  st.base.monitors.unwatch(self, st.bound);  // from now on the fetcher is watched
  st.fetch_rp = rp;
  // Watch the decode node through its anchor (one proxy per node), or, from a client that
  // sends none, through the fetching actor itself.
  st.fetcher = fetch.anchor ? fetch.anchor : requester;
  st.base.monitors.watch(self, st.fetcher);
  st.fetch_epoch = fetch.epoch;
  st.base.owner->set_in_flight();
  st.base.owner->set_moving();
  st.base.owner->started_moving();
  st.transport = st.base.ctx.children->current().transport;
  st.puts = put_request{self->id(), fetch.epoch, std::move(fetch.worker_address),
                        std::move(fetch.rkeys), {}, fetch.window};
  if (st.layers) {
    st.layers->plans = std::move(plan.value());
    st.layers->requester = requester;
  } else {
    st.plan = std::move(plan.value().front());
  }
  enter_transferring(self);
  next_layer(self);
  return rp;
}

behavior waiting_for_peer(self_ptr self) {
  return {
    [=](fetch_msg& fetch, caf::actor_addr& requester) { return on_fetch(self, fetch, requester); },
    [=](layer_atom, std::uint32_t layer) { on_layer_ready(self, layer, false); },
    [=](cancel_atom) {
      end_send(self,
               make_result(transfer_status::cancelled, errc::cancelled,
                           "cancelled by the engine before a peer fetched"),
               true);
      return cancel_result::cancelled_before_advertise;
    },
    [=](deadline_atom) {
      end_send(self,
               make_result(transfer_status::failed, errc::timed_out,
                           self->state.base.deadline_text() +
                             ": no peer fetched it; its blocks are released"),
               true);
    },
    [=](cancel_fetch_atom, const std::string&, std::uint64_t, bool) {},  // no fetch to cancel yet
    [=](decline_atom, const caf::node_id& from) {
      // Bound to another node: as if there were no such offer (a wrong guess neither ends it
      // nor reveals it, F17).
      if (self->state.bound && from != self->state.bound.node())
        return cancel_result::not_found;
      end_send(self,
               make_result(transfer_status::cancelled, errc::cancelled,
                           "declined by the decode node before any fetch: its blocks are "
                           "released"),
               true);
      return cancel_result::cancelled_before_advertise;
    },
    [=](quiescent_atom) {},  // the ledger's word matters only once orphaned
  };
}

behavior transferring(self_ptr self) {
  return {
    [=](fetch_msg& fetch, caf::actor_addr& requester) {
      return refuse_second_fetch(self, fetch, requester);
    },
    [=](layer_atom, std::uint32_t layer) { on_layer_ready(self, layer, true); },
    [=](cancel_atom) {
      stop(self, cancelled_error(self, "the engine"));
      return cancel_result::cancel_requested_in_flight;
    },
    [=](deadline_atom) {
      self->state.base.owner->finish(make_result(
        transfer_status::failed, errc::timed_out,
        self->state.base.deadline_text() +
          " in flight; its blocks are released once the transport confirms the puts stopped"));
      stop(self, timed_out_error(self));
    },
    [=](cancel_fetch_atom, const std::string&, std::uint64_t epoch, bool worker_replaced) {
      if (epoch != self->state.fetch_epoch)
        return;
      if (worker_replaced)
        drop_stale_worker(self);
      stop(self, cancelled_error(self, "the receiver"));
    },
    // A fetch is running: declining it changes nothing (the fetcher cancels its receive).
    [=](decline_atom, const caf::node_id&) { return cancel_result::not_cancellable; },
    [=](quiescent_atom) {},  // the ledger's word matters only once orphaned
  };
}

// transferring: a step answered; on to the next one, or the end. A failed step stops the
// others; its error is what the fetcher hears.
void transferring_step(self_ptr self, step done, std::uint64_t bytes, caf::error& err) {
  auto& st = self->state;
  st.base.ctx.health->step_answered();
  if (!err && done == step::puts)
    st.base.owner->first_bytes();
  st.bytes_done += bytes;
  if (err)
    stop(self, std::move(err));
  else
    advance(self, done);
}

behavior stopping(self_ptr self) {
  return {
    [=](fetch_msg& fetch, caf::actor_addr& requester) {
      return refuse_second_fetch(self, fetch, requester);
    },
    [=](layer_atom, std::uint32_t) {},  // stopping: nothing more is sent
    [=](cancel_atom) {
      return self->state.base.owner->terminal() ? cancel_result::already_complete
                                                : cancel_result::cancel_requested_in_flight;
    },
    [=](deadline_atom) {
      auto& st = self->state;
      if (st.base.owner->terminal())
        return;
      st.base.owner->finish(make_result(transfer_status::failed, errc::timed_out,
                                        st.base.deadline_text() + " while its transfer stopped"));
      st.stop_reason = timed_out_error(self);
    },
    [=](cancel_fetch_atom, const std::string&, std::uint64_t epoch, bool worker_replaced) {
      // Already stopping; but if the receiver's worker is gone, its acknowledgements never come.
      if (epoch == self->state.fetch_epoch && worker_replaced)
        drop_stale_worker(self);
    },
    [=](decline_atom, const caf::node_id&) {
      return self->state.base.owner->terminal() ? cancel_result::already_complete
                                                : cancel_result::not_cancellable;
    },
    [=](quiescent_atom) {},  // the ledger's word matters only once orphaned
  };
}

// stopping: a step answered; once the copy engine and UCX hold nothing of the request any more
// it ends (a lease still awaited exposes nothing).
void stopping_step(self_ptr self, step done, std::uint64_t bytes, caf::error& err) {
  auto& st = self->state;
  st.base.ctx.health->step_answered();
  st.bytes_done += bytes;
  // The last puts won the race against the stop: the transfer succeeded, unless the request
  // already ended otherwise (then both sides agree that it failed). Staged, they were the last
  // chunk's when every chunk was planned and none is being gathered after it.
  if (!err && done == step::puts && (!st.staged || (st.next_op == st.plan.size() && !st.filling)) &&
      st.layers_sent + 1 == layer_count(st))
    st.sent_all = true;
  if (!st.engines_idle())
    return;
  if (st.sent_all && !st.base.owner->terminal())
    finish_transfer(self, caf::error{});
  else
    finish_transfer(self, st.stop_reason);
}

// The transport died holding a step: nothing will answer it, but the engine still completes
// what it posted, and says so in the op ledger. Until then every message finds the request
// over; the ledger's word releases it.
behavior orphaned(self_ptr self) {
  return {
    [=](fetch_msg& fetch, caf::actor_addr& requester) {
      return refuse_second_fetch(self, fetch, requester);
    },
    [=](layer_atom, std::uint32_t) {},
    [=](cancel_atom) { return cancel_result::already_complete; },
    [=](deadline_atom) {},
    [=](cancel_fetch_atom, const std::string&, std::uint64_t, bool) {},
    [=](decline_atom, const caf::node_id&) { return cancel_result::already_complete; },
    [=](quiescent_atom) {
      self->state.copy_wait = self->state.puts_wait = false;
      end_send(self, make_result(transfer_status::failed, errc::backend_unhealthy), true);
    },
  };
}

// A phase is its behaviour and what a step's answer means in it.
void enter_transferring(self_ptr self) {
  self->state.on_step = transferring_step;
  self->become(transferring(self));
}

void enter_stopping(self_ptr self) {
  self->state.on_step = stopping_step;
  self->become(stopping(self));
}

void enter_orphaned(self_ptr self) {
  auto& st = self->state;
  st.base.owner->finish(make_result(
    transfer_status::failed, errc::backend_unhealthy,
    "the transport terminated while a copy or puts were in flight; the source blocks are "
    "released once the engine reports them done"));
  // The fetcher hears it now; CAF's error (not ours) says puts may still land, so it relies on
  // its receive window, not on us.
  if (st.fetch_rp.pending())
    st.fetch_rp.deliver(caf::make_error(
      caf::sec::runtime_error,
      "the offer ended while its puts may still be in flight: the sender's transport terminated"));
  st.base.monitors.clear(self);  // nothing a peer does changes what is left to wait for
  st.on_step = [](self_ptr, step, std::uint64_t, caf::error&) {};  // only the ledger's word counts
  self->become(orphaned(self));
  auto me = caf::actor_cast<send_request_actor>(self);
  st.base.ctx.ledger->when_quiescent(self->id(),
                                     [me] { caf::anon_send(me, quiescent_atom::value); });
}

behavior send_request_impl(self_ptr self, send_spec spec, std::unique_ptr<request_owner> owner,
                           std::uint32_t deadline_left_ms) {
  auto& st = self->state;
  st.base.ctx = std::move(spec.ctx);
  st.base.owner = std::move(owner);
  st.blocks = std::move(spec.blocks);
  st.staged = spec.staged;
  st.bound = spec.bound_to.address();
  if (!spec.layer_blocks.empty()) {
    st.layers = std::make_unique<send_request_state::layered>();
    st.layers->blocks = std::move(spec.layer_blocks);
    st.layers->ready = std::move(spec.ready_layers);
  }
  start_lifecycle(self, request_side::send, end_send, quiescent_now, deadline_left_ms);
  st.base.monitors.watch(self, st.bound);
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    if (!st.base.monitors.watching(dm.source))
      return;
    if (dm.source == st.bound) {  // only watched until a fetch came: nothing was exposed
      end_send(self,
               make_result(transfer_status::failed, errc::peer_failed,
                           "the node this offer is bound to went away before it fetched: " +
                             describe_error(dm.reason) + "; its blocks are released"),
               true);
      return;
    }
    if (dm.source == st.transport.address()) {
      enter_orphaned(self);
      return;
    }
    // The fetching node is gone (process died, connection lost): fail now, close its endpoint,
    // and release the blocks once the transport has answered.
    st.base.monitors.unwatch(self, dm.source);
    st.base.owner->finish(make_result(transfer_status::failed, errc::peer_failed,
                                      "the fetching peer went away during the transfer: " +
                                        describe_error(dm.reason)));
    self->send(st.transport, forget_peer_atom::value, st.fetch_epoch);
    if (!st.stop_reason)
      stop(self, make_kvferry_error(errc::peer_failed, "the fetching peer went away"));
  });
  return waiting_for_peer(self);
}

}  // namespace

caf::expected<std::vector<std::vector<copy_op>>> match_fetch(
  const std::string& id, const std::vector<desc>& blocks,
  const std::vector<std::uint32_t>& layer_blocks, const caf::node_id& bound,
  const fetch_msg& fetch, const caf::node_id& origin) {
  if (bound && origin != bound)
    // Another node's fetch: refused, and the offer waits on for the node it is bound to.
    return make_kvferry_error(errc::incompatible_peer,
                              "request '" + id + "' is offered to another node");
  destination dst{fetch.request_id,   fetch.epoch,        fetch.worker_address, fetch.rkeys,
                  fetch.region_bases, fetch.region_bytes, fetch.blocks,         fetch.ranges};
  if (auto bad = check_fetch(dst, fetch_limits{UINT32_MAX, UINT32_MAX}))
    return make_kvferry_error(bad->code, bad->message);
  auto plan = plan_fetch(blocks, layer_blocks, dst);
  if (!plan) {
    // A fetch that does not fit the offer is refused and the offer waits on (for a fitting
    // fetch, a decline, a cancel or its deadline): a wrong guess must not end the real request.
    // The details describe the offer, so they go to this node's log, not to the fetcher.
    logger()->info("refused a fetch for request '{}' from node '{}': {}", id,
                   fetch.node_name.substr(0, 256), plan.error().message);
    return make_kvferry_error(errc::size_mismatch,
                              "the fetch for request '" + id +
                                "' does not match what was offered (block count, sizes or "
                                "ranges); the offer waits for a matching fetch");
  }
  return std::move(plan.value());
}

send_request_actor spawn_send_request_actor(caf::actor_system& sys, send_spec spec,
                                            std::unique_ptr<request_owner> owner,
                                            std::uint32_t deadline_left_ms) {
  return sys.spawn(send_request_impl, std::move(spec), std::move(owner), deadline_left_ms);
}

}  // namespace kvferry
