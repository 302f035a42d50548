// Endpoints: connect, disconnect, endpoint failures, closing, and what an endpoint really uses.
#include "transport/engine_impl.hpp"

#include "transport/ep_info.hpp"
#include "transport/status.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>

namespace kvferry::transport::detail {

void engine_impl::connect(std::uint64_t peer, std::vector<std::uint8_t> worker_address) {
  post([this, peer, address = std::move(worker_address)]() mutable {
    do_connect(peer, std::move(address));
  });
}

void engine_impl::disconnect(std::uint64_t peer) {
  post([this, peer] { do_disconnect(peer); });
}

std::vector<std::string> engine_impl::endpoint_transports(std::uint64_t peer) {
  if (std::this_thread::get_id() == progress_thread_id_) {
    return transports_now(peer);
  }
  auto promise = std::make_shared<std::promise<std::vector<std::string>>>();
  std::future<std::vector<std::string>> answer = promise->get_future();
  if (!post([this, peer, promise] { promise->set_value(transports_now(peer)); })) {
    return {};
  }
  if (answer.wait_for(query_timeout) != std::future_status::ready) {
    return {};
  }
  return answer.get();
}

void engine_impl::do_connect(std::uint64_t key, std::vector<std::uint8_t> address) {
  if (stopping_) {
    return;
  }
  if (auto it = peers_.find(key); it != peers_.end()) {
    if (it->second->address == address) {
      return;  // already connected to this worker
    }
    std::unique_ptr<peer_state> old = std::move(it->second);
    peers_.erase(it);
    begin_close(std::move(old), errc::not_connected, "the endpoint was replaced by connect()");
  }
  auto notify = [this, key](errc code, const std::string& detail) {
    if (on_peer_error_) {
      try {
        on_peer_error_(key, code, detail);
      } catch (...) {
      }
    }
  };
  if (address.empty()) {
    notify(errc::invalid_argument, "connect() with an empty worker address");
    update_peer_count();
    return;
  }
  ucp_ep_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.address = reinterpret_cast<const ucp_address_t*>(address.data());
  params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  params.err_handler.cb = &engine_impl::on_ep_error;
  params.err_handler.arg = this;
  ucp_ep_h ep = nullptr;
  if (ucs_status_t status = ucp_ep_create(worker_.get(), &params, &ep); status != UCS_OK) {
    notify(translate(status), std::string("ucp_ep_create: ") + ucs_status_string(status));
    update_peer_count();
    return;
  }
  auto peer = std::make_unique<peer_state>();
  peer->key = key;
  peer->address = std::move(address);
  peer->ep = ucx::endpoint(worker_.get(), ep);
  peers_.emplace(key, std::move(peer));
  update_peer_count();
}

void engine_impl::do_disconnect(std::uint64_t key) {
  auto it = peers_.find(key);
  if (it == peers_.end()) {
    return;
  }
  std::unique_ptr<peer_state> peer = std::move(it->second);
  peers_.erase(it);
  begin_close(std::move(peer), errc::not_connected, "disconnect() while the put was in flight");
}

void engine_impl::on_ep_failed(ucp_ep_h ep, ucs_status_t status) {
  auto it = peers_.begin();
  while (it != peers_.end() && it->second->ep.get() != ep) {
    ++it;
  }
  if (it == peers_.end()) {
    return;  // already closing: its batches were failed when the close began
  }
  std::unique_ptr<peer_state> peer = std::move(it->second);
  peers_.erase(it);
  const std::uint64_t key = peer->key;
  errc code = translate(status);
  if (code == errc::none) {
    code = errc::peer_failed;
  }
  const std::string detail = std::string("endpoint error: ") + ucs_status_string(status);
  begin_close(std::move(peer), code, detail);
  if (on_peer_error_) {
    try {
      on_peer_error_(key, code, detail);
    } catch (...) {
    }
  }
}

void engine_impl::begin_close(std::unique_ptr<peer_state> owned, errc code,
                              const std::string& detail) {
  peer_state& peer = *owned;
  peer.closing = true;
  closing_.push_back(std::move(owned));
  update_peer_count();
  const std::vector<std::uint64_t> ids(peer.batches.begin(), peer.batches.end());
  for (std::uint64_t id : ids) {
    if (auto it = batches_.find(id); it != batches_.end()) {
      fail_batch(*it->second, code, detail);
    }
  }
  maybe_complete_close(peer);
  if (!peer.closed) {
    peer.close_timer = std::make_unique<boost::asio::steady_timer>(io_, close_grace);
    peer.close_timer->async_wait([this, target = &peer](const boost::system::error_code& ec) {
      // An expiry may already be queued when the peer finishes closing: look it up again.
      auto it = std::find_if(closing_.begin(), closing_.end(),
                             [target](const auto& candidate) { return candidate.get() == target; });
      if (!ec && it != closing_.end() && !target->closed) {
        force_close(*target);
        cycle();
      }
    });
  }
}

void engine_impl::maybe_complete_close(peer_state& peer) {
  if (!peer.closing || peer.closed || !peer.batches.empty()) {
    return;
  }
  peer.rkeys.clear();  // rkeys before their endpoint
  peer.ep.close();
  peer.closed = true;
  if (peer.close_timer) {
    peer.close_timer->cancel();
  }
}

void engine_impl::force_close(peer_state& peer) {
  // The batches of this peer did not drain within close_grace. Closing the endpoint in FORCE
  // mode completes their requests with UCS_ERR_CANCELED; they finish from the queue.
  peer.rkeys.clear();
  peer.ep.close();
}

std::vector<std::string> engine_impl::transports_now(std::uint64_t key) {
  auto it = peers_.find(key);
  if (it == peers_.end() || !it->second->ep) {
    return {};
  }
  char* buffer = nullptr;
  std::size_t length = 0;
  FILE* stream = open_memstream(&buffer, &length);
  if (stream == nullptr) {
    return {};
  }
  ucp_ep_print_info(it->second->ep.get(), stream);
  std::fclose(stream);
  std::string text(buffer, length);
  std::free(buffer);
  return rma_transports_from_ep_info(text);
}

void engine_impl::update_peer_count() { peer_count_.store(peers_.size()); }

}  // namespace kvferry::transport::detail
