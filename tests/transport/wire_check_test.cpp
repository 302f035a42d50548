#include "transport/wire_check.hpp"
#include "transport/ucx_handles.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

using namespace kvferry::transport;

namespace {

using bytes = std::vector<std::uint8_t>;

// A peer as UCX really builds one: a context with `settings` applied (name/value pairs as
// ucp_config_modify takes them), a worker, its packed address, and packed rkeys for malloc'd
// memory registered with ucp_mem_map and for memory UCX allocated itself.
struct real_peer {
  ucx::context_ptr context;
  ucx::worker_ptr worker;
  bytes address;
  std::vector<bytes> rkeys;
  std::vector<char> heap = std::vector<char>(1 << 20);
  std::vector<ucx::memory_handle> memory;

  // False when this UCX cannot run with `settings` here (e.g. a transport missing on the host).
  bool start(const std::vector<std::pair<const char*, const char*>>& settings) {
    ucp_config_t* raw_config = nullptr;
    REQUIRE(ucp_config_read(nullptr, nullptr, &raw_config) == UCS_OK);
    ucx::config_ptr config(raw_config);
    for (const auto& [name, value] : settings) {
      REQUIRE(ucp_config_modify(config.get(), name, value) == UCS_OK);
    }
    ucp_params_t params;
    std::memset(&params, 0, sizeof(params));
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
    ucp_context_h raw_context = nullptr;
    if (ucp_init(&params, config.get(), &raw_context) != UCS_OK) {
      return false;
    }
    context.reset(raw_context);
    ucp_worker_params_t worker_params;
    std::memset(&worker_params, 0, sizeof(worker_params));
    ucp_worker_h raw_worker = nullptr;
    if (ucp_worker_create(context.get(), &worker_params, &raw_worker) != UCS_OK) {
      return false;
    }
    worker.reset(raw_worker);
    ucp_address_t* raw_address = nullptr;
    std::size_t length = 0;
    REQUIRE(ucp_worker_get_address(worker.get(), &raw_address, &length) == UCS_OK);
    address = ucx::worker_address(worker.get(), raw_address, length).bytes();
    for (bool allocate : {false, true}) {
      ucp_mem_map_params_t map;
      std::memset(&map, 0, sizeof(map));
      map.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
      map.address = allocate ? nullptr : heap.data();
      map.length = heap.size();
      if (allocate) {
        map.field_mask |= UCP_MEM_MAP_PARAM_FIELD_FLAGS;
        map.flags = UCP_MEM_MAP_ALLOCATE;
      }
      ucp_mem_h memh = nullptr;
      REQUIRE(ucp_mem_map(context.get(), &map, &memh) == UCS_OK);
      ucx::memory_handle handle(context.get(), memh);
      REQUIRE(handle.pack_rkey() == UCS_OK);
      const auto* packed = static_cast<const std::uint8_t*>(handle.packed_rkey());
      rkeys.emplace_back(packed, packed + handle.packed_rkey_size());
      memory.push_back(std::move(handle));
    }
    return true;
  }

  ~real_peer() {
    memory.clear();  // registrations before the worker and context
    worker.reset();
  }
};

const std::vector<std::vector<std::pair<const char*, const char*>>>& peer_settings() {
  static const std::vector<std::vector<std::pair<const char*, const char*>>> all = {
      {},  // whatever the environment selects (all transports by default)
      {{"TLS", "all"}},
      {{"TLS", "self"}},
      {{"TLS", "tcp"}},
      {{"TLS", "shm"}},
      {{"TLS", "posix"}},
      {{"TLS", "sysv"}},
      {{"TLS", "cma,tcp"}},
      {{"ADDRESS_VERSION", "v2"}},
      {{"ADDRESS_DEBUG_INFO", "y"}},
  };
  return all;
}

std::string describe(const std::vector<std::pair<const char*, const char*>>& settings) {
  std::string out;
  for (const auto& [name, value] : settings) {
    out += std::string(name) + "=" + value + " ";
  }
  return out.empty() ? "(environment defaults)" : out;
}

}  // namespace

TEST_CASE("wire_check accepts the worker addresses and rkeys real UCX contexts produce") {
  int started = 0;
  for (const auto& settings : peer_settings()) {
    real_peer peer;
    if (!peer.start(settings)) {
      MESSAGE("UCX cannot start with " << describe(settings) << "here; skipped");
      continue;
    }
    ++started;
    INFO("settings: " << describe(settings) << " address of " << peer.address.size() << " bytes");
    auto address_verdict = check_worker_address(peer.address.data(), peer.address.size());
    CHECK_MESSAGE(!address_verdict, address_verdict.value_or(""));
    for (const bytes& rkey : peer.rkeys) {
      auto alone = check_packed_rkey(rkey.data(), rkey.size());
      CHECK_MESSAGE(!alone, alone.value_or(""));
      auto paired = check_packed_rkey(rkey.data(), rkey.size(), peer.address.data(),
                                      peer.address.size());
      CHECK_MESSAGE(!paired, paired.value_or(""));
    }
  }
  CHECK(started >= 3);
}

TEST_CASE("wire_check refuses every truncation of a real address and rkey") {
  for (const auto& settings : peer_settings()) {
    real_peer peer;
    if (!peer.start(settings)) {
      continue;
    }
    INFO("settings: " << describe(settings));
    for (std::size_t length = 0; length < peer.address.size(); ++length) {
      bytes cut(peer.address.begin(), peer.address.begin() + length);
      INFO("address cut to " << length << " of " << peer.address.size());
      CHECK(check_worker_address(cut.data(), cut.size()).has_value());
    }
    for (const bytes& rkey : peer.rkeys) {
      for (std::size_t length = 0; length < rkey.size(); ++length) {
        bytes cut(rkey.begin(), rkey.begin() + length);
        INFO("rkey cut to " << length << " of " << rkey.size());
        CHECK(check_packed_rkey(cut.data(), cut.size()).has_value());
        CHECK(check_packed_rkey(cut.data(), cut.size(), peer.address.data(), peer.address.size())
                  .has_value());
      }
    }
  }
}

TEST_CASE("wire_check refuses an unknown address version") {
  real_peer peer;
  REQUIRE(peer.start({{"TLS", "tcp"}}));
  for (unsigned version = 2; version < 16; ++version) {
    bytes bad = peer.address;
    bad[0] = static_cast<std::uint8_t>((bad[0] & 0xf0) | version);
    auto verdict = check_worker_address(bad.data(), bad.size());
    REQUIRE(verdict.has_value());
    CHECK(verdict->find("version") != std::string::npos);
  }
}

TEST_CASE("wire_check refuses oversize inputs, trailing bytes and a null pointer") {
  real_peer peer;
  REQUIRE(peer.start({{"TLS", "tcp"}}));
  bytes big = peer.address;
  big.resize(max_worker_address_size + 1, 0);
  CHECK(check_worker_address(big.data(), big.size()).has_value());
  bytes trailing = peer.address;
  trailing.push_back(0);
  CHECK(check_worker_address(trailing.data(), trailing.size()).has_value());
  CHECK(check_worker_address(nullptr, 0).has_value());

  const bytes& rkey = peer.rkeys.front();
  bytes big_rkey = rkey;
  big_rkey.resize(max_packed_rkey_size + 1, 0);
  CHECK(check_packed_rkey(big_rkey.data(), big_rkey.size()).has_value());
  CHECK(check_packed_rkey(nullptr, 0).has_value());
  bytes bad_type = rkey;
  bad_type[8] = 0x7f;  // memory type: no such type
  CHECK(check_packed_rkey(bad_type.data(), bad_type.size()).has_value());
}

TEST_CASE("wire_check refuses random garbage without crashing") {
  std::mt19937 rng(20240611);
  int refused_addresses = 0, refused_rkeys = 0;
  constexpr int rounds = 2000;
  for (int i = 0; i < rounds; ++i) {
    bytes garbage(1 + rng() % 512);
    for (auto& b : garbage) {
      b = static_cast<std::uint8_t>(rng());
    }
    refused_addresses += check_worker_address(garbage.data(), garbage.size()).has_value();
    garbage.resize(1 + garbage.size() % 64);
    refused_rkeys += check_packed_rkey(garbage.data(), garbage.size()).has_value();
  }
  CHECK(refused_addresses == rounds);
  CHECK(refused_rkeys == rounds);
}
