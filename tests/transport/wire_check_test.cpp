#include "transport/shm_guard.hpp"
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

namespace {

// The allocated region of a real peer's second registration (UCP_MEM_MAP_ALLOCATE).
std::pair<std::uint64_t, std::uint64_t> allocated_region(const real_peer& peer) {
  ucp_mem_attr_t attr;
  std::memset(&attr, 0, sizeof attr);
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  REQUIRE(ucp_mem_query(peer.memory.at(1).get(), &attr) == UCS_OK);
  return {reinterpret_cast<std::uint64_t>(attr.address), attr.length};
}

// The offset of md blob `index` (0-based among the blobs present) in a packed rkey.
std::size_t blob_offset(const bytes& rkey, std::size_t index) {
  std::uint64_t map = 0;
  std::memcpy(&map, rkey.data(), 8);
  std::size_t pos = 9, seen = 0;
  for (unsigned md = 0; md < 64; ++md) {
    if (!(map & (std::uint64_t{1} << md)))
      continue;
    if (seen++ == index)
      return pos + 1;
    pos += 1 + rkey[pos];
  }
  FAIL("no blob " << index);
  return 0;
}

}  // namespace

TEST_CASE("shm_guard: a same-host peer's real shared-memory rkeys map what the peer allocated, "
          "and nothing a forged key claims") {
  for (const char* tls : {"sysv", "posix"}) {
    CAPTURE(tls);
    real_peer peer;
    if (!peer.start({{"TLS", tls}})) {
      MESSAGE("UCX cannot start with TLS=" << tls << " here; skipped");
      continue;
    }
    const bytes& rkey = peer.rkeys.at(1);  // the allocated region's
    auto keys = shm_keys_of(rkey.data(), rkey.size(), peer.address.data(), peer.address.size());
    REQUIRE(keys.segments.size() == 1);
    CHECK(keys.system_id != 0);
    CHECK(keys.system_id == shm_system_id(peer.address.data(), peer.address.size()));
    std::vector<shm_extent> extents;
    auto verdict = shm_extents(keys, &extents);
    REQUIRE_MESSAGE(!verdict, *verdict);
    REQUIRE(extents.size() == 1);
    auto [base, length] = allocated_region(peer);
    CHECK(inside_all(extents, base, length));
    CHECK_FALSE(inside_all(extents, base + length, 1));
    CHECK_FALSE(inside_all(extents, base - 1, 1));
    CHECK_FALSE(inside_all(extents, ~std::uint64_t{0} - 8, 16));  // wraps around

    // A key moved to another base: the same bytes now lie outside it.
    bytes moved = rkey;
    const std::size_t at = blob_offset(moved, 0);
    const std::size_t base_at = keys.segments[0].type == shm_segment::kind::sysv ? at + 4 : at + 8;
    std::uint64_t forged_base = base + (std::uint64_t{1} << 40);
    std::memcpy(&moved[base_at], &forged_base, 8);
    auto moved_keys = shm_keys_of(moved.data(), moved.size(), peer.address.data(),
                                  peer.address.size());
    std::vector<shm_extent> moved_extents;
    REQUIRE_FALSE(shm_extents(moved_keys, &moved_extents));
    CHECK_FALSE(inside_all(moved_extents, base, length));

    // A segment that does not exist, and (posix) a key longer than its file.
    bytes bogus = rkey;
    if (keys.segments[0].type == shm_segment::kind::sysv) {
      std::uint32_t no_such = 0x7ffffff0;
      std::memcpy(&bogus[at], &no_such, 4);
    } else {
      std::uint64_t seg = keys.segments[0].id;
      seg = (seg & ~((std::uint64_t{1} << 30) - 1)) | ((std::uint64_t{1} << 30) - 2);  // pid
      std::memcpy(&bogus[at], &seg, 8);
    }
    auto bogus_keys = shm_keys_of(bogus.data(), bogus.size(), peer.address.data(),
                                  peer.address.size());
    std::vector<shm_extent> none;
    auto refused = shm_extents(bogus_keys, &none);
    REQUIRE(refused);
    CHECK_MESSAGE((refused->find("does not attach") != std::string::npos ||
                   refused->find("does not open") != std::string::npos),
                  *refused);
    CHECK(none.empty());
    if (keys.segments[0].type == shm_segment::kind::posix) {
      bytes longer = rkey;
      std::uint64_t claim = keys.segments[0].length * 1024;
      std::memcpy(&longer[at + 16], &claim, 8);
      auto longer_keys = shm_keys_of(longer.data(), longer.size(), peer.address.data(),
                                     peer.address.size());
      auto why = shm_extents(longer_keys, &none);
      REQUIRE(why);
      CHECK_MESSAGE(why->find("its key claims") != std::string::npos, *why);
    }
  }
}
