#include "test_support.hpp"
#include "transport/ucx_handles.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <vector>

using namespace kvferry::transport;
using namespace std::chrono_literals;

namespace {

// A context and worker on the loopback transport, for handle tests.
struct loopback : kvferry::test::bare_ucx {
  loopback() : bare_ucx("self", UCP_FEATURE_RMA) {}

  ucx::endpoint connect_to_self() {
    ucp_address_t* address = nullptr;
    std::size_t length = 0;
    REQUIRE(ucp_worker_get_address(worker.get(), &address, &length) == UCS_OK);
    ucx::worker_address owned(worker.get(), address, length);
    ucp_ep_params_t params;
    std::memset(&params, 0, sizeof(params));
    // No PEER error mode: the self transport has none, so close() takes its flush fallback.
    params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    params.address = owned.get();
    ucp_ep_h ep = nullptr;
    REQUIRE(ucp_ep_create(worker.get(), &params, &ep) == UCS_OK);
    return ucx::endpoint(worker.get(), ep);
  }

  ucx::memory_handle map(void* ptr, std::size_t bytes) {
    ucp_mem_map_params_t params;
    std::memset(&params, 0, sizeof(params));
    params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    params.address = ptr;
    params.length = bytes;
    ucp_mem_h memh = nullptr;
    REQUIRE(ucp_mem_map(context.get(), &params, &memh) == UCS_OK);
    return ucx::memory_handle(context.get(), memh);
  }
};

}  // namespace

TEST_CASE("a UCX call that completed at once leaves no request to free") {
  ucx::request done(nullptr);
  CHECK_FALSE(done.pending());
  CHECK(done.immediate_status() == UCS_OK);
  CHECK(done.status() == UCS_OK);
  CHECK(done.get() == nullptr);
}

TEST_CASE("an error pointer carries its status and owns nothing") {
  ucx::request failed(UCS_STATUS_PTR(UCS_ERR_NO_MEMORY));
  CHECK_FALSE(failed.pending());
  CHECK(failed.immediate_status() == UCS_ERR_NO_MEMORY);
  CHECK(failed.get() == nullptr);
  ucx::request moved(std::move(failed));
  CHECK(moved.immediate_status() == UCS_ERR_NO_MEMORY);
}

TEST_CASE("a real request stays pending until the worker progresses it and is owned once") {
  loopback ucp;
  std::vector<char> source(64 * 1024, 'k');
  std::vector<char> target(64 * 1024, 0);
  ucx::memory_handle region = ucp.map(target.data(), target.size());
  REQUIRE(region.pack_rkey() == UCS_OK);
  CHECK(region.packed_rkey_size() > 0);

  ucx::endpoint ep = ucp.connect_to_self();
  ucp_rkey_h raw_rkey = nullptr;
  REQUIRE(ucp_ep_rkey_unpack(ep.get(), region.packed_rkey(), &raw_rkey) == UCS_OK);
  ucx::rkey_ptr rkey(raw_rkey);

  ucp_request_param_t param;
  std::memset(&param, 0, sizeof(param));
  param.op_attr_mask = UCP_OP_ATTR_FLAG_NO_IMM_CMPL;  // forces a real request
  ucx::request put(ucp_put_nbx(ep.get(), source.data(), source.size(),
                               reinterpret_cast<std::uint64_t>(target.data()), rkey.get(), &param));
  REQUIRE(put.pending());
  ucx::request owner(std::move(put));
  CHECK_FALSE(put.pending());
  CHECK(owner.pending());
  CHECK(ucx::wait(ucp.worker.get(), owner, 5000ms) == UCS_OK);
  CHECK(owner.status() == UCS_OK);
  owner.reset();  // ucp_request_free, once
  CHECK_FALSE(owner.pending());
  CHECK(target == std::vector<char>(target.size(), 'k'));

  rkey.reset();  // before the endpoint
  CHECK(ep.close() == UCS_OK);
  CHECK_FALSE(ep);
  CHECK(ep.close() == UCS_OK);  // nothing left to close
}

TEST_CASE("a memory handle unmaps once, also after being moved") {
  loopback ucp;
  std::vector<char> buffer(4096);
  ucx::memory_handle first = ucp.map(buffer.data(), buffer.size());
  REQUIRE(first.pack_rkey() == UCS_OK);
  ucx::memory_handle second(std::move(first));
  CHECK(first.get() == nullptr);
  CHECK(second.get() != nullptr);
  CHECK(second.packed_rkey() != nullptr);
  second.reset();
  CHECK(second.get() == nullptr);
}
