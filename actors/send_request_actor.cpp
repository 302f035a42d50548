// send-request actor (one per prefill-side transfer)
//
//   waiting_for_peer ──fetch (valid)──> putting ──transport answer──> done: finish + release
//        │   └──fetch (invalid)──> done: error to the fetcher, failed, release (nothing posted)
//        │ engine cancel                 │ engine cancel / peer cancel_fetch
//        v                               v
//   done: cancelled_before_advertise   cancel asked of the transport; its answer (cancelled,
//   (nothing exposed, release now)     or success if the puts won the race) ends the request
//
//   staged (transfer_options::stage_through_pool), inside `putting`, per chunk:
//     lease a staging buffer ──> copy engine gathers the chunk ──> put from the buffer
//       ──> buffer released ──> next chunk (a cancel is honoured between the steps)
//
//   deadline: waiting_for_peer ──> done: timed_out, release (F4)
//             putting ──> timed_out delivered now; transport asked to stop; its answer releases
//   fetching peer DOWN while putting (F15) ──> failed (peer_failed) now; transport asked to
//             stop; its answer releases
//   transport DOWN while putting ──> failed now, memory NOT released (no proof of quiescence)
//
// Exactly one exit: end_request() -> request_owner::conclude(), then quit.

#include "actors/send_request_actor.hpp"

#include "actors/node_core.hpp"

#include <optional>

namespace kvferry {

namespace {

// Bound on waiting for a staging buffer (per-request deadlines will tighten it).
constexpr std::uint32_t staging_wait_ms = 30000;

enum class send_phase { waiting_for_peer, putting, done };

struct send_request_state {
  std::unique_ptr<request_owner> owner;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> blocks;
  bool staged = false;
  send_phase phase = send_phase::waiting_for_peer;
  bool cancel_requested = false;
  bool put_outstanding = false;
  bool timed_out = false;           // the deadline passed while putting
  bool waiting_for_lease = false;   // staged: an acquire is pending at the pool
  std::uint32_t deadline_ms = 0;
  caf::actor_addr fetcher;          // the decode node's anchor, else the remote recv-request
                                    // (monitored while putting)
  std::uint64_t fetch_epoch = 0;
  transport_actor transport;
  buffer_pool_actor pool;  // the pool that leased `held`
  caf::typed_response_promise<transfer_done> fetch_rp;  // the fetcher's answer
  // The puts of the transfer; while staged, the progress through them.
  put_request puts;
  std::vector<put_item> items;
  std::size_t next_item = 0;
  std::uint64_t item_offset = 0;
  std::uint64_t bytes_done = 0;
  std::optional<lease> held;       // the staging buffer leased for the current chunk
  std::vector<put_item> chunk_puts;
  static inline const char* name = "kvferry.send_request";
};

using self_ptr = send_request_actor::stateful_pointer<send_request_state>;

void end_request(self_ptr self, transfer_result r, bool quiescent) {
  auto& st = self->state;
  st.phase = send_phase::done;
  // A staging buffer UCX may still read from is poisoned, never given back.
  if (st.held) {
    if (quiescent)
      self->send(st.pool, release_atom::value, st.held->slot);
    else
      self->send(st.pool, poison_atom::value, st.held->slot);
    st.held.reset();
  }
  st.owner->conclude(std::move(r), quiescent);
  // A monitor stays attached to the watched actor until one of the two ends, and the transport
  // and a peer's anchor live long: take ours off, or every request would leave one behind.
  if (st.put_outstanding)
    self->demonitor(st.transport.address());
  if (st.fetcher)
    self->demonitor(st.fetcher);
  self->quit();
}

// Answers the fetcher and ends the request with the same outcome. If the request already
// timed out, the fetcher hears that too, even if the last puts won the race: both sides then
// agree that the transfer failed.
void end_transfer(self_ptr self, const caf::error& err, bool quiescent) {
  auto& st = self->state;
  if (st.timed_out) {
    st.fetch_rp.deliver(caf::make_error(
      errc::timed_out, "request '" + st.owner->id() + "' passed the sender's deadline"));
    end_request(self, make_result(transfer_status::failed, errc::timed_out), quiescent);
    return;
  }
  if (!err) {
    st.fetch_rp.deliver(transfer_done{st.owner->id(), st.bytes_done});
    end_request(self, make_result(transfer_status::succeeded, errc::none, {}, st.bytes_done),
                quiescent);
    return;
  }
  st.fetch_rp.deliver(err);
  auto r = result_from_error(err);
  if (st.cancel_requested && r.code == errc::cancelled)
    r.status = transfer_status::cancelled;
  end_request(self, std::move(r), quiescent);
}

caf::error cancelled_error(self_ptr self);

// Stops the transfer: the transport is asked to stop an outstanding put (its answer ends the
// request); a wait for a staging buffer ends at once (nothing is exposed then: the pool drops
// the wait when this actor is gone); a staging copy in progress ends at its completion.
void ask_transport_to_stop(self_ptr self) {
  auto& st = self->state;
  if (st.cancel_requested)
    return;
  st.cancel_requested = true;
  if (st.put_outstanding)
    self->send(st.transport, cancel_atom::value, self->id());
  else if (st.waiting_for_lease)
    end_transfer(self, cancelled_error(self), true);
}

caf::error cancelled_error(self_ptr self) {
  return caf::make_error(errc::cancelled,
                         "request '" + self->state.owner->id() + "' cancelled during staging");
}

// Posts `req` and continues with `next` once the transport answered (every UCX request of the
// batch completed: the transport's proof of quiescence).
template <class Next>
void post_puts(self_ptr self, put_request req, Next next) {
  auto& st = self->state;
  st.put_outstanding = true;
  // Watched only while puts are outstanding: a monitor stays attached to the transport until
  // one of the two ends, and thousands of requests waiting for fetches would pile up there.
  self->monitor(st.transport);
  self->request(st.transport, caf::infinite, put_atom::value, std::move(req))
    .then(
      [=](std::uint64_t bytes) {
        self->demonitor(self->state.transport.address());
        self->state.put_outstanding = false;
        self->state.bytes_done += bytes;
        next(caf::error{});
      },
      [=](caf::error& err) {
        self->demonitor(self->state.transport.address());
        self->state.put_outstanding = false;
        if (err == caf::sec::request_receiver_down)  // our own transport, not the peer
          err = caf::make_error(errc::backend_unhealthy,
                                "the transport was down (restarting) when the puts were posted");
        next(err);
      });
}

void stage_next_chunk(self_ptr self);

// The staging copy of the current chunk finished: put it from the staging buffer.
void on_chunk_copied(self_ptr self, const caf::error& err) {
  auto& st = self->state;
  if (err || st.cancel_requested) {
    end_transfer(self, err ? err : cancelled_error(self), true);
    return;
  }
  auto req = st.puts;  // peer, address, rkeys
  req.items = std::move(st.chunk_puts);
  post_puts(self, std::move(req), [=](const caf::error& perr) {
    auto& s = self->state;
    self->send(s.pool, release_atom::value, s.held->slot);
    s.held.reset();
    if (perr || s.cancel_requested)
      end_transfer(self, perr ? perr : cancelled_error(self), true);
    else
      stage_next_chunk(self);
  });
}

void stage_next_chunk(self_ptr self) {
  auto& st = self->state;
  if (st.next_item == st.items.size()) {
    end_transfer(self, caf::error{}, true);
    return;
  }
  // The pool answers within staging_wait_ms; the extra second covers a pool that died with
  // our request (a restarted pool does not know it), so this wait is bounded either way.
  st.pool = st.owner->core().children().pool;  // the current pool (a restart replaces it)
  st.waiting_for_lease = true;
  self->request(st.pool, std::chrono::milliseconds{staging_wait_ms + 1000}, acquire_atom::value,
                staging_wait_ms)
    .then(
      [=](lease& l) {
        auto& s = self->state;
        s.waiting_for_lease = false;
        s.held = l;
        if (s.cancel_requested) {
          end_transfer(self, cancelled_error(self), true);
          return;
        }
        auto chunk = next_chunk(s.items, s.next_item, s.item_offset, l.addr, l.bytes);
        s.chunk_puts = std::move(chunk.puts);
        std::vector<gpu::copy_segment> segs;
        auto dst = l.addr;
        for (auto& [src, n] : chunk.copies_from) {
          segs.push_back(gpu::copy_segment{reinterpret_cast<void*>(dst),
                                           reinterpret_cast<const void*>(src), n});
          dst += n;
        }
        auto me = caf::actor_cast<send_request_actor>(self);
        s.owner->core().copier->submit(std::move(segs), [me](errc code, const std::string& d) {
          caf::anon_send(me, copy_done_atom::value,
                         code == errc::none ? caf::error{} : caf::make_error(code, d));
        });
      },
      [=](caf::error& err) {
        self->state.waiting_for_lease = false;
        end_transfer(self, err, true);
      });
}

send_request_actor::behavior_type send_request_impl(self_ptr self, send_spec spec) {
  auto& st = self->state;
  st.owner = std::make_unique<request_owner>(spec.core, spec.handle, request_side::send);
  st.blocks = std::move(spec.blocks);
  st.staged = spec.staged;
  st.deadline_ms = spec.deadline_ms;
  if (st.deadline_ms > 0)
    self->delayed_send(self, std::chrono::milliseconds{st.deadline_ms}, deadline_atom::value);
  auto kids = spec.core->children();
  st.transport = kids.transport;
  // Any exception in a handler fails this request with a clear error (F10); the memory is
  // released only if nothing of it can still be in UCX's hands.
  self->set_exception_handler([=](caf::scheduled_actor*, std::exception_ptr& ep) -> caf::error {
    auto text = describe_exception(ep);
    end_request(self,
                make_result(transfer_status::failed, errc::internal_error,
                            "request '" + self->state.owner->id() + "' failed: " + text),
                !self->state.put_outstanding);
    return caf::make_error(errc::internal_error, text);
  });
  // The node is stopping: the terminal event says so; the memory is released only by the
  // engine's teardown, after which nothing touches it.
  self->set_exit_handler(
    [=](caf::exit_msg& em) { end_request(self, stopped_result(em.reason), false); });
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source == st.transport.address() && st.put_outstanding) {
      end_request(self,
                  make_result(transfer_status::failed, errc::backend_unhealthy,
                              "the transport terminated while puts were in flight; the source "
                              "blocks stay pinned (quiescence unknown)"),
                  false);
    } else if (dm.source == st.fetcher && st.phase == send_phase::putting) {
      // The decode side is gone (process died, connection lost): fail now, stop the puts, and
      // release the blocks once the transport has answered.
      st.owner->finish(make_result(transfer_status::failed, errc::peer_failed,
                                   "the fetching peer went away during the transfer: " +
                                     caf::to_string(dm.reason)));
      self->send(st.transport, forget_peer_atom::value, st.fetch_epoch);
      ask_transport_to_stop(self);
    }
  });
  self->send(kids.sender, announce_atom::value, st.owner->id(),
             caf::actor_cast<send_request_actor>(self));
  return {
    [=](fetch_msg& fetch) -> caf::typed_response_promise<transfer_done> {
      // Read the sender first: make_response_promise takes it over from the current message.
      auto fetcher = self->current_sender();
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
      st.fetch_rp = rp;
      // Watch the decode node through its anchor (one proxy per node), or, from a client that
      // sends none, through the fetching actor itself.
      st.fetcher = fetch.anchor ? fetch.anchor : caf::actor_cast<caf::actor_addr>(fetcher);
      if (st.fetcher)
        self->monitor(st.fetcher);
      st.fetch_epoch = fetch.epoch;
      st.owner->set_in_flight();
      st.owner->core().note_peer(fetch.epoch);
      st.puts = put_request{self->id(), fetch.epoch, std::move(fetch.worker_address),
                            std::move(fetch.rkeys), {}};
      if (st.staged) {
        st.items = std::move(*plan);
        stage_next_chunk(self);
      } else {
        auto req = st.puts;
        req.items = std::move(*plan);
        post_puts(self, std::move(req),
                  [=](const caf::error& err) { end_transfer(self, err, true); });
      }
      return rp;
    },
    [=](copy_done_atom, const caf::error& err) { on_chunk_copied(self, err); },
    [=](deadline_atom) {
      auto& st = self->state;
      auto what = "request '" + st.owner->id() + "' passed its deadline (" +
                  std::to_string(st.deadline_ms) + " ms)";
      if (st.phase == send_phase::waiting_for_peer) {
        end_request(self,
                    make_result(transfer_status::failed, errc::timed_out,
                                what + ": no peer fetched it; its blocks are released"),
                    true);
      } else if (st.phase == send_phase::putting && !st.owner->terminal()) {
        st.timed_out = true;
        st.owner->finish(make_result(transfer_status::failed, errc::timed_out,
                                     what + " in flight; its blocks are released once the "
                                            "transport confirms the puts stopped"));
        ask_transport_to_stop(self);
      }
    },
    [=](cancel_atom) -> cancel_answer {
      if (self->state.owner->terminal())
        return cancel_answer::already_complete;  // e.g. timed out, release still pending
      switch (self->state.phase) {
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
  if (fetch.region_bases.size() != fetch.rkeys.size() ||
      fetch.region_bytes.size() != fetch.rkeys.size())
    return caf::make_error(errc::malformed_message,
                           "fetch for '" + fetch.request_id + "' describes " +
                             std::to_string(fetch.region_bases.size()) + " regions for " +
                             std::to_string(fetch.rkeys.size()) + " rkeys");
  if (fetch.epoch == 0)
    return caf::make_error(errc::stale_epoch,
                           "fetch for '" + fetch.request_id + "' carries no node epoch");
  if (fetch.worker_address.empty())
    return caf::make_error(errc::malformed_message,
                           "fetch for '" + fetch.request_id + "' carries no worker address");
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
    auto base = fetch.region_bases[dst.rkey_index];
    auto size = fetch.region_bytes[dst.rkey_index];
    if (dst.addr < base || dst.addr - base > size || dst.bytes > size - (dst.addr - base))
      return caf::make_error(errc::out_of_range,
                             "block " + std::to_string(i) + " of '" + fetch.request_id +
                               "' lies outside its destination region");
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

staged_chunk next_chunk(const std::vector<put_item>& items, std::size_t& next,
                        std::uint64_t& offset, std::uint64_t staging_addr,
                        std::uint64_t capacity) {
  staged_chunk out;
  std::uint64_t used = 0;
  while (next < items.size() && used < capacity) {
    const auto& it = items[next];
    auto n = std::min(it.bytes - offset, capacity - used);
    out.copies_from.emplace_back(it.local_addr + offset, n);
    out.puts.push_back(put_item{staging_addr + used, n, it.remote_addr + offset, it.rkey_index});
    used += n;
    offset += n;
    if (offset == it.bytes) {
      ++next;
      offset = 0;
    }
  }
  return out;
}

send_request_actor spawn_send_request_actor(caf::actor_system& sys, send_spec spec) {
  return sys.spawn(send_request_impl, std::move(spec));
}

}  // namespace kvferry
