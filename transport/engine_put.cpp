// Put batches: posting in chunks, completions, flush, cancel, and the exactly-once `done`.
#include "transport/engine_impl.hpp"
#include "core/hop_trace.hpp"

#include "sanitizers/tsan_detect.hpp"

#include "transport/shm_guard.hpp"
#include "transport/status.hpp"
#include "transport/wire_check.hpp"

#include <algorithm>
#include <cstring>

#ifdef KVFERRY_TSAN
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace kvferry::transport::detail {

namespace {

// Copies a peer's payload into registered memory. Whoever reads that memory learns of the copy
// only through the network (the acknowledgement, then the peer's transfer_done over CAF), an
// order ThreadSanitizer cannot see; UCX's own emulated puts made the same copy out of its
// sight. So under TSan the copy is not recorded.
void copy_payload(void* dst, const void* src, std::size_t length) {
#ifdef KVFERRY_TSAN
  __tsan_ignore_thread_begin();
#endif
  std::memcpy(dst, src, length);
#ifdef KVFERRY_TSAN
  __tsan_ignore_thread_end();
#endif
}

// A data message is sent before it is received: an order the network keeps and ThreadSanitizer
// cannot see (UCX is not instrumented). Under TSan every send releases and every receipt
// acquires one address standing for the wire, so that what a receipt starts (a copy into device
// memory on the copy engine's thread) is ordered after what led to the send.
[[maybe_unused]] char wire;
void wire_sent() {
#ifdef KVFERRY_TSAN
  __tsan_release(&wire);
#endif
}
void wire_received() {
#ifdef KVFERRY_TSAN
  __tsan_acquire(&wire);
#endif
}

std::string ucx_detail(const char* call, ucs_status_t status) {
  return std::string(call) + ": " + ucs_status_string(status);
}

void record_error(batch_state& batch, errc code, const std::string& detail) {
  if (batch.error == errc::none && code != errc::none) {
    batch.error = code;
    batch.detail = detail;
  }
}

}  // namespace

std::uint64_t engine_impl::own_shm_id() {
  if (own_shm_id_ == 0) {
    auto mine = worker_address();
    own_shm_id_ = shm_system_id(mine.data(), mine.size());
  }
  return own_shm_id_;
}

std::uint64_t engine_impl::put(put_batch batch, completion_fn done) {
  KVFERRY_HOP(put_at_engine);
  const std::uint64_t id = next_id_.fetch_add(1);
  ops_started_.fetch_add(1);
  auto shared_done = std::make_shared<completion_fn>(std::move(done));
  const bool posted = post([this, id, batch = std::move(batch), shared_done]() mutable {
    do_put(id, std::move(batch), std::move(*shared_done));
  });
  if (!posted) {
    deliver(*shared_done, errc::stopped, "the transport engine is stopping");
  }
  return id;
}

void engine_impl::cancel(std::uint64_t op_id) {
  post([this, op_id] { do_cancel(op_id); });
}

void engine_impl::deliver(completion_fn& done, errc code, const std::string& detail) {
  completion_fn callback = std::move(done);
  done = nullptr;
  ops_completed_.fetch_add(1);
  if (callback) {
    try {
      callback(code, detail);
    } catch (...) {
      // A throwing callback must not take the progress thread down.
    }
  }
}

void engine_impl::do_put(std::uint64_t id, put_batch request, completion_fn done) {
  KVFERRY_HOP(put_posting);
  if (stopping_) {
    deliver(done, errc::stopped, "the transport engine is stopping");
    return;
  }
  auto peer_it = peers_.find(request.peer);
  if (peer_it == peers_.end()) {
    deliver(done, errc::not_connected,
            "no endpoint to peer " + std::to_string(request.peer) + " (connect() first)");
    return;
  }
  peer_state& peer = *peer_it->second;
  for (const copy_op& op : request.ops) {
    if (op.dst.key >= request.rkeys.size()) {
      deliver(done, errc::invalid_argument, "a put's dst.key lies outside put_batch.rkeys");
      return;
    }
    if (op.src == 0 && op.dst.bytes > 0) {
      deliver(done, errc::invalid_argument, "a put's source address is null");
      return;
    }
  }

  auto batch = std::make_unique<batch_state>();
  batch->id = id;
  batch->peer = &peer;
  batch->done = std::move(done);
  batch->ops = std::move(request.ops);
  batch->window = request.window;
  batch->rkeys.reserve(request.rkeys.size());
  std::vector<const std::vector<shm_extent>*> extents_of_key;
  extents_of_key.reserve(request.rkeys.size());
  for (std::size_t k = 0; k < request.rkeys.size(); ++k) {
    std::vector<std::uint8_t>& packed = request.rkeys[k];
    auto cached = peer.rkeys.find(packed);
    if (cached == peer.rkeys.end()) {
      if (packed.empty()) {
        deliver(batch->done, errc::invalid_argument, "empty packed rkey");
        return;
      }
      // A same-host peer's shared-memory segments are checked before UCX maps them.
      std::vector<shm_extent> extents;
      const shm_keys keys =
        shm_keys_of(packed.data(), packed.size(), peer.address.data(), peer.address.size());
      if (!keys.segments.empty() && keys.system_id != 0 && keys.system_id == own_shm_id()) {
        if (auto bad = shm_extents(keys, &extents)) {
          deliver(batch->done, errc::malformed_message, "rkey " + std::to_string(k) + ": " + *bad);
          return;
        }
      }
      ucp_rkey_h rkey = nullptr;
      ucs_status_t status = ucp_ep_rkey_unpack(peer.ep.get(), packed.data(), &rkey);
      if (status != UCS_OK) {
        deliver(batch->done, translate(status), ucx_detail("ucp_ep_rkey_unpack", status));
        return;
      }
      if (peer.rkeys.size() >= rkey_cache_limit) {
        peer.rkeys.clear();  // batches in flight keep their own references
      }
      cached = peer.rkeys
                 .emplace(std::move(packed),
                          peer_state::cached_rkey{shared_rkey(rkey, ucx::rkey_deleter{}),
                                                  std::move(extents)})
                 .first;
    }
    batch->rkeys.push_back(cached->second.rkey);
    extents_of_key.push_back(&cached->second.extents);
  }
  // UCX's shared-memory puts write where they are told: each must stay inside its segment.
  for (const copy_op& op : batch->ops) {
    const auto& extents = *extents_of_key[op.dst.key];
    if (!extents.empty() && !inside_all(extents, op.dst.addr, op.dst.bytes)) {
      deliver(batch->done, errc::out_of_range,
              "a put of " + std::to_string(op.dst.bytes) + " bytes at address " +
                std::to_string(op.dst.addr) +
                " lies outside the shared-memory segment its rkey maps");
      return;
    }
  }

  // Memory this host can map takes UCX puts (a copy into the mapping, nothing for the peer to
  // answer); everything else goes as data messages (engine.hpp says why).
  batch->mapped.reserve(batch->ops.size());
  for (const copy_op& op : batch->ops) {
    void* local = nullptr;
    batch->mapped.push_back(op.dst.bytes > 0 &&
                            ucp_rkey_ptr(batch->rkeys[op.dst.key].get(), op.dst.addr, &local) ==
                              UCS_OK);
  }

  batch_state& state = *batch;
  batches_.emplace(id, std::move(batch));
  peer.batches.insert(id);
  advance(state);
}

void engine_impl::do_cancel(std::uint64_t id) {
  auto it = batches_.find(id);
  if (it == batches_.end() || it->second->finished) {
    return;  // unknown or finished: nothing to do
  }
  fail_batch(*it->second, errc::cancelled, "cancelled on request");
}

void engine_impl::fail_batch(batch_state& batch, errc code, const std::string& detail) {
  record_error(batch, code, detail);
  batch.stop_posting = true;
  for (auto& [raw, request] : batch.pending) {
    // Data messages are left to complete: each is then acknowledged, which is what proves the
    // receiver wrote its last byte; cancelling one could leave that unknowable.
    if (!request->is_flush && request->header.batch == 0 && request->req.pending()) {
      // A no-op for RMA requests in UCX 1.13; kept so that newer UCX stops them early. The
      // callback still fires (UCS_OK or UCS_ERR_CANCELED) and is what completes the batch.
      ucp_request_cancel(worker_.get(), request->req.get());
    }
  }
  advance(batch);
}

void engine_impl::on_completed(pending_request* request) {
  batch_state& batch = *request->batch;
  const ucs_status_t status = request->status;
  if (request->is_flush) {
    batch.flush_done = true;
    if (status != UCS_OK) {
      record_error(batch, translate(status), ucx_detail("ucp_ep_flush_nbx", status));
    }
  } else {
    --batch.outstanding_puts;
    --sends_waiting_;
    batch.outstanding_bytes -= request->bytes;
    if (status == UCS_OK && request->header.batch == 0) {
      bytes_put_.fetch_add(request->bytes);  // a put; a data message counts when acknowledged
    } else if (status != UCS_OK) {
      record_error(batch, translate(status), ucx_detail("ucp_put_nbx / ucp_am_send_nbx", status));
      batch.stop_posting = true;
      if (request->header.batch != 0) {
        // Not sent whole: no acknowledgement will come for it.
        batch.unacknowledged -= std::min(batch.unacknowledged, request->bytes);
      }
    }
  }
  batch.pending.erase(request);  // ucp_request_free, exactly once
  advance(batch);
}

void engine_impl::advance(batch_state& batch) {
  if (batch.finished) {
    return;
  }
  if (!batch.stop_posting) {
    post_puts(batch);
  }
  const bool all_posted = batch.next_op >= batch.ops.size();
  if (batch.outstanding_puts > 0 || (!all_posted && !batch.stop_posting)) {
    return;
  }
  // Data messages sent are in flight until acknowledged; a failed endpoint acknowledges
  // nothing more (what it still delivers is the receiver's to quarantine, as for puts).
  if (batch.unacknowledged > 0 && !batch.peer->closing && batch.peer->ep.get() != nullptr) {
    return;
  }
  if (!batch.flush_started) {
    batch.flush_started = true;
    post_flush(batch);
  }
  if (batch.flush_done) {
    finish(batch);
  }
}

std::unique_ptr<pending_request> engine_impl::new_record(batch_state& batch, std::size_t bytes,
                                                        bool is_flush) {
  auto record = std::make_unique<pending_request>();
  record->owner = this;
  record->batch = &batch;
  record->bytes = bytes;
  record->is_flush = is_flush;
  return record;
}

ucp_request_param_t engine_impl::callback_param(pending_request* record) {
  ucp_request_param_t param;
  std::memset(&param, 0, sizeof(param));
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.send = &engine_impl::on_request_done;
  param.user_data = record;
  return param;
}

void engine_impl::post_puts(batch_state& batch) {
  ucp_ep_h ep = batch.peer->ep.get();
  if (ep == nullptr) {
    record_error(batch, errc::not_connected, "the endpoint is closed");
    batch.stop_posting = true;
    return;
  }
  while (batch.next_op < batch.ops.size() && batch.outstanding_puts < window_requests &&
         batch.outstanding_bytes < window_bytes && batch.unacknowledged < window_bytes) {
    const copy_op& op = batch.ops[batch.next_op];
    const std::size_t limit =
      batch.mapped[batch.next_op] ? chunk_bytes : message_limit(*batch.peer);
    const std::size_t length =
      std::min(static_cast<std::size_t>(op.dst.bytes) - batch.next_offset, limit);
    if (length == 0) {
      ++batch.next_op;
      batch.next_offset = 0;
      continue;
    }
    if (!post_chunk(batch, ep, op, length)) {
      batch.stop_posting = true;
      return;
    }
    batch.next_offset += length;
    if (batch.next_offset == op.dst.bytes) {
      ++batch.next_op;
      batch.next_offset = 0;
    }
  }
}

std::size_t engine_impl::message_limit(peer_state& peer) {
  if (peer.message_bytes == 0) {
    const auto transports = transports_now(peer.key);
    const bool shared = std::any_of(transports.begin(), transports.end(), [](const auto& t) {
      return t == "posix" || t == "sysv" || t == "cma" || t == "xpmem" || t == "knem";
    });
    peer.message_bytes = shared ? message_bytes_shm : message_bytes;
  }
  return peer.message_bytes;
}

bool engine_impl::post_chunk(batch_state& batch, ucp_ep_h ep, const copy_op& op,
                             std::size_t length) {
  const char* src = static_cast<const char*>(ptr_of(op.src)) + batch.next_offset;
  const std::uint64_t dst = op.dst.addr + batch.next_offset;
  auto record = new_record(batch, length, false);
  ucp_request_param_t param = callback_param(record.get());
  const bool mapped = batch.mapped[batch.next_op];
  const char* call = mapped ? "ucp_put_nbx" : "ucp_am_send_nbx";
  ucx::request req;
  if (mapped) {
    req = ucx::request(ucp_put_nbx(ep, src, length, dst, batch.rkeys[op.dst.key].get(), &param));
  } else {
    record->header.batch = batch.id;
    record->header.addr = dst;
    record->header.window = batch.window;
    // Eager only: a rendezvous would have the receiver's UCX send on our behalf, the path that
    // aborts when we die. REPLY: the receiver acknowledges through the endpoint it names.
    // NO_IMM_CMPL: UCX may still read the header after reporting completion at once (see
    // on_data_message); with a request, the record keeps the header until the callback.
    param.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    param.flags = UCP_AM_SEND_FLAG_EAGER | UCP_AM_SEND_FLAG_REPLY;
    wire_sent();
    req = ucx::request(ucp_am_send_nbx(ep, am_data_id, &record->header, sizeof(record->header),
                                       src, length, &param));
    batch.unacknowledged += length;
  }
  if (req.pending()) {
    record->req = std::move(req);
    ++batch.outstanding_puts;
    ++sends_waiting_;
    batch.outstanding_bytes += length;
    pending_request* raw = record.get();
    batch.pending.emplace(raw, std::move(record));
    return true;
  }
  if (req.immediate_status() == UCS_OK) {
    if (mapped) {
      bytes_put_.fetch_add(length);  // completed at once: no callback will come
    }
    return true;
  }
  if (!mapped) {
    batch.unacknowledged -= length;  // never sent: nothing to acknowledge
  }
  record_error(batch, translate(req.immediate_status()), ucx_detail(call, req.immediate_status()));
  return false;
}

void engine_impl::on_ack(const ack& a) {
  auto it = batches_.find(a.header.batch);
  if (it == batches_.end()) {
    return;  // finished already (its endpoint failed), or not ours
  }
  batch_state& batch = *it->second;
  if (batch.finished || batch.peer->ep.get() != a.from) {
    return;  // only the batch's own peer acknowledges its messages
  }
  const std::size_t bytes =
    static_cast<std::size_t>(std::min<std::uint64_t>(a.header.bytes, batch.unacknowledged));
  batch.unacknowledged -= bytes;
  if (a.header.refused != 0) {
    // The peer wrote nothing: its receive ended (window closed) or it never opened one.
    fail_batch(batch, errc::transport_error,
               "the peer refused a data message: no receive window open there for it (the "
               "receive ended, or the destination is not registered there)");
    return;
  }
  bytes_put_.fetch_add(bytes);
  advance(batch);
}

ucs_status_t engine_impl::on_data_message(void* arg, const void* header, std::size_t header_length,
                                          void* data, std::size_t length,
                                          const ucp_am_recv_param_t* param) noexcept {
  auto* self = static_cast<engine_impl*>(arg);
  // Dropped unanswered: a header of another size, a rendezvous (we send eager only: data is
  // not here), or no endpoint to answer through.
  if (header_length != sizeof(data_header) || header == nullptr ||
      (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0 ||
      (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) == 0 || param->reply_ep == nullptr) {
    self->writes_refused_.fetch_add(1);
    return UCS_OK;
  }
  wire_received();
  KVFERRY_HOP(data_arrived);
  data_header h;
  std::memcpy(&h, header, sizeof(h));
  // Copied only into registered memory, and only inside the open receive window the message
  // names: the copy runs while the window is held, so once its receive closed it, nothing of
  // this peer's lands there any more (receive_windows.hpp). Anything else is answered as
  // refused, so that the sender's batch fails instead of waiting for an acknowledgement.
  bool written = false;
  if (length > 0 && self->writable_->contains(h.addr, length)) {
    written = self->windows_->write_if_open(h.window, h.addr, length, [&] {
      copy_payload(reinterpret_cast<void*>(static_cast<std::uintptr_t>(h.addr)), data, length);
    });
  } else if (length > 0 && self->device_->contains(h.addr, length)) {
    written = self->copy_to_device(h, data, length);
  }
  if (!written) {
    self->writes_refused_.fetch_add(1);
  }
  self->answer(param->reply_ep, ack_header{h.batch, length, written ? 0u : 1u});
  return UCS_OK;
}

bool engine_impl::copy_to_device(const data_header& h, const void* data, std::size_t length) {
  // Acknowledged once the payload is in a buffer of ours (the landing's): the window, not the
  // acknowledgement, is what the receive waits on (closing it waits for the copy; a failed copy
  // fails the receive). UCX's buffer is never held past this callback (a replaced worker frees
  // it). The finish keeps the windows alive: a copy may end after this engine is gone.
  return windows_->start_copy_if_open(h.window, h.addr, length, [&](auto finish) {
    landing_->append(h.addr, data, length,
                     [finish, windows = windows_](const std::string& error) { finish(error); });
  });
}

void engine_impl::answer(ucp_ep_h reply_ep, const ack_header& header) noexcept {
  // The acknowledgement: small and eager. If the endpoint already failed, this API reports it
  // (only UCX's own emulated puts abort on it) and the sender learns of the failure from its
  // endpoint. UCX may read the answer after the call returned, even when it reports completion
  // at once (seen over shared memory while the reply endpoint is still being wired up), so the
  // answer lives on the heap until UCX calls back (NO_IMM_CMPL: it always does). Nothing wakes
  // this worker for an answer waiting for room in the peer's queue: the progress cycle keeps
  // polling while one is (acks_leaving_).
  auto* leaving = new (std::nothrow) leaving_ack{this, header};
  if (leaving == nullptr) {
    return;  // the sender learns nothing; its request ends by its deadline
  }
  ucp_request_param_t send;
  std::memset(&send, 0, sizeof(send));
  send.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_CALLBACK |
                      UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  send.flags = UCP_AM_SEND_FLAG_EAGER | UCP_AM_SEND_FLAG_REPLY;
  send.cb.send = &engine_impl::on_ack_sent;
  send.user_data = leaving;
  // Counted before the call: an answer that leaves at once is completed through on_ack_sent
  // from inside ucp_am_send_nbx (that is what NO_IMM_CMPL does in UCX 1.13), which then returns
  // the request anyway. Counted after, that answer left acks_leaving_ one too high for good,
  // and the progress thread polled every millisecond forever instead of sleeping (issue 13:
  // an idle receiving node woke ~1000 times a second).
  ++acks_leaving_;
  ucs_status_ptr_t sent = ucp_am_send_nbx(reply_ep, am_ack_id, nullptr, 0, &leaving->header,
                                          sizeof(leaving->header), &send);
  if (!UCS_PTR_IS_PTR(sent)) {
    // Refused at once (the endpoint failed), without a callback: the sender learns it from its
    // own endpoint.
    if (acks_leaving_ > 0) {
      --acks_leaving_;
    }
    delete leaving;
  }
}

void engine_impl::on_ack_sent(void* request, ucs_status_t, void* user_data) noexcept {
  auto* answer = static_cast<leaving_ack*>(user_data);
  if (answer->engine->acks_leaving_ > 0) {
    --answer->engine->acks_leaving_;  // 0 already if its worker was replaced meanwhile
  }
  delete answer;
  ucp_request_free(request);
}

ucs_status_t engine_impl::on_ack_message(void* arg, const void*, std::size_t header_length,
                                         void* data, std::size_t length,
                                         const ucp_am_recv_param_t* param) noexcept {
  auto* self = static_cast<engine_impl*>(arg);
  // The acknowledgement travels as the payload.
  if (header_length != 0 || length != sizeof(ack_header) || data == nullptr ||
      (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0 ||
      (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) == 0) {
    return UCS_OK;
  }
  ack a;
  std::memcpy(&a.header, data, sizeof(a.header));
  a.from = param->reply_ep;
  self->acks_.push_back(a);
  return UCS_OK;
}

void engine_impl::post_flush(batch_state& batch) {
  ucp_ep_h ep = batch.peer->ep.get();
  if (ep == nullptr) {
    batch.flush_done = true;  // closed in FORCE mode: nothing of it is left in flight
    return;
  }
  auto record = new_record(batch, 0, true);
  ucp_request_param_t param = callback_param(record.get());
  ucx::request req(ucp_ep_flush_nbx(ep, &param));
  if (req.pending()) {
    record->req = std::move(req);
    pending_request* raw = record.get();
    batch.pending.emplace(raw, std::move(record));
    return;
  }
  batch.flush_done = true;
  if (req.immediate_status() != UCS_OK) {
    record_error(batch, translate(req.immediate_status()),
                 ucx_detail("ucp_ep_flush_nbx", req.immediate_status()));
  }
}

std::string engine_impl::path_of(const batch_state& batch) {
  auto& peer = *batch.peer;
  if (peer.transport_names.empty()) {
    for (const auto& t : transports_now(peer.key))
      peer.transport_names += (peer.transport_names.empty() ? "" : "+") + t;
  }
  const bool rma = std::find(batch.mapped.begin(), batch.mapped.end(), true) != batch.mapped.end();
  const bool am = std::find(batch.mapped.begin(), batch.mapped.end(), false) != batch.mapped.end();
  std::string out = peer.transport_names.empty() ? "ucx" : peer.transport_names;
  return out + (rma && am ? " put+am" : rma ? " put" : am ? " am" : "");
}

void engine_impl::finish(batch_state& batch) {
  KVFERRY_HOP(batch_done);
  batch.finished = true;
  completion_fn done = std::move(batch.done);
  const errc code = batch.error;
  const std::string detail = code == errc::none ? path_of(batch) : std::move(batch.detail);
  peer_state* peer = batch.peer;
  peer->batches.erase(batch.id);
  batches_.erase(batch.id);  // destroys the batch and its rkey references
  deliver(done, code, detail);
  if (peer->closing) {
    maybe_complete_close(*peer);
  }
}

void engine_impl::abandon(batch_state& batch, errc code, const std::string& detail) {
  // Last resort on stop or when the worker is replaced: UCX never completed these requests.
  // Free them (no callback follows a ucp_request_free), drop any completion already queued for
  // them, and finish the batch. The caller destroys the worker next, so nothing of the batch
  // can still be written after that.
  completed_.erase(std::remove_if(completed_.begin(), completed_.end(),
                                  [&batch](pending_request* r) { return r->batch == &batch; }),
                   completed_.end());
  batch.pending.clear();
  sends_waiting_ -= batch.outstanding_puts;
  batch.outstanding_puts = 0;
  batch.outstanding_bytes = 0;
  batch.unacknowledged = 0;
  record_error(batch, code, detail);
  finish(batch);
}

}  // namespace kvferry::transport::detail
