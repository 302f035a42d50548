// buffer pool actor
//
//   acquire(wait_ms) ──free slot──> lease (holder monitored)
//        │ none free
//        v
//   [waiting, FIFO] ──slot freed──> lease
//        │ wait_ms elapsed
//        v
//   errc::timed_out (the wait is bounded; a waiter that dies leaves the queue)
//
//   release(slot) from its holder ──> slot free again
//   the holder terminates ──> its waits end; each slot it held is checked with the transport
//        that was current at lease time: no operation of the holder in flight ──> free again;
//        in flight, or that transport is gone (restarted) ──> poisoned
//   poison(slot) from its holder (quiescence unknown) ──> slot out of service for good, counted
//
// Every wait is bounded by the requester's wait_ms; nothing here waits without a limit.

#include "actors/buffer_pool_actor.hpp"

#include "actors/node_core.hpp"

#include <algorithm>
#include <chrono>
#include <deque>

namespace kvferry {

namespace {

struct waiter {
  std::uint64_t id = 0;
  caf::actor_addr holder;
  caf::typed_response_promise<lease> promise;
};

struct pool_state {
  std::vector<lease> slots;
  std::vector<caf::actor_addr> holders;  // per slot; invalid when free
  std::vector<caf::actor_addr> leased_under;  // per slot: the transport current at lease time
  std::vector<bool> poisoned;            // per slot: never handed out again
  std::shared_ptr<node_core> core;       // health counters
  std::deque<waiter> waiting;
  std::uint64_t next_waiter = 1;
  static inline const char* name = "kvferry.buffer_pool";

  std::uint32_t leased() const {
    std::uint32_t n = 0;
    for (auto& h : holders)
      n += h ? 1 : 0;
    return n;
  }

  // Hands free slots to waiters, first come first served.
  void serve_waiters() {
    for (std::size_t i = 0; i < slots.size() && !waiting.empty(); ++i) {
      if (holders[i] || poisoned[i])
        continue;
      auto w = std::move(waiting.front());
      waiting.pop_front();
      holders[i] = w.holder;
      leased_under[i] = core->children().transport.address();
      w.promise.deliver(slots[i]);
    }
  }

  bool is_waiting(std::uint64_t id) const {
    for (auto& w : waiting)
      if (w.id == id)
        return true;
    return false;
  }

  // The holder terminated: its waits end (its slots are checked by the down handler).
  void forget_waits(const caf::actor_addr& holder) {
    for (auto it = waiting.begin(); it != waiting.end();)
      it = it->holder == holder ? waiting.erase(it) : std::next(it);
  }

  void poison(std::size_t slot) {
    if (!poisoned[slot]) {
      poisoned[slot] = true;
      core->poisoned.fetch_add(1);
      core->notify_health();
    }
    holders[slot] = caf::actor_addr{};
  }
};

}  // namespace

buffer_pool_actor spawn_buffer_pool_actor(caf::actor_system& sys, std::shared_ptr<node_core> core) {
  std::vector<lease> slots;
  for (auto& r : core->staging)
    slots.push_back(lease{static_cast<std::uint32_t>(slots.size()),
                          reinterpret_cast<std::uint64_t>(r->base()), r->bytes()});
  // The slots travel as a spawn argument: CAF 0.17 dereferences a null argument tuple when a
  // function actor is spawned without arguments (UBSan reports it).
  auto impl = [](buffer_pool_actor::stateful_pointer<pool_state> self, std::vector<lease> slots,
                 std::shared_ptr<node_core> core) -> buffer_pool_actor::behavior_type {
    self->state.core = std::move(core);
    self->state.holders.resize(slots.size());
    self->state.poisoned.assign(slots.size(), false);
    self->state.leased_under.resize(slots.size());
    self->state.slots = std::move(slots);
    self->set_down_handler([=](caf::down_msg& dm) {
      auto& st = self->state;
      st.forget_waits(dm.source);
      auto transport = st.core->children().transport;
      for (std::size_t i = 0; i < st.holders.size(); ++i) {
        if (st.holders[i] != dm.source)
          continue;
        if (st.leased_under[i] != transport.address()) {
          st.poison(i);  // the transport of that lease restarted: quiescence cannot be proven
          continue;
        }
        // Still held (by a dead holder) until the transport answers: never handed out meanwhile.
        auto token = dm.source.id();
        auto holder = dm.source;
        self->request(transport, std::chrono::seconds{10}, quiescent_atom::value, token)
          .then(
            [=](bool quiescent) {
              auto& s = self->state;
              if (s.holders[i] != holder)
                return;
              if (quiescent)
                s.holders[i] = caf::actor_addr{};
              else
                s.poison(i);
              s.serve_waiters();
            },
            [=](caf::error&) {
              if (self->state.holders[i] == holder)
                self->state.poison(i);
            });
      }
      st.serve_waiters();
    });
    return {
      [=](acquire_atom, std::uint32_t wait_ms) -> caf::typed_response_promise<lease> {
        // Read the sender first: make_response_promise takes it over from the current message.
        auto holder = caf::actor_cast<caf::actor_addr>(self->current_sender());
        auto rp = self->make_response_promise<lease>();
        if (!holder) {
          rp.deliver(caf::make_error(errc::invalid_argument, "anonymous lease request"));
          return rp;
        }
        auto& st = self->state;
        self->monitor(holder);
        auto id = st.next_waiter++;
        st.waiting.push_back(waiter{id, holder, rp});
        st.serve_waiters();
        if (st.is_waiting(id))
          self->delayed_send(self, std::chrono::milliseconds{wait_ms},
                             wait_expired_atom::value, id);
        return rp;
      },
      [=](wait_expired_atom, std::uint64_t id) {
        auto& st = self->state;
        for (auto it = st.waiting.begin(); it != st.waiting.end(); ++it) {
          if (it->id == id) {
            it->promise.deliver(
              caf::make_error(errc::timed_out, "no staging slot became free within the wait"));
            st.waiting.erase(it);
            return;
          }
        }
      },
      [=](release_atom, std::uint32_t slot) {
        auto& st = self->state;
        auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
        if (slot < st.holders.size() && st.holders[slot] == sender) {
          st.holders[slot] = caf::actor_addr{};
          st.serve_waiters();
        }
      },
      [=](poison_atom, std::uint32_t slot) {
        auto& st = self->state;
        auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
        if (slot < st.holders.size() && st.holders[slot] == sender)
          st.poison(slot);
      },
      [=](stats_atom) {
        auto& st = self->state;
        auto poisoned = static_cast<std::uint32_t>(
          std::count(st.poisoned.begin(), st.poisoned.end(), true));
        return pool_stats{static_cast<std::uint32_t>(st.slots.size()), st.leased(),
                          static_cast<std::uint32_t>(st.waiting.size()), poisoned};
      },
    };
  };
  return sys.spawn(impl, std::move(slots), std::move(core));
}

}  // namespace kvferry
