// Helpers for the engine tests: bounded waits on completions, engines started or failed.
#pragma once

#include "transport/engine.hpp"
#include "transport/ucx_handles.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace kvferry::test {

using namespace std::chrono_literals;

// One put: `bytes` from `local` to `remote_addr` in the region of the batch's rkey `key`.
inline copy_op put_to(const void* local, std::size_t bytes, std::uint64_t remote_addr,
                      std::uint32_t key) {
  return copy_op{addr_of(local), desc{remote_addr, bytes, key}};
}

// A receive window over all of `region` on `owner`, the engine it is registered with (as a
// receive opens one over its blocks): peers' data messages land there only while it is open
// and only if their batch names it (put_batch::window = token()).
inline transport::window_lease window_over(transport::engine& owner,
                                           const transport::memory_registration& region) {
  return transport::window_lease(owner.windows(),
                                 {{addr_of(region.base()), static_cast<std::uint64_t>(region.bytes())}});
}

// Records every completion callback by tag. All waits are bounded.
class completion_log {
 public:
  transport::completion_fn callback(std::uint64_t tag) {
    return [this, tag](errc code, const std::string& detail) {
      std::lock_guard<std::mutex> lock(mutex_);
      calls_[tag].push_back(code);
      details_[tag] = detail;
      cv_.notify_all();
    };
  }
  // True when `count` distinct tags completed within `timeout`.
  bool wait_for_tags(std::size_t count, std::chrono::milliseconds timeout = 30s) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return calls_.size() >= count; });
  }
  std::vector<errc> calls(std::uint64_t tag) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = calls_.find(tag);
    return it == calls_.end() ? std::vector<errc>{} : it->second;
  }
  std::string detail(std::uint64_t tag) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = details_.find(tag);
    return it == details_.end() ? std::string{} : it->second;
  }
  std::size_t total_calls() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::size_t total = 0;
    for (const auto& [tag, codes] : calls_) {
      total += codes.size();
    }
    return total;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::map<std::uint64_t, std::vector<errc>> calls_;
  std::map<std::uint64_t, std::string> details_;
};

// Records on_peer_error calls.
class peer_error_log {
 public:
  transport::peer_error_fn callback() {
    return [this](std::uint64_t peer, errc code, const std::string&) {
      std::lock_guard<std::mutex> lock(mutex_);
      errors_.emplace_back(peer, code);
      cv_.notify_all();
    };
  }
  bool wait_for(std::size_t count, std::chrono::milliseconds timeout = 30s) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return errors_.size() >= count; });
  }
  std::vector<std::pair<std::uint64_t, errc>> errors() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return errors_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::pair<std::uint64_t, errc>> errors_;
};

inline std::unique_ptr<transport::engine> start_engine(const std::string& tls,
                                                       transport::peer_error_fn on_error = {},
                                                       bool shm_error_handling = true,
                                                       unsigned keepalive_interval_ms = 0) {
  transport::engine_options options;
  options.tls = tls;
  options.shm_error_handling = shm_error_handling;
  options.keepalive_interval_ms = keepalive_interval_ms;
  auto started = transport::engine::start(options, std::move(on_error));
  INFO("engine::start: " << started.error().message);
  REQUIRE(started);
  return std::move(started).value();
}

// Two engines over `tls`, the second connected to the first as `peer`: {target, initiator}.
// (Bind as `auto [b, a]`: the initiator is destroyed first, as with two locals.)
inline std::pair<std::unique_ptr<transport::engine>, std::unique_ptr<transport::engine>>
connected_engines(const std::string& tls, std::uint64_t peer) {
  auto target = start_engine(tls);
  auto initiator = start_engine(tls);
  initiator->connect(peer, target->worker_address());
  return {std::move(target), std::move(initiator)};
}

// A bare UCX context and worker (not an engine) on transports `tls` (UCX_TLS syntax), with
// `features` (UCP_FEATURE_*): a peer as tests need one, built by hand.
struct bare_ucx {
  transport::ucx::context_ptr context;
  transport::ucx::worker_ptr worker;

  bare_ucx(const char* tls, std::uint64_t features) {
    ucp_config_t* raw_config = nullptr;
    REQUIRE(ucp_config_read(nullptr, nullptr, &raw_config) == UCS_OK);
    transport::ucx::config_ptr config(raw_config);
    REQUIRE(ucp_config_modify(config.get(), "TLS", tls) == UCS_OK);
    ucp_params_t params;
    std::memset(&params, 0, sizeof(params));
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = features;
    ucp_context_h raw_context = nullptr;
    REQUIRE(ucp_init(&params, config.get(), &raw_context) == UCS_OK);
    context.reset(raw_context);
    ucp_worker_params_t worker_params;
    std::memset(&worker_params, 0, sizeof(worker_params));
    ucp_worker_h raw_worker = nullptr;
    REQUIRE(ucp_worker_create(context.get(), &worker_params, &raw_worker) == UCS_OK);
    worker.reset(raw_worker);
  }
};

// True when the environment forces UCX's transport choice (then tls tests prove nothing).
inline bool ucx_tls_overridden() { return std::getenv("UCX_TLS") != nullptr; }

inline bool is_shared_memory(const std::string& transport) {
  return transport == "posix" || transport == "sysv" || transport == "cma" ||
         transport == "xpmem" || transport == "knem";
}

}  // namespace kvferry::test
