// buffer pool actor
//
//   start ──first incarnation: the transport allocates the staging buffers──> ready (answers
//          the `ready` requests; a restarted pool reuses the same buffers)
//   acquire(wait_ms) ──free slot──> lease (holder monitored)
//        │ none free
//        v
//   [waiting, FIFO] ──slot freed──> lease
//        │ wait_ms elapsed
//        v
//   errc::timed_out (the wait is bounded; a waiter that dies leaves the queue)
//
//   release(slot) from its holder ──> slot free again
//   the holder terminates ──> its waits end; each slot it held stays out of service until the
//        op ledger says nothing of the holder is in flight (asked after the transport handled
//        whatever the holder sent it; at once if nothing is; else when the engine completes
//        it, whichever transport incarnation posted it) ──> free again
//   poison(slot) from its holder (quiescence unknown) ──> slot out of service for good, counted
//   restart ──> the same buffers, holders and poisoned slots (staging_slots outlives the actor):
//        each holder is watched again (one already gone is handled as a DOWN), so a slot leased
//        or poisoned before the crash is never handed out meanwhile
//
// Every wait is bounded by the requester's wait_ms; nothing here waits without a limit.

#include "actors/buffer_pool_actor.hpp"

#include "actors/keyed_fifo.hpp"
#include "actors/node_health.hpp"
#include "actors/peer_input.hpp"

#include <algorithm>
#include <chrono>
#include <unordered_map>
#include <unordered_set>

namespace kvferry {

namespace {

struct waiter {
  caf::actor_addr holder;
  caf::typed_response_promise<lease> promise;
};

struct pool_state {
  std::vector<lease> slots;
  pool_spec spec;
  std::vector<caf::actor_addr>& holders() { return spec.table->holders; }
  std::vector<bool>& poisoned() { return spec.table->poisoned; }
  // Slots of holders that died, by the holder's token (its actor id): back once the ledger
  // proves nothing of that holder is in flight.
  std::unordered_map<std::uint64_t, std::vector<std::size_t>> orphaned;
  keyed_fifo<std::uint64_t, waiter> waiting;  // by wait id, first come first served
  std::unordered_map<caf::actor_addr, std::uint64_t> wait_of;  // a holder waits once at a time
  std::unordered_set<caf::actor_addr> watched;  // holders monitored (once each, until DOWN)
  std::vector<caf::typed_response_promise<std::uint32_t>> ready_waiters;
  caf::error allocation_failed;  // the staging buffers could not be allocated
  std::uint64_t next_waiter = 1;
  static inline const char* name = "kvferry.buffer_pool";

  std::uint32_t leased() const {
    std::uint32_t n = 0;
    for (auto& h : spec.table->holders)
      n += h ? 1 : 0;
    return n;
  }

  // Hands free slots to waiters, first come first served.
  void serve_waiters() {
    for (std::size_t i = 0; i < slots.size() && !waiting.empty(); ++i) {
      if (holders()[i] || poisoned()[i])
        continue;
      auto w = waiting.pop_front();
      wait_of.erase(w->second.holder);
      holders()[i] = w->second.holder;
      w->second.promise.deliver(slots[i]);
    }
  }

  // The wait `id` ends with `err` (if it is still waiting).
  void end_wait(std::uint64_t id, const caf::error& err) {
    if (auto w = waiting.erase(id)) {
      wait_of.erase(w->holder);
      w->promise.deliver(err);
    }
  }

  // The holder terminated: its wait ends (its slots are checked by the down handler).
  void forget(const caf::actor_addr& holder) {
    watched.erase(holder);
    if (auto it = wait_of.find(holder); it != wait_of.end()) {
      waiting.erase(it->second);
      wait_of.erase(it);
    }
  }

  void poison(std::size_t slot) {
    if (!poisoned()[slot]) {
      poisoned()[slot] = true;
      spec.health->slot_poisoned();
    }
    holders()[slot] = caf::actor_addr{};
  }
};

using pool_self = buffer_pool_actor::stateful_pointer<pool_state>;

// The holder `gone` terminated holding slots: they stay out of service until the op ledger
// proves nothing of it is in flight.
void orphan(pool_self self, const caf::actor_addr& gone) {
  auto& st = self->state;
  auto token = gone.id();
  std::vector<std::size_t> held;
  for (std::size_t i = 0; i < st.holders().size(); ++i)
    if (st.holders()[i] == gone)
      held.push_back(i);  // still held (by a dead holder): never handed out meanwhile
  if (held.empty())
    return;
  st.orphaned[token] = std::move(held);
  // The holder's last put or copy may still wait in the transport's mailbox, not yet in the
  // ledger: ask through the transport, which answers after handling it. If the transport is
  // gone instead, so is its mailbox, and the ledger has everything posted.
  auto me = caf::actor_cast<buffer_pool_actor>(self);
  auto ledger = st.spec.ledger;
  auto wait_for_ledger = [me, ledger, token] {
    ledger->when_quiescent(token,
                           [me, token] { caf::anon_send(me, quiescent_atom::value, token); });
  };
  self->request(st.spec.children->current().transport, caf::infinite, quiescent_atom::value,
                token)
    .then([wait_for_ledger](bool) { wait_for_ledger(); },
          [wait_for_ledger](caf::error&) { wait_for_ledger(); });
}

// A restarted pool takes over the slots its predecessor leased: each live holder is watched
// again (it releases to this incarnation, or its DOWN comes here), each gone one is orphaned.
void adopt_holders(pool_self self) {
  auto& st = self->state;
  std::unordered_set<caf::actor_addr> seen;
  for (auto holder : st.holders()) {
    if (!holder || !seen.insert(holder).second)
      continue;
    // An address may outlive its actor: only a strong reference can be monitored.
    if (auto alive = caf::actor_cast<caf::strong_actor_ptr>(holder)) {
      st.watched.insert(holder);
      self->monitor(alive);  // one that ended but is not yet destroyed: DOWN at once
    } else {
      orphan(self, holder);
    }
  }
}

// The staging buffers exist: lay the slots out and serve whoever waited.
void become_ready(pool_self self) {
  auto& st = self->state;
  auto& table = *st.spec.table;
  for (std::size_t i = 0; i < table.buffers.size(); ++i)
    st.slots.push_back(lease{static_cast<std::uint32_t>(i), table.buffers[i]});
  if (table.holders.size() != table.buffers.size()) {  // the first incarnation
    table.holders.assign(table.buffers.size(), caf::actor_addr{});
    table.poisoned.assign(table.buffers.size(), false);
  } else {
    adopt_holders(self);
  }
  for (auto& rp : st.ready_waiters)
    rp.deliver(static_cast<std::uint32_t>(st.slots.size()));
  st.ready_waiters.clear();
  st.serve_waiters();
}

// First incarnation: the transport allocates the buffers, one after the other.
void allocate_buffers(pool_self self) {
  auto& st = self->state;
  if (st.spec.table->buffers.size() == st.spec.slots) {
    become_ready(self);
    return;
  }
  auto transport = st.spec.children->current().transport;
  self->request(transport, caf::infinite, allocate_atom::value, st.spec.slot_bytes)
    .then(
      [=](registered_memory& m) {
        self->state.spec.table->buffers.push_back(desc{m.base, m.bytes, 0});
        allocate_buffers(self);
      },
      [=](caf::error& err) {
        auto& st = self->state;
        st.allocation_failed = caf::make_error(
          errc::out_of_memory, "staging buffer " + std::to_string(st.spec.table->buffers.size()) +
                                 " of " + std::to_string(st.spec.slot_bytes) +
                                 " bytes: " + caf::to_string(err));
        for (auto& rp : st.ready_waiters)
          rp.deliver(st.allocation_failed);
        st.ready_waiters.clear();
        while (auto w = st.waiting.pop_front())
          w->second.promise.deliver(st.allocation_failed);
        st.wait_of.clear();
      });
}

buffer_pool_actor::behavior_type pool_impl(pool_self self, pool_spec spec) {
  self->state.spec = std::move(spec);
  allocate_buffers(self);
  drop_unexpected_quietly(self);
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    st.forget(dm.source);
    orphan(self, dm.source);
    st.serve_waiters();
  });
  return {
    [=](ready_atom) -> caf::typed_response_promise<std::uint32_t> {
      auto& st = self->state;
      auto rp = self->make_response_promise<std::uint32_t>();
      if (st.allocation_failed)
        rp.deliver(st.allocation_failed);
      else if (!st.slots.empty())
        rp.deliver(static_cast<std::uint32_t>(st.slots.size()));
      else
        st.ready_waiters.push_back(rp);
      return rp;
    },
    [=](acquire_atom, std::uint32_t wait_ms) -> caf::typed_response_promise<lease> {
      // Read the sender first: make_response_promise takes it over from the current message.
      auto holder = caf::actor_cast<caf::actor_addr>(self->current_sender());
      auto rp = self->make_response_promise<lease>();
      if (!holder) {
        rp.deliver(caf::make_error(errc::invalid_argument, "anonymous lease request"));
        return rp;
      }
      auto& st = self->state;
      if (st.allocation_failed) {
        rp.deliver(st.allocation_failed);
        return rp;
      }
      if (st.wait_of.count(holder) > 0) {
        rp.deliver(caf::make_error(errc::invalid_argument,
                                   "a second lease request while the first one waits"));
        return rp;
      }
      if (st.watched.insert(holder).second)
        self->monitor(holder);
      auto id = st.next_waiter++;
      st.waiting.push_back(id, waiter{holder, rp});
      st.wait_of.emplace(holder, id);
      st.serve_waiters();
      if (st.waiting.contains(id))
        self->delayed_send(self, std::chrono::milliseconds{wait_ms},
                           wait_expired_atom::value, id);
      return rp;
    },
    [=](wait_expired_atom, std::uint64_t id) {
      self->state.end_wait(
        id, caf::make_error(errc::timed_out, "no staging slot became free within the wait"));
    },
    [=](release_atom, std::uint32_t slot) {
      auto& st = self->state;
      auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
      if (slot < st.holders().size() && st.holders()[slot] == sender) {
        st.holders()[slot] = caf::actor_addr{};
        st.serve_waiters();
      }
    },
    [=](poison_atom, std::uint32_t slot) {
      auto& st = self->state;
      auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
      if (slot < st.holders().size() && st.holders()[slot] == sender)
        st.poison(slot);
    },
    [=](quiescent_atom, std::uint64_t token) {
      // The ledger's word: nothing a dead holder posted is in flight any more.
      auto& st = self->state;
      auto it = st.orphaned.find(token);
      if (it == st.orphaned.end())
        return;
      for (auto i : it->second)
        if (st.holders()[i] && st.holders()[i].id() == token)
          st.holders()[i] = caf::actor_addr{};
      st.orphaned.erase(it);
      st.serve_waiters();
    },
    [=](stats_atom) {
      auto& st = self->state;
      auto poisoned = static_cast<std::uint32_t>(
        std::count(st.poisoned().begin(), st.poisoned().end(), true));
      return pool_stats{static_cast<std::uint32_t>(st.slots.size()), st.leased(),
                        static_cast<std::uint32_t>(st.waiting.size()), poisoned};
    },
  };
}

}  // namespace

buffer_pool_actor spawn_buffer_pool_actor(caf::actor_system& sys, pool_spec spec) {
  return sys.spawn(pool_impl, std::move(spec));
}

}  // namespace kvferry
