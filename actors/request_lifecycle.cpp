#include "actors/request_lifecycle.hpp"
#include "core/hop_trace.hpp"

#include "actors/handle_state.hpp"
#include "actors/log.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <string_view>

namespace kvferry {

// -- request_owner ----------------------------------------------------------------------------

request_owner::request_owner(const request_context& ctx, request_side side,
                             std::uint64_t token)
    : handle_(ctx.handle), registry_(ctx.registry), health_(ctx.health), ledger_(ctx.ledger),
      side_(side), token_(token), created_(ctx.called) {
  health_->request_started();
}

request_owner::~request_owner() {
  ended();
  if (!terminal_)
    finish(make_result(transfer_status::failed, errc::internal_error,
                       "the request's owning actor terminated before the transfer finished"));
  // Memory not proven quiescent stays unreleased (counted in health().unreleased) until the
  // node stops: then nothing can touch it, and stop() releases it (F22). A send's source blocks
  // are read only by its own copies and puts: retired in the op ledger, none can start any more,
  // and once the engines completed those in flight it is released (on the completing thread).
  registry_->unregister(id(), handle_.get());
  if (released_)
    return;
  registry_->quarantine(handle_);
  if (side_ == request_side::send && ledger_)
    ledger_->retire(token_, [handle = handle_, registry = registry_, health = health_] {
      if (registry->leave_quarantine(handle.get())) {  // not already taken by stop()
        health->request_released_late();  // counted first: a waiter woken by release sees it
        handle->release();
      }
    });
}

const std::string& request_owner::id() const {
  return handle_->request_id();
}

void request_owner::set_in_flight() {
  handle_->set_in_flight();
}

void request_owner::set_moving() {
  if (!moving_) {
    moving_ = true;
    health_->moving_started();
  }
}

void request_owner::stop_moving() {
  if (moving_) {
    moving_ = false;
    health_->moving_ended();
  }
}

namespace {
std::uint64_t us_between(std::chrono::steady_clock::time_point a,
                         std::chrono::steady_clock::time_point b) {
  return static_cast<std::uint64_t>(
    std::chrono::duration_cast<std::chrono::microseconds>(b - a).count());
}
}  // namespace

void request_owner::started_moving() {
  if (moving_since_ == std::chrono::steady_clock::time_point{})
    moving_since_ = std::chrono::steady_clock::now();
}

void request_owner::first_bytes() {
  if (first_byte_us_ == 0 && moving_since_ != std::chrono::steady_clock::time_point{})
    first_byte_us_ = std::max<std::uint64_t>(1, us_between(moving_since_,
                                                           std::chrono::steady_clock::now()));
}

void request_owner::finish(transfer_result r) {
  if (terminal_)
    return;
  terminal_ = true;
  if (side_ == request_side::receive)
    KVFERRY_HOP(receive_finished);
  auto now = std::chrono::steady_clock::now();
  if (moving_since_ != std::chrono::steady_clock::time_point{}) {
    r.timing.queue_us = us_between(created_, moving_since_);
    r.timing.transfer_us = us_between(moving_since_, now);
    r.timing.first_byte_us = first_byte_us_;
    r.transport = transport_;
  } else {
    r.timing.queue_us = us_between(created_, now);
  }
  health_->request_finished(r, side_, released_,
                            moving_since_ != std::chrono::steady_clock::time_point{});
  // Every line about a request names it (the engine's own id). Failures at info (a storm of
  // cancels or deadlines is the engine's business, not a warning), the rest at debug. The
  // message is left out: it may quote what a peer said (the handle carries it).
  logger()->log(r.status == transfer_status::succeeded ? spdlog::level::debug
                                                       : spdlog::level::info,
                "request '{}' ({}): {} ({}), {} bytes", id(),
                side_ == request_side::send ? "send" : "receive", to_string(r.status),
                to_string(r.code), r.bytes);
  // Terminal and released: the id is free for a new request as soon as the engine hears so.
  if (released_)
    registry_->unregister(id(), handle_.get());
  handle_->resolve(std::move(r));
}

void request_owner::release() {
  if (released_)
    return;
  released_ = true;
  if (terminal_) {
    health_->request_released_late();
    registry_->unregister(id(), handle_.get());
  }
  handle_->release();
}

// -- scoped_monitors --------------------------------------------------------------------------

scoped_monitors::~scoped_monitors() {
  for (auto& a : watched_)
    index_->unwatch(a, self_);
}

void scoped_monitors::watch(caf::scheduled_actor* self, const caf::actor_addr& a) {
  if (!a || watching(a))
    return;
  self_ = self->address();
  index_->watch(a, self_);
  watched_.push_back(a);
}

void scoped_monitors::unwatch(caf::scheduled_actor*, const caf::actor_addr& a) {
  auto it = std::find(watched_.begin(), watched_.end(), a);
  if (it == watched_.end())
    return;
  index_->unwatch(a, self_);
  watched_.erase(it);
}

bool scoped_monitors::watching(const caf::actor_addr& a) const {
  return a && std::find(watched_.begin(), watched_.end(), a) != watched_.end();
}

void scoped_monitors::clear(caf::scheduled_actor*) {
  for (auto& a : watched_)
    index_->unwatch(a, self_);
  watched_.clear();
}

// -- request_base -----------------------------------------------------------------------------

void request_base::end(caf::scheduled_actor* self, transfer_result r, bool quiescent) {
  owner->conclude(std::move(r), quiescent);
  owner->ended();
  monitors.clear(self);
  self->quit();
}

std::string request_base::deadline_text() const {
  return "request '" + owner->id() + "' passed its deadline (" + std::to_string(ctx.deadline_ms) +
         " ms)";
}

void arm_deadline(caf::scheduled_actor* self, std::uint32_t ms) {
  auto mid = self->new_request_id(caf::message_priority::normal);
  self->add_multiplexed_response_handler(
    mid.response_id(), caf::behavior{[self](caf::error&) {
      // Handled now by the current phase, as a deadline_atom message would be: no second hop
      // that other messages could overtake.
      auto phase = self->current_behavior();  // a copy: the handler may become() another
      auto msg = caf::make_message(deadline_atom::value);
      phase(msg);
    }});
  self->request_response_timeout(caf::duration{std::chrono::milliseconds{ms}}, mid);
}

// -- results ----------------------------------------------------------------------------------

transfer_result make_result(transfer_status s, errc code, std::string msg, std::uint64_t bytes) {
  return transfer_result{s, code, std::move(msg), bytes, {}};
}

caf::error make_kvferry_error(errc code, std::string msg) {
  return caf::make_error(code, std::move(msg));
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
                       describe_error(exit_reason));
}

bool is_kvferry_error(const caf::error& err) {
  return err && err.category() == caf::atom("kvferry");  // an empty error has no category
}

transfer_result result_from_error(const caf::error& err) {
  if (!err)  // a peer may send one: it carries nothing to trust
    return make_result(transfer_status::failed, errc::malformed_message,
                       "the peer answered with an empty error");
  if (is_kvferry_error(err)) {
    auto code = static_cast<errc>(err.code());
    if (std::string_view{to_string(code)} == "unknown")  // a code from a peer we do not know
      return make_result(transfer_status::failed, errc::malformed_message,
                         "the peer answered with unknown error code " +
                           std::to_string(err.code()));
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
  auto text = describe_error(err);
  if (err == caf::sec::request_receiver_down || err == caf::sec::no_route_to_receiving_node ||
      err == caf::sec::disconnect_during_handshake)
    return make_result(transfer_status::failed, errc::peer_failed, "peer unreachable: " + text);
  return make_result(transfer_status::failed, errc::internal_error, text);
}

}  // namespace kvferry
