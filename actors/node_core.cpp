#include "actors/node_core.hpp"

#include <algorithm>
#include <chrono>

namespace kvferry {

namespace {
constexpr std::size_t recent_capacity = 4096;  // finished ids remembered for cancel()
}

node_core::node_core(node_config cfg, std::uint64_t node_epoch)
    : config(std::move(cfg)), epoch(node_epoch) {
  last_progress_ns.store(std::chrono::steady_clock::now().time_since_epoch().count());
}

// -- regions ----------------------------------------------------------------------------------

region_id node_core::add_region(registered_region r) {
  std::unique_lock<std::shared_mutex> guard{regions_mtx_};
  regions_.push_back(std::move(r));
  return static_cast<region_id>(regions_.size());
}

const registered_region* node_core::find_region(region_id id) const {
  std::shared_lock<std::shared_mutex> guard{regions_mtx_};
  if (id == 0 || id > regions_.size())
    return nullptr;
  return &regions_[id - 1];
}

result<std::vector<std::pair<std::uint64_t, std::uint64_t>>> node_core::resolve_blocks(
    const std::vector<block_span>& blocks, std::vector<region_id>* regions_used) const {
  using out_t = std::vector<std::pair<std::uint64_t, std::uint64_t>>;
  if (blocks.empty())
    return result<out_t>{errc::invalid_argument, "a transfer needs at least one block"};
  if (blocks.size() > config.max_blocks_per_request)
    return result<out_t>{errc::invalid_argument,
                         "request has " + std::to_string(blocks.size()) +
                           " blocks, more than max_blocks_per_request (" +
                           std::to_string(config.max_blocks_per_request) + ")"};
  out_t out;
  out.reserve(blocks.size());
  std::shared_lock<std::shared_mutex> guard{regions_mtx_};
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const auto& b = blocks[i];
    if (b.region == 0 || b.region > regions_.size())
      return result<out_t>{errc::unknown_region, "block " + std::to_string(i) +
                                                   " names unknown region " +
                                                   std::to_string(b.region)};
    const auto& reg = regions_[b.region - 1];
    if (b.bytes == 0)
      return result<out_t>{errc::invalid_argument,
                           "block " + std::to_string(i) + " is empty (0 bytes)"};
    if (b.offset > reg.bytes || b.bytes > reg.bytes - b.offset)
      return result<out_t>{errc::out_of_range,
                           "block " + std::to_string(i) + " [" + std::to_string(b.offset) +
                             ", +" + std::to_string(b.bytes) + ") lies outside region " +
                             std::to_string(b.region) + " of " + std::to_string(reg.bytes) +
                             " bytes"};
    out.emplace_back(reinterpret_cast<std::uint64_t>(reg.base) + b.offset, b.bytes);
    if (regions_used)
      regions_used->push_back(b.region);
  }
  return out;
}

// -- children ---------------------------------------------------------------------------------

node_children node_core::children() const {
  std::lock_guard<std::mutex> guard{children_mtx_};
  return children_;
}

void node_core::set_children(node_children c) {
  std::lock_guard<std::mutex> guard{children_mtx_};
  children_ = std::move(c);
}

// -- registry ---------------------------------------------------------------------------------

bool node_core::reserve(const std::string& id, std::shared_ptr<detail::handle_state> handle) {
  std::lock_guard<std::mutex> guard{registry_mtx_};
  auto [it, added] = registry_.emplace(id, entry{std::move(handle), caf::actor{}});
  if (added && recent_finished_.erase(id) > 0)
    recent_order_.erase(std::find(recent_order_.begin(), recent_order_.end(), id));
  return added;
}

void node_core::attach_owner(const std::string& id, caf::actor owner) {
  std::lock_guard<std::mutex> guard{registry_mtx_};
  auto it = registry_.find(id);
  if (it != registry_.end())
    it->second.owner = std::move(owner);
}

caf::actor node_core::owner_of(const std::string& id, bool* recently_finished) const {
  std::lock_guard<std::mutex> guard{registry_mtx_};
  auto it = registry_.find(id);
  if (recently_finished)
    *recently_finished = recent_finished_.count(id) > 0;
  return it == registry_.end() ? caf::actor{} : it->second.owner;
}

void node_core::unregister(const std::string& id, const detail::handle_state* handle) {
  std::lock_guard<std::mutex> guard{registry_mtx_};
  auto it = registry_.find(id);
  if (it == registry_.end() || it->second.handle.get() != handle)
    return;
  registry_.erase(it);
  if (recent_finished_.insert(id).second) {
    recent_order_.push_back(id);
    if (recent_order_.size() > recent_capacity) {
      recent_finished_.erase(recent_order_.front());
      recent_order_.pop_front();
    }
  }
}

std::vector<caf::actor> node_core::all_owners() const {
  std::lock_guard<std::mutex> guard{registry_mtx_};
  std::vector<caf::actor> out;
  for (auto& kv : registry_)
    if (kv.second.owner)
      out.push_back(kv.second.owner);
  return out;
}

void node_core::note_peer(std::uint64_t peer_epoch) {
  std::lock_guard<std::mutex> guard{peers_mtx_};
  if (std::find(peers_.begin(), peers_.end(), peer_epoch) == peers_.end())
    peers_.push_back(peer_epoch);
}

std::vector<std::uint64_t> node_core::peers() const {
  std::lock_guard<std::mutex> guard{peers_mtx_};
  return peers_;
}

// -- request_owner ----------------------------------------------------------------------------

request_owner::request_owner(std::shared_ptr<node_core> core,
                             std::shared_ptr<detail::handle_state> handle, request_side side)
    : core_(std::move(core)), handle_(std::move(handle)), side_(side) {
  // Work pending from now on: the progress clock starts here if the node was idle.
  if (core_->in_flight.fetch_add(1) == 0)
    core_->last_progress_ns.store(std::chrono::steady_clock::now().time_since_epoch().count());
  core_->notify_health();
}

request_owner::~request_owner() {
  if (!terminal_)
    finish(make_result(transfer_status::failed, errc::internal_error,
                       "the request's owning actor terminated before the transfer finished"));
  // Memory not proven quiescent stays unreleased (counted in health().unreleased).
  core_->unregister(id(), handle_.get());
}

void request_owner::set_in_flight() {
  handle_->set_in_flight();
}

void request_owner::finish(transfer_result r) {
  if (terminal_)
    return;
  terminal_ = true;
  core_->last_progress_ns.store(std::chrono::steady_clock::now().time_since_epoch().count());
  core_->in_flight.fetch_sub(1);
  switch (r.status) {
    case transfer_status::succeeded:
      core_->succeeded.fetch_add(1);
      (side_ == request_side::send ? core_->bytes_sent : core_->bytes_received)
        .fetch_add(r.bytes);
      break;
    case transfer_status::cancelled: core_->cancelled.fetch_add(1); break;
    default: core_->failed.fetch_add(1); break;
  }
  if (!released_)
    core_->unreleased.fetch_add(1);
  core_->notify_health();
  // Terminal and released: the id is free for a new request as soon as the engine hears so.
  if (released_)
    core_->unregister(id(), handle_.get());
  handle_->resolve(std::move(r));
}

void request_owner::release() {
  if (released_)
    return;
  released_ = true;
  if (terminal_)
    core_->unreleased.fetch_sub(1);
  core_->notify_health();
  if (terminal_)
    core_->unregister(id(), handle_.get());
  handle_->release();
}

// -- results ----------------------------------------------------------------------------------

transfer_result make_result(transfer_status s, errc code, std::string msg, std::uint64_t bytes) {
  return transfer_result{s, code, std::move(msg), bytes};
}

std::string describe_exception(std::exception_ptr ep) {
  try {
    if (ep)
      std::rethrow_exception(ep);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
  return "no exception";
}

transfer_result stopped_result(const caf::error& exit_reason) {
  return make_result(transfer_status::failed, errc::stopped,
                     "the node stopped before the transfer finished: " +
                       caf::to_string(exit_reason));
}

transfer_result result_from_error(const caf::error& err) {
  if (err.category() == caf::atom("kvferry")) {
    auto code = static_cast<errc>(err.code());
    std::string msg;
    if (!err.context().empty() && err.context().match_elements<std::string>())
      msg = err.context().get_as<std::string>(0);
    else
      msg = to_string(code);
    return make_result(code == errc::cancelled ? transfer_status::cancelled
                                               : transfer_status::failed,
                       code, std::move(msg));
  }
  // CAF's own errors: the peer node went away or the message could not be delivered.
  auto text = caf::to_string(err);
  if (err == caf::sec::request_receiver_down || err == caf::sec::no_route_to_receiving_node ||
      err == caf::sec::disconnect_during_handshake)
    return make_result(transfer_status::failed, errc::peer_failed, "peer unreachable: " + text);
  return make_result(transfer_status::failed, errc::internal_error, text);
}

}  // namespace kvferry
