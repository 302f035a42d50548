#include "transport/ucx_handles.hpp"

#include <cstring>

namespace kvferry::transport::ucx {

void worker_address::reset() noexcept {
  if (address_ != nullptr) {
    ucp_worker_release_address(worker_, address_);
  }
  worker_ = nullptr;
  address_ = nullptr;
  length_ = 0;
}

std::vector<std::uint8_t> worker_address::bytes() const {
  const auto* p = reinterpret_cast<const std::uint8_t*>(address_);
  return std::vector<std::uint8_t>(p, p + length_);
}

void memory_handle::reset() noexcept {
  rkey_buffer_.reset();  // the packed buffer first: it describes the mapping
  rkey_size_ = 0;
  if (memh_ != nullptr) {
    ucp_mem_unmap(context_, memh_);
  }
  context_ = nullptr;
  memh_ = nullptr;
}

ucs_status_t memory_handle::pack_rkey() noexcept {
  void* buffer = nullptr;
  std::size_t size = 0;
  ucs_status_t status = ucp_rkey_pack(context_, memh_, &buffer, &size);
  if (status != UCS_OK) {
    return status;
  }
  rkey_buffer_.reset(buffer);
  rkey_size_ = size;
  return UCS_OK;
}

ucs_status_t wait(ucp_worker_h worker, const request& req, std::chrono::milliseconds timeout) {
  if (!req.pending()) {
    return req.immediate_status();
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  ucs_status_t status;
  while ((status = ucp_request_check_status(req.get())) == UCS_INPROGRESS) {
    ucp_worker_progress(worker);
    if (std::chrono::steady_clock::now() >= deadline) {
      return UCS_ERR_TIMED_OUT;
    }
  }
  return status;
}

ucs_status_t endpoint::close(std::chrono::milliseconds timeout) noexcept {
  if (ep_ == nullptr) {
    return UCS_OK;
  }
  ucp_request_param_t param;
  std::memset(&param, 0, sizeof(param));
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  request close_request(ucp_ep_close_nbx(ep_, &param));
  if (close_request.immediate_status() == UCS_ERR_INVALID_PARAM) {
    // FORCE needs UCP_ERR_HANDLING_MODE_PEER; an endpoint without it closes with a flush.
    param.op_attr_mask = 0;
    close_request = request(ucp_ep_close_nbx(ep_, &param));
  }
  ep_ = nullptr;
  // On timeout the request is freed anyway: UCX finishes the close on its own.
  return wait(worker_, close_request, timeout);
}

}  // namespace kvferry::transport::ucx
