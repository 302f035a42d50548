// sender actor
//
//   announce(id) (node::send put an offer for id into the book; harmless from anyone else)
//        ──> a fetch parked for id is served; the offer's bound node watched; the sweep armed
//        (an empty id, from the supervisor after a restart: every bound node of the book)
//   fetch(id)  ──malformed or over a limit (check_fetch)──> refused; nothing else changes
//        │     ──its anchor set to who is watched for it (the anchor it names if on the node the
//        │       message came from, else the fetching actor); neither──> refused
//        ├─────owner actor known (spawned here, or in the registry)──> relayed to the owner; its
//        │       answer relayed back (the owner's address never reaches a peer: CAF 0.17 lets a
//        │       peer end any actor it can name); the owner DOWN first──> answered with CAF's
//        │       runtime_error (puts may still land: the receiver quarantines)
//        ├─────an offer in the book (offer_book.hpp)──fits (match_fetch)──> taken out, its owner
//        │       moved into a new send-request actor (registered, monitored), the fetch relayed
//        │       to it as above; ──does not fit──> refused, the offer waits on
//        └─────neither──> parked (the engine has not called send() yet), unless the
//                         peer's or the node's parked fetches are at their limit
//   the fetching node (its anchor, else the fetching actor) DOWN ──> its parked fetches dropped
//   an offer's bound node DOWN ──> its offers end peer_failed (released: nothing was exposed)
//   cancel_fetch(id, epoch) ──> to the owner actor, or the parked fetch answered `cancelled`
//   decline(id) ──owner actor known──> relayed to the owner;
//        ├──an offer in the book, unbound or bound to the decliner's node──> it ends cancelled
//        └──else──> not_found
//   parked longer than the fetch's deadline, never longer than default_deadline_ms, or an offer
//        past its deadline ──> answered `timed_out` / ended timed_out at the next sweep
//        (park_expired: at most every 100 ms while anything waits; one timer for all of them; a
//        peer's park_expired expires nothing early)
//   owner DOWN ──> owners[id] erased
//   fetch declaring another layout tag ──> refused (incompatible_peer); nothing else changes
//   fetch for an id whose fetch is parked ──same epoch──> refused: duplicate
//        └──epochs differ──> the older one is `stale_epoch` (its node restarted since: epochs
//                            grow with each start), the newer one parks
//
// The sender owns a transfer only while it takes an offer out of the book: it either ends it
// there (deadline, bound node DOWN, decline) or hands its owner to the actor it spawns.

#include "actors/sender_actor.hpp"
#include "core/hop_trace.hpp"

#include "actors/log.hpp"
#include "actors/messages.hpp"
#include "actors/offer_book.hpp"
#include "actors/peer_input.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <unordered_map>
#include <unordered_set>

namespace kvferry {

namespace {

using clock_type = caf::actor_clock::clock_type;
using expiry_index = std::multimap<clock_type::time_point, std::string>;

// The longest a parked fetch outlives its deadline: the sweep's period while any fetch waits.
constexpr std::chrono::milliseconds sweep_period{100};

struct parked_fetch {
  fetch_msg fetch;
  caf::typed_response_promise<transfer_done> promise;
  caf::node_id origin;     // the node the fetch came from (counted against its limit)
  caf::actor_addr watched; // its anchor, else the fetching actor: its DOWN drops the fetch
  caf::actor_addr requester;  // the fetching actor (layer-wise progress goes there)
  std::optional<expiry_index::iterator> expiry;  // in sender_state::expiries, if it expires
};

struct sender_state {
  sender_spec spec;
  std::unordered_map<std::string, send_request_actor> owners;
  std::unordered_map<caf::actor_addr, std::string> owner_ids;  // owners, reversed (for DOWN)
  std::unordered_map<std::string, parked_fetch> parked;
  std::unordered_map<caf::node_id, std::uint32_t> parked_per_node;
  std::unordered_map<caf::actor_addr, std::unordered_set<std::string>> parked_by_watch;
  // Fetches relayed to their owner and not answered yet, by relay number, and the numbers by
  // owner: an owner that ends without answering has them answered at its DOWN.
  std::unordered_map<std::uint64_t, caf::typed_response_promise<transfer_done>> relays;
  std::unordered_map<caf::actor_addr, std::unordered_set<std::uint64_t>> relays_by_owner;
  std::uint64_t last_relay = 0;
  // When parked fetches expire, earliest first. One sweep timer serves them all: a timer per
  // fetch would outlive a fetch cancelled or routed early, and a peer that parks and cancels
  // in a loop would pile them up until their deadlines.
  expiry_index expiries;
  bool sweep_armed = false;
  // The nodes offers of the book are bound to, each monitored once (offer_book::bound_nodes).
  std::unordered_set<caf::actor_addr> bound_watched;
  static inline const char* name = "kvferry.sender";
};

using self_ptr = sender_actor::stateful_pointer<sender_state>;

// Parks `p` under `id`, watched; false, and nothing parked, if what it is watched through is
// gone already (its node disconnected before the fetch was read: nobody waits for the answer).
bool park(self_ptr self, std::string id, parked_fetch p) {
  auto& st = self->state;
  auto w = st.parked_by_watch.find(p.watched);
  if (w == st.parked_by_watch.end()) {
    if (!monitor_if_alive(self, p.watched))
      return false;
    w = st.parked_by_watch.emplace(p.watched, std::unordered_set<std::string>{}).first;
  }
  ++st.parked_per_node[p.origin];
  w->second.insert(id);
  st.parked.emplace(std::move(id), std::move(p));
  if (st.spec.health)
    st.spec.health->set_parked_fetches(st.parked.size());
  return true;
}

// Takes a parked fetch out of the sender and its indexes.
parked_fetch unpark(self_ptr self, std::unordered_map<std::string, parked_fetch>::iterator it) {
  auto& st = self->state;
  auto p = std::move(it->second);
  if (auto n = st.parked_per_node.find(p.origin); n != st.parked_per_node.end() && --n->second == 0)
    st.parked_per_node.erase(n);
  if (auto w = st.parked_by_watch.find(p.watched); w != st.parked_by_watch.end()) {
    w->second.erase(it->first);
    if (w->second.empty()) {
      self->demonitor(p.watched);
      st.parked_by_watch.erase(w);
    }
  }
  if (p.expiry)
    st.expiries.erase(*p.expiry);
  st.parked.erase(it);
  if (st.spec.health)
    st.spec.health->set_parked_fetches(st.parked.size());
  return p;
}

// `owner` owns `id` from now on, if this node's registry says so: the registry, written by the
// node itself, is the only source of truth.
bool adopt_owner(self_ptr self, const std::string& id, const send_request_actor& owner) {
  auto& st = self->state;
  if (!owner || !st.spec.registry ||
      st.spec.registry->send_owner_of(id) != caf::actor_cast<caf::actor>(owner))
    return false;
  if (auto it = st.owners.find(id); it != st.owners.end() && it->second == owner)
    return true;
  self->monitor(owner);
  st.owners[id] = owner;
  st.owner_ids[owner.address()] = id;
  return true;
}

caf::error refused(errc code, std::string text) {
  return caf::make_error(code, std::move(text));
}

// Hands `fetch` to its owner and relays the answer to `rp`. Not delegated: the answer would
// come from the owner, and the fetching peer would learn an address it could end the transfer
// with (an exit message; CAF 0.17 has no way to refuse one).
void relay_fetch(self_ptr self, const send_request_actor& owner, fetch_msg fetch,
                 caf::actor_addr requester, caf::typed_response_promise<transfer_done> rp) {
  auto& st = self->state;
  auto key = ++st.last_relay;
  st.relays.emplace(key, std::move(rp));
  st.relays_by_owner[owner.address()].insert(key);
  auto answer = [self, key, from = owner.address()](caf::expected<transfer_done> x) {
    auto& st = self->state;
    auto it = st.relays.find(key);
    if (it == st.relays.end())  // answered at the owner's DOWN already
      return;
    auto rp = std::move(it->second);
    st.relays.erase(it);
    if (auto o = st.relays_by_owner.find(from); o != st.relays_by_owner.end()) {
      o->second.erase(key);
      if (o->second.empty())
        st.relays_by_owner.erase(o);
    }
    if (x)
      rp.deliver(std::move(*x));
    else
      rp.deliver(std::move(x.error()));
  };
  self->request(owner, caf::infinite, std::move(fetch), std::move(requester))
    .then([=](transfer_done& d) { answer(std::move(d)); },
          [=](caf::error& e) { answer(std::move(e)); });
}

// The owner `dead` ended: fetches relayed to it and not answered get CAF's runtime_error (its
// puts may still land; the receiver quarantines its destination).
void fail_relays(self_ptr self, const caf::actor_addr& dead, const caf::error& reason) {
  auto& st = self->state;
  auto o = st.relays_by_owner.find(dead);
  if (o == st.relays_by_owner.end())
    return;
  for (auto key : o->second)
    if (auto it = st.relays.find(key); it != st.relays.end()) {
      it->second.deliver(caf::make_error(
        caf::sec::runtime_error, "the send-request ended without answering the fetch (" +
                                   describe_error(reason) + "); its puts may still land"));
      st.relays.erase(it);
    }
  st.relays_by_owner.erase(o);
}

// Arms the sweep if fetches or offers wait to expire and none is armed: at the earliest
// expiry, at most sweep_period away.
void arm_sweep(self_ptr self) {
  auto& st = self->state;
  if (st.sweep_armed)
    return;
  std::optional<clock_type::time_point> next;
  if (!st.expiries.empty())
    next = st.expiries.begin()->first;
  if (st.spec.book)
    if (auto offer_next = st.spec.book->next_deadline(); offer_next && (!next || *offer_next < *next))
      next = offer_next;
  if (!next)
    return;
  auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(*next - self->clock().now());
  wait = std::clamp(wait, std::chrono::milliseconds{1}, sweep_period);
  self->delayed_send(self, wait, park_expired_atom::value, std::string{}, std::uint64_t{0});
  st.sweep_armed = true;
}

// Ends every offer bound to `node`, which went away (`why`) before it fetched them.
void end_bound_offers(self_ptr self, const caf::actor_addr& node, const std::string& why) {
  auto& st = self->state;
  if (!st.spec.book)
    return;
  for (auto& o : st.spec.book->take_bound_to(node))
    end_held(std::move(o), make_result(transfer_status::failed, errc::peer_failed,
                                       "the node this offer is bound to went away before it "
                                       "fetched: " + why + "; its blocks are released"));
}

// Watches the nodes offers are bound to that are not watched yet (`all`: every one in the book,
// as a restarted sender does).
void watch_bound_nodes(self_ptr self, bool all) {
  auto& st = self->state;
  if (!st.spec.book)
    return;
  for (auto& node : st.spec.book->bound_nodes(all)) {
    if (st.bound_watched.count(node) > 0)
      continue;
    if (monitor_if_alive(self, node))
      st.bound_watched.insert(node);
    else  // gone before it could be watched: as if its DOWN had come
      end_bound_offers(self, node, "gone before its offers were watched");
  }
}

// Answers `timed_out` to every parked fetch whose time is up, ends every offer past its
// deadline, then arms the next sweep. What the message says does not matter (a peer can send
// one too): only the clock expires a fetch or an offer.
void sweep_parked(self_ptr self) {
  auto& st = self->state;
  st.sweep_armed = false;
  auto now = self->clock().now();
  while (!st.expiries.empty() && st.expiries.begin()->first <= now) {
    auto id = st.expiries.begin()->second;
    auto p = st.parked.find(id);
    if (p == st.parked.end()) {  // not expected: every unpark takes its expiry out
      st.expiries.erase(st.expiries.begin());
      continue;
    }
    unpark(self, p).promise.deliver(
      refused(errc::timed_out, "the fetch for request '" + id + "' waited at node '" +
                                 st.spec.node_name + "' for its deadline without a matching "
                                                     "send()"));
  }
  if (st.spec.book) {
    for (auto& o : st.spec.book->take_expired(now)) {
      auto text = "request '" + o.owner->id() + "' passed its deadline (" +
                  std::to_string(o.spec.ctx.deadline_ms) +
                  " ms): no peer fetched it; its blocks are released";
      end_held(std::move(o),
               make_result(transfer_status::failed, errc::timed_out, std::move(text)));
    }
  }
  arm_sweep(self);
}

// A fetch with no owner yet: parked until its send(), its deadline, a cancel or its node's end.
void park_fetch(self_ptr self, fetch_msg& fetch, caf::typed_response_promise<transfer_done>& rp,
                const caf::node_id& origin, caf::actor_addr requester) {
  auto& st = self->state;
  const auto& id = fetch.request_id;
  if (auto p = st.parked.find(id); p != st.parked.end()) {
    auto& waiting = p->second;
    if (fetch.epoch == waiting.fetch.epoch) {
      rp.deliver(refused(errc::duplicate_request_id, "a fetch for request '" + id +
                                                       "' is already waiting at node '" +
                                                       st.spec.node_name + "'"));
      return;
    }
    // The same request asked for by two incarnations: the older one's node has restarted.
    auto stale = [&](const fetch_msg& f) {
      return refused(errc::stale_epoch, "the fetch for request '" + f.request_id + "' from node '" +
                                          f.node_name + "' (epoch " + std::to_string(f.epoch) +
                                          ") was superseded by one from a later start of its node");
    };
    if (fetch.epoch < waiting.fetch.epoch) {
      rp.deliver(stale(fetch));
      return;
    }
    auto older = unpark(self, p);
    older.promise.deliver(stale(older.fetch));
  }
  // Counted against the node the message came from; watched through its anchor (set by the
  // fetch handler: never another node's).
  auto watched = fetch.anchor;
  if (st.parked.size() >= st.spec.max_parked) {
    rp.deliver(refused(errc::limit_exceeded,
                       "node '" + st.spec.node_name + "' holds " + std::to_string(st.parked.size()) +
                         " fetches waiting for their send(), its limit (max_parked_fetches); "
                         "request '" + id + "' refused"));
    return;
  }
  if (auto n = st.parked_per_node.find(origin);
      n != st.parked_per_node.end() && n->second >= st.spec.max_parked_per_peer) {
    rp.deliver(refused(errc::limit_exceeded,
                       "node '" + st.spec.node_name + "' holds " + std::to_string(n->second) +
                         " fetches from this peer waiting for their send(), its limit "
                         "(max_parked_fetches_per_peer); request '" + id + "' refused"));
    return;
  }
  // Never longer than this node's own default: a peer does not choose how long it is held.
  auto park_ms = fetch.deadline_ms;
  auto cap = st.spec.default_park_ms;
  if (cap != 0 && (park_ms == 0 || park_ms > cap))
    park_ms = cap;
  std::optional<expiry_index::iterator> expiry;
  if (park_ms > 0)
    expiry = st.expiries.emplace(self->clock().now() + std::chrono::milliseconds{park_ms}, id);
  std::string key = id;  // `id` is the fetch's, which moves into the parked entry
  if (!park(self, key,
            parked_fetch{std::move(fetch), rp, origin, watched, std::move(requester), expiry})) {
    if (expiry)
      st.expiries.erase(*expiry);
    rp.deliver(refused(errc::peer_failed, "the fetching peer of request '" + key +
                                            "' went away before node '" + st.spec.node_name +
                                            "' read its fetch"));
    return;
  }
  arm_sweep(self);
}

caf::node_id node_of(const caf::actor_addr& a) {
  return a ? a.node() : caf::node_id{};
}

// The owner actor of `id`: spawned here, or (by a predecessor of this sender) in the registry.
send_request_actor owner_actor(self_ptr self, const std::string& id) {
  auto& st = self->state;
  if (auto it = st.owners.find(id); it != st.owners.end())
    return it->second;
  if (st.spec.registry) {
    auto owner = caf::actor_cast<send_request_actor>(st.spec.registry->send_owner_of(id));
    if (adopt_owner(self, id, owner))
      return owner;
  }
  return {};
}

// A fetch for an offer in the book: if it fits, the offer leaves the book, its owner moves into
// a new send-request actor, registered (under the book's lock, so that cancel() and
// layer_ready() find it once the offer is gone) and monitored, and the fetch is relayed to it;
// if not, the fetch is refused and the offer waits on. False if the book has no offer of the id.
bool serve_from_book(self_ptr self, fetch_msg& fetch,
                     caf::typed_response_promise<transfer_done>& rp, const caf::node_id& origin,
                     caf::actor_addr& requester) {
  auto& st = self->state;
  if (!st.spec.book)
    return false;
  const auto id = fetch.request_id;
  const auto now = self->clock().now();
  caf::error refusal;
  send_request_actor owner;
  auto found = st.spec.book->take_if(
    id,
    [&](const offer& o) {
      auto plan = match_fetch(id, o.spec.blocks, o.spec.layer_blocks,
                              node_of(o.spec.bound_to.address()), fetch, origin);
      if (!plan)
        refusal = std::move(plan.error());
      return static_cast<bool>(plan);
    },
    [&](offer& o) {
      std::uint32_t left_ms = 0;  // no deadline
      if (o.deadline)  // one already passed (the sweep has not run yet) fires at once
        left_ms = static_cast<std::uint32_t>(std::max<std::int64_t>(
          1, std::chrono::duration_cast<std::chrono::milliseconds>(*o.deadline - now).count()));
      owner = spawn_send_request_actor(self->system(), std::move(o.spec), std::move(o.owner),
                                       left_ms);
      if (st.spec.registry)
        st.spec.registry->attach_owner(id, caf::actor_cast<caf::actor>(owner), true);
    });
  if (!found)
    return false;
  if (!owner) {
    rp.deliver(std::move(refusal));
    return true;
  }
  adopt_owner(self, id, owner);
  relay_fetch(self, owner, std::move(fetch), std::move(requester), rp);
  return true;
}

// A checked fetch goes to the owner actor of its id, else to the offer in the book, else parks.
void serve_fetch(self_ptr self, fetch_msg& fetch, caf::typed_response_promise<transfer_done>& rp,
                 const caf::node_id& origin, caf::actor_addr requester) {
  if (auto owner = owner_actor(self, fetch.request_id)) {
    relay_fetch(self, owner, std::move(fetch), std::move(requester), rp);
    return;
  }
  if (serve_from_book(self, fetch, rp, origin, requester))
    return;
  park_fetch(self, fetch, rp, origin, std::move(requester));
}

sender_actor::behavior_type sender_impl(self_ptr self, sender_spec spec) {
  drop_unexpected_quietly(self);
  self->state.spec = std::move(spec);
  if (self->state.spec.health)  // a restarted sender starts empty (its predecessor's went)
    self->state.spec.health->set_parked_fetches(0);
  // The book outlives a sender: its offers' bound nodes are watched anew, their deadlines swept.
  watch_bound_nodes(self, true);
  arm_sweep(self);
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    if (st.bound_watched.erase(dm.source) > 0)
      end_bound_offers(self, dm.source, describe_error(dm.reason));
    if (auto w = st.parked_by_watch.find(dm.source); w != st.parked_by_watch.end()) {
      // The fetching node (or actor) is gone: nobody waits for these answers any more.
      auto ids = w->second;
      for (auto& id : ids)
        if (auto p = st.parked.find(id); p != st.parked.end() && p->second.watched == dm.source)
          unpark(self, p).promise.deliver(
            refused(errc::peer_failed, "the fetching peer of request '" + id +
                                         "' went away: " + describe_error(dm.reason)));
      return;
    }
    fail_relays(self, dm.source, dm.reason);
    auto id = st.owner_ids.find(dm.source);
    if (id == st.owner_ids.end())
      return;
    // The id may belong to a newer owner by now (reused once this one was released).
    auto owner = st.owners.find(id->second);
    if (owner != st.owners.end() && owner->second.address() == dm.source)
      st.owners.erase(owner);
    st.owner_ids.erase(id);
  });
  return {
    [=](announce_atom, const std::string& id) {
      // node::send put an offer of `id` into the book. From a peer it changes nothing: a parked
      // fetch is served only if the book (or an owner actor) has its id.
      auto& st = self->state;
      watch_bound_nodes(self, id.empty());  // empty: from the supervisor, after a restart
      arm_sweep(self);
      auto it = st.parked.find(id);
      if (it == st.parked.end() ||
          !(owner_actor(self, id) || (st.spec.book && st.spec.book->holds(id))))
        return;
      auto p = unpark(self, it);
      serve_fetch(self, p.fetch, p.promise, p.origin, std::move(p.requester));
    },
    [=](fetch_msg& fetch) -> caf::typed_response_promise<transfer_done> {
      KVFERRY_HOP(fetch_at_sender);
      auto fetcher = self->current_sender();  // before make_response_promise takes it over
      auto rp = self->make_response_promise<transfer_done>();
      auto& st = self->state;
      if (auto bad = check_fetch(
            destination{fetch.request_id, fetch.epoch, fetch.worker_address, fetch.rkeys,
                        fetch.region_bases, fetch.region_bytes, fetch.blocks, fetch.ranges},
            st.spec.limits)) {
        rp.deliver(refused(bad->code, bad->message));
        return rp;
      }
      if (fetch.layout_tag != st.spec.layout_tag) {
        // Refused before it reaches an owner: the offer, if any, stays for a fitting fetch. The
        // answer does not say what this node's tag is.
        rp.deliver(refused(errc::incompatible_peer,
                           "the fetch for request '" + fetch.request_id +
                             "' declares another layout tag than node '" + st.spec.node_name +
                             "'"));
        return rp;
      }
      // Who is watched for this fetch, from here on its anchor: the anchor it names only if
      // that is on the node the message came from (a forged one would keep the fetch past its
      // sender), else the fetching actor.
      auto origin = fetcher ? fetcher->node() : caf::node_id{};
      if (!fetch.anchor || fetch.anchor.node() != origin)
        fetch.anchor = caf::actor_cast<caf::actor_addr>(fetcher);
      if (!fetch.anchor) {
        rp.deliver(refused(errc::malformed_message, "a fetch for request '" + fetch.request_id +
                                                      "' that names no sender cannot be served"));
        return rp;
      }
      serve_fetch(self, fetch, rp, origin, caf::actor_cast<caf::actor_addr>(fetcher));
      return rp;
    },
    [=](cancel_fetch_atom, const std::string& id, std::uint64_t epoch, bool worker_replaced) {
      auto& st = self->state;
      auto it = st.owners.find(id);
      if (it != st.owners.end()) {
        self->send(it->second, cancel_fetch_atom::value, id, epoch, worker_replaced);
        return;
      }
      auto p = st.parked.find(id);
      if (p != st.parked.end() && p->second.fetch.epoch == epoch)
        unpark(self, p).promise.deliver(
          refused(errc::cancelled, "request '" + id + "' cancelled by the receiver before node '" +
                                     st.spec.node_name + "' sent it"));
    },
    [=](layout_atom) { return self->state.spec.layout_tag; },
    [=](identity_atom) { return own_process(); },
    [=](decline_atom, const std::string& id) -> caf::typed_response_promise<cancel_result> {
      // Read the sender first: make_response_promise takes it over from the current message.
      const auto decliner = self->current_sender();
      const caf::node_id from = decliner ? decliner->node() : caf::node_id{};
      auto rp = self->make_response_promise<cancel_result>();
      auto& st = self->state;
      auto owner = owner_actor(self, id);
      if (!owner) {
        // An offer no peer fetched yet ends here, unless it is bound to another node: then, as
        // if there were no such offer (a wrong guess neither ends it nor reveals it, F17).
        std::optional<offer> declined;
        if (st.spec.book)
          st.spec.book->take_if(
            id,
            [&](const offer& o) {
              auto bound = o.spec.bound_to.address();
              return !bound || bound.node() == from;
            },
            [&](offer& o) { declined = std::move(o); });
        if (!declined) {
          rp.deliver(cancel_result::not_found);
          return rp;
        }
        end_held(std::move(*declined),
                 make_result(transfer_status::cancelled, errc::cancelled,
                             "declined by the decode node before any fetch: its blocks are "
                             "released"));
        rp.deliver(cancel_result::cancelled_before_advertise);
        return rp;
      }
      // Relayed, as a fetch is: the decliner does not learn the owner's address.
      self->request(owner, caf::infinite, decline_atom::value, from)
        .then([rp](cancel_result r) mutable { rp.deliver(r); },
              [rp](caf::error& e) mutable {
                if (e == caf::sec::request_receiver_down)  // the offer ended meanwhile
                  rp.deliver(cancel_result::already_complete);
                else
                  rp.deliver(std::move(e));
              });
      return rp;
    },
    [=](park_expired_atom, const std::string&, std::uint64_t) { sweep_parked(self); },
    [=](layer_atom, const caf::actor_addr& to, const std::string& id, std::uint32_t layer,
        std::uint32_t layers) {
      // Only this node's send-requests ask this: from a peer it would be a relay to anyone.
      auto from = self->current_sender();
      if (!from || from->node() != self->node())
        return;
      if (auto dest = caf::actor_cast<recv_request_actor>(to))
        self->send(dest, layer_atom::value, id, layer, layers);
    },
  };
}

}  // namespace

sender_actor spawn_sender_actor(caf::actor_system& sys, sender_spec spec) {
  return sys.spawn(sender_impl, std::move(spec));
}

}  // namespace kvferry
