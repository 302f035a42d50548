// The engine's data messages (engine_put.cpp) as a hostile or buggy peer could send them: a raw
// UCX worker in this process, not a kvferry engine, talks to a real engine over tcp.
#include "test_support.hpp"

#include "transport/engine_impl.hpp"
#include "transport/ucx_handles.hpp"

#include <algorithm>
#include <cstring>
#include <thread>

using namespace kvferry;
using namespace kvferry::transport;
using namespace kvferry::test;

namespace {

// A bare UCX peer (tcp) with an endpoint to `target`; counts the acknowledgements it gets.
struct raw_peer : bare_ucx {
  ucx::endpoint ep;
  std::vector<detail::ack_header> acks;

  static ucs_status_t on_ack(void* arg, const void*, std::size_t, void* data, std::size_t length,
                             const ucp_am_recv_param_t*) {
    if (length == sizeof(detail::ack_header)) {
      detail::ack_header a;
      std::memcpy(&a, data, sizeof(a));
      static_cast<raw_peer*>(arg)->acks.push_back(a);
    }
    return UCS_OK;
  }

  explicit raw_peer(const std::vector<std::uint8_t>& target)
      : bare_ucx(std::getenv("UCX_TLS") ? std::getenv("UCX_TLS") : "tcp,self", UCP_FEATURE_AM) {
    ucp_am_handler_param_t handler;
    std::memset(&handler, 0, sizeof(handler));
    handler.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                         UCP_AM_HANDLER_PARAM_FIELD_ARG;
    handler.id = detail::am_ack_id;
    handler.cb = &raw_peer::on_ack;
    handler.arg = this;
    REQUIRE(ucp_worker_set_am_recv_handler(worker.get(), &handler) == UCS_OK);
    ucp_ep_params_t ep_params;
    std::memset(&ep_params, 0, sizeof(ep_params));
    ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep_params.address = reinterpret_cast<const ucp_address_t*>(target.data());
    ep_params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ucp_ep_h raw_ep = nullptr;
    REQUIRE(ucp_ep_create(worker.get(), &ep_params, &raw_ep) == UCS_OK);
    ep = ucx::endpoint(worker.get(), raw_ep);
  }

  // Sends one data message (header of `header_bytes`, the first of them a data_header) and
  // progresses until UCX is done with it.
  void send(std::uint64_t batch, std::uint64_t addr, const std::vector<unsigned char>& payload,
            std::size_t header_bytes = sizeof(detail::data_header)) {
    std::vector<unsigned char> header(header_bytes, 0);
    detail::data_header h{batch, addr};
    std::memcpy(header.data(), &h, std::min(sizeof(h), header_bytes));
    ucp_request_param_t param;
    std::memset(&param, 0, sizeof(param));
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    param.flags = UCP_AM_SEND_FLAG_EAGER | UCP_AM_SEND_FLAG_REPLY;
    ucx::request req(ucp_am_send_nbx(ep.get(), detail::am_data_id, header.data(), header.size(),
                                     payload.data(), payload.size(), &param));
    REQUIRE(req.pending());
    REQUIRE(ucx::wait(worker.get(), req, 20s) == UCS_OK);
  }

  // Progresses until `count` acknowledgements arrived (bounded).
  bool wait_acks(std::size_t count) {
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (acks.size() < count && std::chrono::steady_clock::now() < until)
      ucp_worker_progress(worker.get());
    return acks.size() >= count;
  }
};

// Waits (bounded) until the engine has refused `count` writes.
bool refused(const engine& e, std::uint64_t count) {
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (e.stats().writes_refused < count && std::chrono::steady_clock::now() < until)
    std::this_thread::yield();
  return e.stats().writes_refused >= count;
}

}  // namespace

TEST_CASE("a peer's data message lands only inside memory registered here, and is acknowledged") {
  auto target = start_engine("tcp");
  std::vector<unsigned char> registered(4096, 0), elsewhere(4096, 0);
  auto region = target->register_memory(registered.data(), registered.size());
  REQUIRE(region);
  raw_peer peer{target->worker_address()};
  const std::vector<unsigned char> payload(256, 0xab);

  SUBCASE("inside: written and acknowledged with the batch and its bytes") {
    peer.send(7, addr_of(registered.data()) + 1024, payload);
    REQUIRE(peer.wait_acks(1));
    CHECK(peer.acks[0].batch == 7);
    CHECK(peer.acks[0].bytes == payload.size());
    CHECK(std::all_of(registered.begin() + 1024, registered.begin() + 1280,
                      [](unsigned char b) { return b == 0xab; }));
    CHECK(std::all_of(registered.begin(), registered.begin() + 1024,
                      [](unsigned char b) { return b == 0; }));
    CHECK(target->stats().writes_refused == 0);
  }
  SUBCASE("outside, across the end, or with a header of another size: refused, nothing written") {
    peer.send(8, addr_of(elsewhere.data()), payload);
    peer.send(9, addr_of(registered.data()) + registered.size() - 128, payload);
    peer.send(10, addr_of(registered.data()), payload, sizeof(detail::data_header) + 8);
    peer.send(11, 0, payload);
    REQUIRE(refused(*target, 4));
    CHECK(std::all_of(elsewhere.begin(), elsewhere.end(), [](unsigned char b) { return b == 0; }));
    CHECK(std::all_of(registered.begin(), registered.end(), [](unsigned char b) { return b == 0; }));
    // Nothing was acknowledged, and the engine still serves a good message after them.
    peer.send(12, addr_of(registered.data()), payload);
    REQUIRE(peer.wait_acks(1));
    CHECK(peer.acks.size() == 1);
    CHECK(peer.acks[0].batch == 12);
  }
  SUBCASE("memory no longer registered is refused") {
    region.value().reset();
    peer.send(13, addr_of(registered.data()), payload);
    REQUIRE(refused(*target, 1));
    CHECK(std::all_of(registered.begin(), registered.end(), [](unsigned char b) { return b == 0; }));
  }
}
