#include "actors/handle_state.hpp"

#include "actors/event_sink.hpp"

#include <stdexcept>

namespace kvferry {

namespace detail {

namespace {
std::atomic<std::uint64_t> violation_count{0};
}

handle_state::handle_state(std::string request_id, std::weak_ptr<event_sink> sink)
    : request_id_(std::move(request_id)), sink_(std::move(sink)) {}

void handle_state::set_in_flight() noexcept {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    auto expected = transfer_status::pending;
    status_.compare_exchange_strong(expected, transfer_status::in_flight,
                                    std::memory_order_acq_rel);
  }
  cv_.notify_all();
}

bool handle_state::resolve(transfer_result r) {
  std::vector<std::function<void(const transfer_result&)>> callbacks;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (result_) {
      violation_count.fetch_add(1);
      return false;
    }
    result_ = r;
    callbacks.swap(callbacks_);
  }
  // Callbacks run before anyone can observe the result: once wait_for()/result()/status() show
  // it, every on_done callback registered before has returned (the engine may then free what
  // they captured).
  for (auto& cb : callbacks) {
    try {
      cb(r);
    } catch (...) {
      // an engine callback that throws must not take the owning actor down
    }
  }
  // The event is queued before waiters can see the result, so an engine that polls after
  // wait_for() returns finds it there.
  if (auto sink = sink_.lock())
    sink->push(transfer_event{request_id_, event_kind::completed, r});
  {
    std::lock_guard<std::mutex> guard{mtx_};
    settled_ = true;
    status_.store(r.status, std::memory_order_release);
  }
  cv_.notify_all();
  return true;
}

bool handle_state::release() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (release_claimed_) {
      violation_count.fetch_add(1);
      return false;
    }
    release_claimed_ = true;
  }
  // Queued before released() turns true, for the same reason as in resolve().
  if (auto sink = sink_.lock()) {
    transfer_event ev{request_id_, event_kind::released, {}};
    if (auto r = result())
      ev.result = *r;
    sink->push(std::move(ev));
  }
  {
    std::lock_guard<std::mutex> guard{mtx_};
    released_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
  return true;
}

std::optional<transfer_result> handle_state::result() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return settled_ ? result_ : std::nullopt;
}

std::optional<transfer_result> handle_state::wait_for(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> guard{mtx_};
  cv_.wait_for(guard, timeout, [this] { return settled_; });
  return settled_ ? result_ : std::nullopt;
}

bool handle_state::wait_released(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> guard{mtx_};
  return cv_.wait_for(guard, timeout, [this] { return released(); });
}

bool handle_state::wait_started(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> guard{mtx_};
  return cv_.wait_for(guard, timeout, [this] { return status() != transfer_status::pending; });
}

void handle_state::on_done(std::function<void(const transfer_result&)> callback) {
  std::unique_lock<std::mutex> guard{mtx_};
  if (!result_) {
    callbacks_.push_back(std::move(callback));
    return;
  }
  auto r = *result_;
  guard.unlock();
  callback(r);
}

void handle_state::set_layers(std::uint32_t layers) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (layers == 0) {
    layers_.reset();
    return;
  }
  layers_ = std::make_unique<layer_book>();
  layers_->set.assign(layers, false);
}

std::uint32_t handle_state::layers() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return layers_ ? static_cast<std::uint32_t>(layers_->set.size()) : 0;
}

errc handle_state::claim_layer(std::uint32_t i) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (!layers_)
    return errc::invalid_argument;
  if (i >= layers_->set.size())
    return errc::out_of_range;
  if (layers_->set[i])
    return errc::invalid_argument;
  layers_->set[i] = true;
  ++layers_->done;
  return errc::none;
}

bool handle_state::land_layer(std::uint32_t i, std::uint32_t layers) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (layers == 0 || layers > max_layers || i >= layers)
      return false;
    if (!layers_) {
      layers_ = std::make_unique<layer_book>();
      layers_->set.assign(layers, false);
    }
    if (layers_->set.size() != layers || layers_->set[i])
      return false;
    layers_->set[i] = true;
    ++layers_->done;
  }
  // Queued before waiters can see it, as in resolve().
  if (auto sink = sink_.lock()) {
    transfer_event ev{request_id_, event_kind::layer_landed, {}};
    ev.layer = i;
    ev.layers = layers;
    sink->push(std::move(ev));
  }
  cv_.notify_all();
  return true;
}

std::uint32_t handle_state::layers_landed() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return layers_ ? layers_->done : 0;
}

bool handle_state::wait_layer(std::uint32_t i, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> guard{mtx_};
  auto landed = [&] { return layers_ && i < layers_->set.size() && layers_->set[i]; };
  cv_.wait_for(guard, timeout, [&] { return landed() || settled_; });
  return landed();
}

std::uint64_t handle_state::violations() noexcept {
  return violation_count.load();
}

}  // namespace detail

namespace {
const std::string empty_id;
}

const std::string& transfer_handle::request_id() const {
  return st_ ? st_->request_id() : empty_id;
}

transfer_status transfer_handle::status() const noexcept {
  return st_ ? st_->status() : transfer_status::failed;
}

bool transfer_handle::released() const noexcept {
  return st_ && st_->released();
}

std::optional<transfer_result> transfer_handle::result() const {
  if (!st_)
    return transfer_result{transfer_status::failed, errc::invalid_argument, "empty handle", 0, {}};
  return st_->result();
}

std::optional<transfer_result> transfer_handle::wait_for(std::chrono::milliseconds timeout) const {
  if (!st_)
    return result();
  return st_->wait_for(timeout);
}

bool transfer_handle::wait_released(std::chrono::milliseconds timeout) const {
  return st_ ? st_->wait_released(timeout) : false;
}

bool transfer_handle::wait_started(std::chrono::milliseconds timeout) const {
  return st_ ? st_->wait_started(timeout) : true;
}

std::uint32_t transfer_handle::layers_landed() const {
  return st_ ? st_->layers_landed() : 0;
}

bool transfer_handle::wait_layer(std::uint32_t layer, std::chrono::milliseconds timeout) const {
  return st_ && st_->wait_layer(layer, timeout);
}

void transfer_handle::on_done(std::function<void(const transfer_result&)> callback) const {
  if (!st_) {
    callback(*result());
    return;
  }
  st_->on_done(std::move(callback));
}

}  // namespace kvferry
