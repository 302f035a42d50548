// sender actor
//
//   announce(id, owner) ──> owners[id] = owner (monitored) ──parked fetch for id?──> route it
//   fetch(id)  ──owner known──> delegated to the owner (the owner answers the fetcher)
//        └─────owner unknown──> parked (the engine has not called send() yet)
//   cancel_fetch(id, epoch) ──> to the owner, or the parked fetch answered `cancelled`
//   decline(id) ──owner known (announced, or in the registry)──> delegated to the owner;
//        └──unknown──> not_found
//   parked longer than the fetch's deadline (or default_deadline_ms) ──> answered `timed_out`
//   owner DOWN ──> owners[id] erased
//   fetch declaring another layout tag ──> refused (incompatible_peer); nothing else changes
//   fetch for an id whose fetch is parked ──same epoch──> refused: duplicate
//        └──epochs differ──> the older one is `stale_epoch` (its node restarted since: epochs
//                            grow with each start), the newer one parks
//
// The sender never owns a transfer: it only matches fetches with their owners.

#include "actors/sender_actor.hpp"

#include "actors/messages.hpp"

#include <chrono>
#include <unordered_map>

namespace kvferry {

namespace {

struct parked_fetch {
  fetch_msg fetch;
  caf::typed_response_promise<transfer_done> promise;
};

struct sender_state {
  std::string node_name;  // for the errors sent to fetchers
  std::uint32_t default_park_ms = 0;  // bound on parking a fetch that carries no deadline
  std::string layout_tag;             // what this node's blocks are; fetches must declare it
  std::shared_ptr<const request_registry> registry;  // owners not announced yet (decline)
  std::unordered_map<std::string, send_request_actor> owners;
  std::unordered_map<caf::actor_addr, std::string> owner_ids;  // owners, reversed (for DOWN)
  std::unordered_map<std::string, parked_fetch> parked;
  static inline const char* name = "kvferry.sender";
};

sender_actor::behavior_type sender_impl(sender_actor::stateful_pointer<sender_state> self,
                                        std::string node_name, std::uint32_t default_park_ms,
                                        std::string layout_tag,
                                        std::shared_ptr<const request_registry> registry) {
  self->state.node_name = std::move(node_name);
  self->state.layout_tag = std::move(layout_tag);
  self->state.registry = std::move(registry);
  self->state.default_park_ms = default_park_ms;
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
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
    [=](announce_atom, const std::string& id, send_request_actor& owner) {
      self->monitor(owner);
      auto& st = self->state;
      st.owners[id] = owner;
      st.owner_ids[owner.address()] = id;
      auto it = st.parked.find(id);
      if (it != st.parked.end()) {
        auto p = std::move(it->second);
        st.parked.erase(it);
        p.promise.delegate(owner, std::move(p.fetch));
      }
    },
    [=](fetch_msg& fetch) -> caf::typed_response_promise<transfer_done> {
      auto rp = self->make_response_promise<transfer_done>();
      auto& st = self->state;
      if (fetch.layout_tag != st.layout_tag) {
        // Refused before it reaches an owner: the offer, if any, stays for a fitting fetch. The
        // answer does not say what this node's tag is.
        rp.deliver(caf::make_error(errc::incompatible_peer,
                                   "the fetch for request '" + fetch.request_id +
                                     "' declares another layout tag than node '" +
                                     st.node_name + "'"));
        return rp;
      }
      auto it = st.owners.find(fetch.request_id);
      if (it != st.owners.end()) {
        rp.delegate(it->second, std::move(fetch));
        return rp;
      }
      if (auto p = st.parked.find(fetch.request_id); p != st.parked.end()) {
        auto& waiting = p->second;
        if (fetch.epoch == waiting.fetch.epoch) {
          rp.deliver(caf::make_error(errc::duplicate_request_id,
                                     "a fetch for request '" + fetch.request_id +
                                       "' is already waiting at node '" + st.node_name + "'"));
          return rp;
        }
        // The same request asked for by two incarnations: the older one's node has restarted.
        auto stale = [&](const fetch_msg& f) {
          return caf::make_error(errc::stale_epoch,
                                 "the fetch for request '" + f.request_id + "' from node '" +
                                   f.node_name + "' (epoch " + std::to_string(f.epoch) +
                                   ") was superseded by one from a later start of its node");
        };
        if (fetch.epoch < waiting.fetch.epoch) {
          rp.deliver(stale(fetch));
          return rp;
        }
        waiting.promise.deliver(stale(waiting.fetch));
        st.parked.erase(p);
      }
      auto id = fetch.request_id;
      auto epoch = fetch.epoch;
      auto park_ms = fetch.deadline_ms != 0 ? fetch.deadline_ms : st.default_park_ms;
      st.parked.emplace(id, parked_fetch{std::move(fetch), rp});
      if (park_ms > 0)
        self->delayed_send(self, std::chrono::milliseconds{park_ms}, park_expired_atom::value, id,
                           epoch);
      return rp;
    },
    [=](cancel_fetch_atom, const std::string& id, std::uint64_t epoch) {
      auto& st = self->state;
      auto it = st.owners.find(id);
      if (it != st.owners.end()) {
        self->send(it->second, cancel_fetch_atom::value, id, epoch);
        return;
      }
      auto p = st.parked.find(id);
      if (p != st.parked.end() && p->second.fetch.epoch == epoch) {
        p->second.promise.deliver(
          caf::make_error(errc::cancelled, "request '" + id + "' cancelled by the receiver before "
                                             "node '" + st.node_name + "' sent it"));
        st.parked.erase(p);
      }
    },
    [=](layout_atom) { return self->state.layout_tag; },
    [=](decline_atom, const std::string& id) -> caf::typed_response_promise<cancel_result> {
      auto rp = self->make_response_promise<cancel_result>();
      auto& st = self->state;
      send_request_actor owner;
      if (auto it = st.owners.find(id); it != st.owners.end())
        owner = it->second;
      else if (st.registry)  // send() returned, the owner's announce is still on its way
        owner = caf::actor_cast<send_request_actor>(st.registry->send_owner_of(id));
      if (owner)
        rp.delegate(owner, decline_atom::value);
      else
        rp.deliver(cancel_result::not_found);
      return rp;
    },
    [=](park_expired_atom, const std::string& id, std::uint64_t epoch) {
      auto& st = self->state;
      auto p = st.parked.find(id);
      if (p != st.parked.end() && p->second.fetch.epoch == epoch) {
        p->second.promise.deliver(caf::make_error(
          errc::timed_out, "the fetch for request '" + id + "' waited at node '" +
                             st.node_name + "' for its deadline without a matching send()"));
        st.parked.erase(p);
      }
    },
  };
}

}  // namespace

sender_actor spawn_sender_actor(caf::actor_system& sys, std::string node_name,
                                std::uint32_t default_park_ms, std::string layout_tag,
                                std::shared_ptr<const request_registry> registry) {
  return sys.spawn(sender_impl, std::move(node_name), default_park_ms, std::move(layout_tag),
                   std::move(registry));
}

}  // namespace kvferry
