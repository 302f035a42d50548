// RAII owners for every UCX handle the transport holds. Internal to transport/: nothing outside
// this directory includes UCX headers.
//
// Destruction order matters and is the owner's job: rkeys before the endpoint they were unpacked
// on, endpoints before their worker, the worker (and every memory registration) before the
// context. Everything that touches a worker (endpoints, rkeys, requests) must be destroyed on
// the worker's thread.
#pragma once

#include <ucp/api/ucp.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace kvferry::transport::ucx {

struct config_deleter {
  void operator()(ucp_config_t* config) const noexcept { ucp_config_release(config); }
};
using config_ptr = std::unique_ptr<ucp_config_t, config_deleter>;

struct context_deleter {
  void operator()(ucp_context_h context) const noexcept { ucp_cleanup(context); }
};
using context_ptr = std::unique_ptr<std::remove_pointer_t<ucp_context_h>, context_deleter>;

struct worker_deleter {
  void operator()(ucp_worker_h worker) const noexcept { ucp_worker_destroy(worker); }
};
using worker_ptr = std::unique_ptr<std::remove_pointer_t<ucp_worker_h>, worker_deleter>;

struct rkey_deleter {
  void operator()(ucp_rkey_h rkey) const noexcept { ucp_rkey_destroy(rkey); }
};
// A remote key unpacked on one endpoint. Destroy it on the worker's thread, after the
// operations using it completed and before the endpoint is closed.
using rkey_ptr = std::unique_ptr<std::remove_pointer_t<ucp_rkey_h>, rkey_deleter>;

struct rkey_buffer_deleter {
  void operator()(void* buffer) const noexcept { ucp_rkey_buffer_release(buffer); }
};
// The buffer ucp_rkey_pack returns.
using rkey_buffer_ptr = std::unique_ptr<void, rkey_buffer_deleter>;

// The address of a worker (ucp_worker_get_address); released with the worker that made it.
class worker_address {
 public:
  worker_address() noexcept = default;
  worker_address(ucp_worker_h worker, ucp_address_t* address, std::size_t length) noexcept
      : worker_(worker), address_(address), length_(length) {}
  worker_address(worker_address&& other) noexcept { swap(other); }
  worker_address& operator=(worker_address&& other) noexcept {
    worker_address(std::move(other)).swap(*this);
    return *this;
  }
  worker_address(const worker_address&) = delete;
  worker_address& operator=(const worker_address&) = delete;
  ~worker_address() { reset(); }

  void reset() noexcept;
  const ucp_address_t* get() const noexcept { return address_; }
  std::size_t length() const noexcept { return length_; }
  std::vector<std::uint8_t> bytes() const;

 private:
  void swap(worker_address& other) noexcept {
    std::swap(worker_, other.worker_);
    std::swap(address_, other.address_);
    std::swap(length_, other.length_);
  }
  ucp_worker_h worker_ = nullptr;
  ucp_address_t* address_ = nullptr;
  std::size_t length_ = 0;
};

// A memory registration (ucp_mem_map) plus, once pack_rkey() ran, its packed rkey buffer.
// Context-level: may be destroyed on any thread while the context lives.
class memory_handle {
 public:
  memory_handle() noexcept = default;
  memory_handle(ucp_context_h context, ucp_mem_h memh) noexcept : context_(context), memh_(memh) {}
  memory_handle(memory_handle&& other) noexcept { swap(other); }
  memory_handle& operator=(memory_handle&& other) noexcept {
    memory_handle(std::move(other)).swap(*this);
    return *this;
  }
  memory_handle(const memory_handle&) = delete;
  memory_handle& operator=(const memory_handle&) = delete;
  ~memory_handle() { reset(); }

  void reset() noexcept;
  ucp_mem_h get() const noexcept { return memh_; }
  // ucp_rkey_pack; the buffer is kept until this handle is destroyed.
  ucs_status_t pack_rkey() noexcept;
  const void* packed_rkey() const noexcept { return rkey_buffer_.get(); }
  std::size_t packed_rkey_size() const noexcept { return rkey_size_; }

 private:
  void swap(memory_handle& other) noexcept {
    std::swap(context_, other.context_);
    std::swap(memh_, other.memh_);
    std::swap(rkey_buffer_, other.rkey_buffer_);
    std::swap(rkey_size_, other.rkey_size_);
  }
  ucp_context_h context_ = nullptr;
  ucp_mem_h memh_ = nullptr;
  rkey_buffer_ptr rkey_buffer_;
  std::size_t rkey_size_ = 0;
};

// The return value of a UCX *_nbx call: NULL (completed at once), an error pointer (failed at
// once), or a request that completes later and must be freed exactly once. Only the last kind
// owns anything; its destructor calls ucp_request_free. Freeing before completion is allowed:
// the operation goes on inside UCX, but its callback is then never invoked — so whoever relies on
// the callback must keep the request until it fired.
class request {
 public:
  request() noexcept = default;
  explicit request(ucs_status_ptr_t returned) noexcept : ptr_(returned) {}
  request(request&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
  request& operator=(request&& other) noexcept {
    if (this != &other) {
      reset();
      ptr_ = std::exchange(other.ptr_, nullptr);
    }
    return *this;
  }
  request(const request&) = delete;
  request& operator=(const request&) = delete;
  ~request() { reset(); }

  // True for a real request (the call did not complete at once).
  bool pending() const noexcept { return UCS_PTR_IS_PTR(ptr_); }
  // UCS_OK (completed at once), the error, or UCS_INPROGRESS for a real request.
  ucs_status_t immediate_status() const noexcept { return UCS_PTR_STATUS(ptr_); }
  // For a real request: ucp_request_check_status; otherwise immediate_status().
  ucs_status_t status() const noexcept {
    return pending() ? ucp_request_check_status(ptr_) : immediate_status();
  }
  void* get() const noexcept { return pending() ? ptr_ : nullptr; }
  // Frees a real request now (ucp_request_free); leaves an empty handle.
  void reset() noexcept {
    if (pending()) {
      ucp_request_free(ptr_);
    }
    ptr_ = nullptr;
  }
  // Gives up ownership without freeing (for a request whose worker is already gone).
  void* release() noexcept { return std::exchange(ptr_, nullptr); }

 private:
  ucs_status_ptr_t ptr_ = nullptr;
};

static_assert(std::is_nothrow_move_constructible_v<request>);
static_assert(std::is_nothrow_move_constructible_v<memory_handle>);

// Progresses `worker` until `req` completed or `timeout` passed; returns the final status
// (UCS_ERR_TIMED_OUT on timeout). A spin bounded by the timeout: for teardown paths only.
ucs_status_t wait(ucp_worker_h worker, const request& req, std::chrono::milliseconds timeout);

// An endpoint. Destroying it closes the endpoint in FORCE mode (outstanding requests complete
// with UCS_ERR_CANCELED) and progresses the worker until the close request completed, bounded.
class endpoint {
 public:
  static constexpr std::chrono::milliseconds default_close_timeout{1000};

  endpoint() noexcept = default;
  endpoint(ucp_worker_h worker, ucp_ep_h ep) noexcept : worker_(worker), ep_(ep) {}
  endpoint(endpoint&& other) noexcept { swap(other); }
  endpoint& operator=(endpoint&& other) noexcept {
    endpoint(std::move(other)).swap(*this);
    return *this;
  }
  endpoint(const endpoint&) = delete;
  endpoint& operator=(const endpoint&) = delete;
  ~endpoint() { close(); }

  ucp_ep_h get() const noexcept { return ep_; }
  explicit operator bool() const noexcept { return ep_ != nullptr; }
  // Closes now (FORCE). Returns the close status (UCS_OK when there was nothing to close).
  ucs_status_t close(std::chrono::milliseconds timeout = default_close_timeout) noexcept;

 private:
  void swap(endpoint& other) noexcept {
    std::swap(worker_, other.worker_);
    std::swap(ep_, other.ep_);
  }
  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
};

}  // namespace kvferry::transport::ucx
