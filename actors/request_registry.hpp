// request_registry: which actor owns which request id on this node (F12: an id is never
// doubled), which ids finished recently (so cancel() can answer already_complete), and which
// requests ended quarantined (stop() releases them once the transport is gone, F22). Written
// by the facade (reserve, attach) and by request owners (unregister, quarantine); read by
// cancel() and stop().
#pragma once

#include <caf/actor.hpp>

#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace kvferry {

namespace detail {
class handle_state;
}

class request_registry {
 public:
  // Reserves `id` for a new request; false when the id is in use.
  bool reserve(const std::string& id, std::shared_ptr<detail::handle_state> handle);
  // Attaches the owning actor to a reserved id (`sends`: a send-request).
  void attach_owner(const std::string& id, caf::actor owner, bool sends = false);
  // The owner of `id` if it is a send-request (invalid otherwise): the sender looks here for
  // an owner that has not announced itself yet.
  caf::actor send_owner_of(const std::string& id) const;
  // The handle of send-request `id` and (into `owner`) its owning actor; null if `id` is no send.
  std::shared_ptr<detail::handle_state> send_handle_of(const std::string& id,
                                                       caf::actor* owner) const;
  // The owning actor of `id` (invalid if none), and whether `id` finished recently.
  caf::actor owner_of(const std::string& id, bool* recently_finished) const;
  // Whether `id` is in use (reserved, with or without an owning actor).
  bool registered(const std::string& id) const;
  // Removes `id` if `handle` still owns it (a newer request may own the id by then).
  void unregister(const std::string& id, const detail::handle_state* handle);
  // Owners of every registered request (stop() uses it).
  std::vector<caf::actor> all_owners() const;
  // A request whose owner ended without proving its memory quiescent (quarantined): kept until
  // the op ledger proves it (leave_quarantine) or the node stops, when nothing can touch that
  // memory any more.
  void quarantine(std::shared_ptr<detail::handle_state> handle);
  // Takes one request out of quarantine; false if it is not there (stop() took it already).
  bool leave_quarantine(const detail::handle_state* handle);
  // Takes every quarantined request out (stop(): after the transport's teardown).
  std::vector<std::shared_ptr<detail::handle_state>> take_quarantined();

 private:
  struct entry {
    std::shared_ptr<detail::handle_state> handle;
    caf::actor owner;
    bool sends = false;
  };
  mutable std::mutex mtx_;
  std::unordered_map<std::string, entry> entries_;
  std::deque<std::string> recent_order_;  // bounded memory of finished ids
  std::unordered_set<std::string> recent_finished_;
  std::unordered_map<const detail::handle_state*, std::shared_ptr<detail::handle_state>>
    quarantined_;
};

}  // namespace kvferry
