// engine::start, the engine's lifecycle and its event-driven progress loop.
#include "transport/engine_impl.hpp"

#include "transport/status.hpp"
#include "transport/ucx_config.hpp"

#include <boost/asio/post.hpp>

#include <poll.h>
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace kvferry::transport {

namespace {

error_info ucx_error(const std::string& call, ucs_status_t status) {
  return {translate(status), call + ": " + ucs_status_string(status)};
}

}  // namespace

result<std::unique_ptr<engine>> engine::start(const engine_options& options,
                                              peer_error_fn on_peer_error) {
  // TCP may write to a socket whose peer is gone; that must be an error, not a dead process.
  std::signal(SIGPIPE, SIG_IGN);

  auto settings = ucx_settings(options, std::getenv("UCX_TLS"));
  if (!settings) {
    return settings.error();
  }
  ucp_config_t* raw_config = nullptr;
  if (ucs_status_t status = ucp_config_read(nullptr, nullptr, &raw_config); status != UCS_OK) {
    return ucx_error("ucp_config_read", status);
  }
  ucx::config_ptr config(raw_config);
  for (const ucx_setting& setting : settings.value()) {
    ucs_status_t status =
        ucp_config_modify(config.get(), setting.name.c_str(), setting.value.c_str());
    if (status != UCS_OK) {
      return ucx_error("ucp_config_modify(" + setting.name + "=" + setting.value + ")", status);
    }
  }

  ucp_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  // RMA for puts into memory a peer on this host can map; AM for everything else (the data
  // messages of engine_put.cpp, which UCX 1.13's emulated puts cannot replace safely).
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.mt_workers_shared = 1;  // context-level calls (mem_map, rkey_pack) from any thread
  ucp_context_h raw_context = nullptr;
  if (ucs_status_t status = ucp_init(&params, config.get(), &raw_context); status != UCS_OK) {
    return ucx_error("ucp_init", status);
  }
  shared_context context(raw_context, ucx::context_deleter{});
  config.reset();

  auto worker = detail::create_worker(context.get());
  if (!worker) {
    return worker.error();
  }
  std::unique_ptr<engine> result = std::make_unique<detail::engine_impl>(
      std::move(context), std::move(worker.value()), options, std::move(on_peer_error));
  return result;
}

namespace detail {

result<worker_parts> create_worker(ucp_context_h context) {
  ucp_worker_params_t worker_params;
  std::memset(&worker_params, 0, sizeof(worker_params));
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;  // used by the progress thread only
  ucp_worker_h raw_worker = nullptr;
  if (ucs_status_t status = ucp_worker_create(context, &worker_params, &raw_worker);
      status != UCS_OK) {
    return ucx_error("ucp_worker_create", status);
  }
  worker_parts parts;
  parts.worker = ucx::worker_ptr(raw_worker);
  ucp_address_t* raw_address = nullptr;
  std::size_t address_length = 0;
  if (ucs_status_t status = ucp_worker_get_address(raw_worker, &raw_address, &address_length);
      status != UCS_OK) {
    return ucx_error("ucp_worker_get_address", status);
  }
  parts.address = ucx::worker_address(raw_worker, raw_address, address_length).bytes();
  if (ucs_status_t status = ucp_worker_get_efd(raw_worker, &parts.event_fd); status != UCS_OK) {
    return ucx_error("ucp_worker_get_efd", status);
  }
  return parts;
}

engine_impl::engine_impl(shared_context context, worker_parts worker,
                         const engine_options& options, peer_error_fn on_peer_error)
    : context_(std::move(context)),
      worker_(std::move(worker.worker)),
      address_(std::move(worker.address)),
      on_peer_error_(std::move(on_peer_error)),
      // Only shared memory has the FIFO that wedges; over tcp alone a replacement would only
      // risk UCX 1.13's assertions in peers (see do_replace_worker).
      wedge_(std::chrono::milliseconds(options.tls == "tcp" ? 0 : options.wedge_timeout_ms)),
      work_(io_.get_executor()),
      event_fd_(io_, worker.event_fd),
      stop_timer_(io_),
      poll_timer_(io_),
      watch_timer_(io_) {
  if (options.device_copy) {
    device_landing::options lo;
    lo.submit = options.device_copy;
    lo.pin = options.pin_host;
    lo.unpin = options.unpin_host;
    landing_ = std::make_unique<device_landing>(std::move(lo));
  }
  install_am_handlers();
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "kvferry-ucx");
    while (true) {
      try {
        io_.run();
        break;
      } catch (...) {
        // A handler threw (a user callback escaping our catch would be a bug); keep serving.
      }
    }
  });
  progress_thread_id_ = thread_.get_id();
  boost::asio::post(io_, [this] { cycle(); });
}

engine_impl::~engine_impl() {
  if (std::this_thread::get_id() == progress_thread_id_) {
    // Destroying the engine from one of its own callbacks would join the thread it runs on.
    std::fputs("kvferry: transport::engine destroyed on its own progress thread\n", stderr);
    std::abort();
  }
  {
    std::lock_guard<std::mutex> lock(accept_mutex_);
    accepting_ = false;
    // Queued after every accepted put, connect and cancel (asio runs posted handlers in order).
    boost::asio::post(io_, [this] {
      begin_shutdown();
      cycle();
    });
  }
  thread_.join();
  // The progress thread is gone: what is left runs here, before the worker is destroyed.
  abandon_all(errc::stopped, "the transport engine stopped with UCX requests outstanding");
  for (auto& [key, peer] : peers_) {
    peer->rkeys.clear();
  }
  peers_.clear();
  for (auto& peer : closing_) {
    peer->rkeys.clear();
  }
  closing_.clear();
  if (event_fd_.is_open()) {
    event_fd_.release();
  }
}

result<std::shared_ptr<memory_registration>> engine_impl::register_memory(void* ptr,
                                                                           std::size_t bytes) {
  return map_memory(context_, ptr, bytes, false, writable_);
}

result<std::shared_ptr<memory_registration>> engine_impl::allocate_memory(std::size_t bytes) {
  return map_memory(context_, nullptr, bytes, true, writable_);
}

result<std::shared_ptr<memory_registration>> engine_impl::register_device_memory(
  void* ptr, std::size_t bytes) {
  using out_t = result<std::shared_ptr<memory_registration>>;
  if (!landing_)
    return out_t{errc::unsupported, "this engine has no copy engine for device memory"};
  if (ptr == nullptr || bytes == 0)
    return out_t{errc::invalid_argument, "device memory needs a non-null pointer and a size"};
  std::lock_guard<std::mutex> lock(device_rkey_mutex_);
  if (!device_rkey_) {
    // One page of the engine's own, registered but in no writable range: its rkey only tells a
    // peer "no mapping here, send messages".
    static std::uint64_t page[512];
    auto reg = map_memory(context_, page, sizeof(page), false, nullptr);
    if (!reg)
      return out_t{reg.error()};
    device_rkey_ = std::move(reg.value());
  }
  return out_t{device_memory(ptr, bytes, device_rkey_, device_)};
}

std::vector<std::uint8_t> engine_impl::worker_address() const {
  std::lock_guard<std::mutex> lock(address_mutex_);
  return address_;
}

void engine_impl::flush_landing() noexcept {
  if (landing_)
    landing_->flush();
}

void engine_impl::replace_worker(std::string reason) {
  post([this, reason = std::move(reason)] { do_replace_worker(reason); });
}

engine_stats engine_impl::stats() const {
  engine_stats s;
  s.ops_started = ops_started_.load();
  s.ops_completed = ops_completed_.load();
  s.ops_in_flight = s.ops_started >= s.ops_completed ? s.ops_started - s.ops_completed : 0;
  s.bytes_put = bytes_put_.load();
  s.peers = peer_count_.load();
  s.worker_replacements = worker_replacements_.load();
  s.writes_refused = writes_refused_.load();
  s.lost_wakeups = lost_wakeups_.load();
  s.acks_leaving = acks_leaving_.load();
  return s;
}

void engine_impl::on_request_done(void*, ucs_status_t status, void* user_data) noexcept {
  auto* request = static_cast<pending_request*>(user_data);
  request->status = status;
  request->owner->completed_.push_back(request);
}

void engine_impl::on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status) noexcept {
  static_cast<engine_impl*>(arg)->failed_eps_.emplace_back(ep, status);
}

void engine_impl::install_am_handlers() {
  ucp_am_handler_param_t param;
  std::memset(&param, 0, sizeof(param));
  param.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                     UCP_AM_HANDLER_PARAM_FIELD_ARG;
  param.arg = this;
  param.id = am_data_id;
  param.cb = &engine_impl::on_data_message;
  ucp_worker_set_am_recv_handler(worker_.get(), &param);
  param.id = am_ack_id;
  param.cb = &engine_impl::on_ack_message;
  ucp_worker_set_am_recv_handler(worker_.get(), &param);
}

void engine_impl::cycle() {
  const bool watched = std::exchange(watch_woke_, false);
  for (int round = 0; round < 64 && !stopped_; ++round) {
    int budget = progress_budget;
    while (budget > 0 && ucp_worker_progress(worker_.get()) != 0) {
      --budget;
    }
    flush_landing();
    const bool progressed = budget != progress_budget;
    const bool handled = handle_queues();
    if (round == 0 && watched) {
      watch_lost_wakeups(progressed || handled);
    }
    housekeeping();
    if (stopped_) {
      return;
    }
    if (budget == 0) {
      break;  // still busy: give other handlers a turn first
    }
    if (handled) {
      continue;  // handling may have posted requests: drain again before arming
    }
    const ucs_status_t status = ucp_worker_arm(worker_.get());
    // BUSY is ambiguous while our own puts or data messages wait in UCX: the arm also answers
    // BUSY for sends queued for room in a peer's queue, and a slow or starved peer that drains
    // it late is not our queue wedged (F21). Those sends complete once the peer reads on, or
    // fail once it is seen dead (its endpoint is closed); the count starts then.
    if (wedge_.observe(progressed, status == UCS_ERR_BUSY && sends_waiting_ == 0,
                       wedge_detector::clock::now()) &&
        !stopping_) {
      do_replace_worker(
          "the UCX worker was wedged (a shared-memory peer probably died in the middle of a "
          "message) and was replaced");
      continue;
    }
    if (status == UCS_ERR_BUSY) {
      continue;
    }
    if (status != UCS_OK || acks_leaving_ > 0) {
      // Cannot sleep on the event fd (or an acknowledgement waits for room in a peer's queue,
      // which wakes nobody here): fall back to a slow timer rather than spin.
      poll_timer_.expires_after(std::chrono::milliseconds(1));
      poll_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) {
          cycle();
        }
      });
      return;
    }
    wait_for_events();
    arm_watch();
    return;
  }
  if (!stopped_ && !cycle_posted_) {
    cycle_posted_ = true;
    boost::asio::post(io_, [this] {
      cycle_posted_ = false;
      cycle();
    });
  }
}

// A shared-memory peer wakes this worker through a unix socket in the abstract namespace, which
// belongs to the network namespace: a peer in another one (containers on one host) writes into
// our queue, but its wake-up never comes, and neither does the data's turn to be read. So every
// sleep is also bounded by a timer (a receive opening its window does not wake this thread, so
// "only while work is outstanding" would miss the first message). A timer wake that finds work
// proves a wake-up was lost: poll often from then on; one that finds nothing backs off to
// watch_interval_max, so that a node whose wake-ups arrive pays at most 20 wake-ups a second.
void engine_impl::watch_lost_wakeups(bool found_work) {
  if (found_work) {
    lost_wakeups_.fetch_add(1);
    watch_interval_ = watch_interval_min;
  } else {
    watch_interval_ = std::min(watch_interval_ * 2, std::chrono::microseconds(watch_interval_max));
  }
}

void engine_impl::arm_watch() {
  if (watch_armed_ || stopped_) {
    return;
  }
  watch_armed_ = true;
  watch_timer_.expires_after(watch_interval_);
  watch_timer_.async_wait([this](const boost::system::error_code& ec) {
    watch_armed_ = false;
    if (!ec && !stopped_) {
      // A wake-up that is merely on its way (the fd is readable) was not lost.
      pollfd fd{event_fd_.native_handle(), POLLIN, 0};
      watch_woke_ = ::poll(&fd, 1, 0) == 0;
      cycle();
    }
  });
}

void engine_impl::wait_for_events() {
  if (waiting_) {
    return;
  }
  waiting_ = true;
  event_fd_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                       [this, generation = wait_generation_](const boost::system::error_code& ec) {
                         if (generation != wait_generation_) {
                           return;  // a wait on a replaced worker's fd
                         }
                         waiting_ = false;
                         if (!ec && !stopped_) {
                           cycle();
                         }
                       });
}

bool engine_impl::handle_queues() {
  bool handled = false;
  while (!completed_.empty() || !failed_eps_.empty() || !acks_.empty()) {
    handled = true;
    std::vector<pending_request*> completed;
    completed.swap(completed_);
    for (pending_request* request : completed) {
      on_completed(request);
    }
    std::vector<ack> acks;
    acks.swap(acks_);
    for (const ack& a : acks) {
      on_ack(a);
    }
    std::vector<std::pair<ucp_ep_h, ucs_status_t>> failed;
    failed.swap(failed_eps_);
    for (const auto& [ep, status] : failed) {
      on_ep_failed(ep, status);
    }
  }
  return handled;
}

void engine_impl::housekeeping() {
  closing_.remove_if([](const std::unique_ptr<peer_state>& peer) { return peer->closed; });
  if (stopping_ && !stopped_ && batches_.empty() && closing_.empty() && peers_.empty()) {
    if (!worker_flush_started_) {
      flush_worker();
    } else if (worker_flushed_) {
      finish_shutdown(false);
    }
  }
}

void engine_impl::on_worker_flushed(void*, ucs_status_t, void* user_data) noexcept {
  static_cast<engine_impl*>(user_data)->worker_flushed_ = true;
}

void engine_impl::flush_worker() {
  // Peers that connected to us own endpoints inside our worker (UCX creates them for wireup).
  // Destroying the worker while such an endpoint still has a wireup reply queued trips an
  // assertion in UCX 1.13 (ucp_request_send_state_ff: "got REP message"), so let the worker
  // send what it queued first, for a bounded time.
  worker_flush_started_ = true;
  ucp_request_param_t param;
  std::memset(&param, 0, sizeof(param));
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.send = &engine_impl::on_worker_flushed;
  param.user_data = this;
  worker_flush_ = ucx::request(ucp_worker_flush_nbx(worker_.get(), &param));
  if (!worker_flush_.pending()) {
    finish_shutdown(false);
    return;
  }
  stop_timer_.expires_after(worker_flush_timeout);
  stop_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) {
      finish_shutdown(false);  // gave it its time; destroy anyway
    }
  });
}

// A wedged worker (wedge_detector.hpp) is of no use any more; a new one on the same context
// keeps every memory registration. Kept for that case: with tcp lanes, UCX 1.13 aborts a peer
// whose put is in flight to a worker that vanishes ("ucp_put_handler: unexpected error"), and a
// worker destroyed right after connecting can trip a peer's "got REP message" assertion.
void engine_impl::do_replace_worker(const std::string& reason) {
  if (stopping_) {
    return;
  }
  auto fresh = create_worker(context_.get());
  if (!fresh) {
    return;  // keep the old one; a wedge is detected again after the next timeout
  }
  worker_replacements_.fetch_add(1);

  // 1. Every endpoint goes. Its batches fail, and closing it in FORCE mode completes what UCX
  //    still holds with UCS_ERR_CANCELED; whatever it never completes is abandoned just before
  //    the worker is destroyed, after which nothing of it can write any more.
  const std::vector<std::uint64_t> keys = close_all_peers(errc::peer_failed, reason);
  for (auto& peer : closing_) {
    force_close(*peer);
  }
  handle_queues();
  abandon_all(errc::peer_failed, reason);
  for (auto& peer : closing_) {
    if (peer->close_timer) {
      peer->close_timer->cancel();
    }
  }
  closing_.clear();

  // 2. The old worker: stop waiting on its fd, let it send what it queued (bounded, see
  //    flush_worker), destroy it, and take the new one.
  ++wait_generation_;
  waiting_ = false;
  event_fd_.release();
  {
    ucp_request_param_t param;
    std::memset(&param, 0, sizeof(param));
    ucx::request flush(ucp_worker_flush_nbx(worker_.get(), &param));
    if (flush.pending()) {
      ucx::wait(worker_.get(), flush, std::chrono::milliseconds(100));
    }
  }
  worker_ = std::move(fresh.value().worker);
  install_am_handlers();
  failed_eps_.clear();  // reports about the old worker's endpoints, all gone now
  acks_.clear();        // acknowledgements through the old worker's endpoints, all gone now
  acks_leaving_ = 0;    // and none of ours leaves through them any more
  event_fd_.assign(fresh.value().event_fd);
  {
    std::lock_guard<std::mutex> lock(address_mutex_);
    address_ = std::move(fresh.value().address);
  }

  // 3. Every receive in flight gave its sender the old address: nothing it sends can arrive
  //    now. Losing their windows (after the new address is published, so a receive that opens
  //    one from here on reads the new address) tells each to end or open a new one. It waits for
  //    their copies into device memory, so those gathered while flushing the old worker go
  //    first.
  flush_landing();
  windows_->lose_all();

  // 4. Tell whoever connected them: they reconnect on their next put.
  if (on_peer_error_) {
    for (std::uint64_t key : keys) {
      try {
        on_peer_error_(key, errc::peer_failed, reason);
      } catch (...) {
      }
    }
  }
}

std::vector<std::uint64_t> engine_impl::close_all_peers(errc code, const std::string& detail) {
  std::vector<std::uint64_t> keys;
  for (const auto& [key, peer] : peers_) {
    keys.push_back(key);
  }
  for (std::uint64_t key : keys) {
    auto it = peers_.find(key);
    std::unique_ptr<peer_state> peer = std::move(it->second);
    peers_.erase(it);
    begin_close(std::move(peer), code, detail);
  }
  update_peer_count();
  return keys;
}

void engine_impl::abandon_all(errc code, const std::string& detail) {
  std::vector<std::uint64_t> ids;
  for (const auto& [id, batch] : batches_) {
    ids.push_back(id);
  }
  for (std::uint64_t id : ids) {
    if (auto it = batches_.find(id); it != batches_.end()) {
      abandon(*it->second, code, detail);
    }
  }
}

void engine_impl::begin_shutdown() {
  stopping_ = true;
  close_all_peers(errc::stopped, "the transport engine is stopping");
  stop_timer_.expires_after(stop_deadline);
  stop_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) {
      finish_shutdown(true);
    }
  });
}

void engine_impl::finish_shutdown(bool forced) {
  if (stopped_) {
    return;
  }
  if (forced) {
    // Requests that did not complete within the deadline: closing the endpoints completes
    // them with UCS_ERR_CANCELED; whatever still hangs after that is abandoned.
    for (auto& peer : closing_) {
      peer->rkeys.clear();
      peer->ep.close();
    }
    handle_queues();
    abandon_all(errc::stopped, "the transport engine stopped with UCX requests outstanding");
  }
  worker_flush_.reset();  // freed before completion: its callback will not come
  flush_landing();        // what the last progress passes gathered still gets its copy
  stopped_ = true;
  stop_timer_.cancel();
  poll_timer_.cancel();
  watch_timer_.cancel();
  event_fd_.release();  // cancels the wait; UCX closes the fd with the worker
  work_.reset();
  io_.stop();
}

}  // namespace detail
}  // namespace kvferry::transport
