// Device memory (memory_kind::cuda regions) without a GPU: nodes whose `device` is "emulated"
// treat cuda regions as memory only the copy engine touches, exactly as a CUDA engine's device
// memory is: a send from one is staged through the buffer pool chunk by chunk (gather, put), a
// receive into one takes the peer's data messages and copies them in, a batch at a time,
// through its window. Real UCX (tcp and shared memory) and CAF networking between two nodes of this process; the CPU copy
// engine stands in for the kernels, which the device script runs where a GPU exists.
#include "tests/actors/node_pair.hpp"

#include "gpu/copy_engine.hpp"
#include "gpu/kv_layout.hpp"

#include <numeric>

namespace kvferry::test {

namespace {

constexpr std::size_t block = 20 * 1024;  // not a multiple of a staging slot: chunks split blocks
constexpr std::size_t blocks = 24;
constexpr std::size_t region_bytes = blocks * block;

struct device_pair {
  std::unique_ptr<node> prefill, decode;
  std::vector<unsigned char> src, dst;
  region_id src_region = 0, dst_region = 0;
  peer_id peer;

  device_pair(const std::string& transport, memory_kind src_kind, memory_kind dst_kind,
              std::shared_ptr<transport::fault_plan> prefill_faults = nullptr) {
    node_config cfg;
    cfg.transport = transport;
    cfg.device = "emulated";
    cfg.staging_slots = 2;
    cfg.staging_slot_bytes = 64 * 1024;
    std::tie(prefill, decode) = start_two(cfg, std::move(prefill_faults));
    src.resize(region_bytes);
    dst.assign(region_bytes, 0);
    for (std::size_t i = 0; i < src.size(); ++i)
      src[i] = static_cast<unsigned char>((i * 151) ^ (i >> 11) ^ 0x5a);
    auto s = prefill->register_region(src.data(), src.size(), src_kind);
    REQUIRE_MESSAGE(s, s.error().message);
    auto r = decode->register_region(dst.data(), dst.size(), dst_kind);
    REQUIRE_MESSAGE(r, r.error().message);
    src_region = s.value();
    dst_region = r.value();
    auto c = decode->connect("127.0.0.1", prefill->port());
    REQUIRE_MESSAGE(c, c.error().message);
    peer = c.value();
  }
  ~device_pair() {
    prefill->stop(2s);
    decode->stop(2s);
  }

  // Source block i goes to destination block order[i]: scattered on the receiving side.
  std::vector<block_span> source_blocks() const {
    std::vector<block_span> out;
    for (std::size_t i = 0; i < blocks; ++i)
      out.push_back({src_region, i * block, block});
    return out;
  }
  std::vector<block_span> destination_blocks(const std::vector<std::size_t>& order) const {
    std::vector<block_span> out;
    for (auto j : order)
      out.push_back({dst_region, j * block, block});
    return out;
  }
  bool landed(std::size_t i, std::size_t j) const {
    return std::memcmp(&dst[j * block], &src[i * block], block) == 0;
  }
  bool untouched(std::size_t j) const {
    return std::all_of(dst.begin() + static_cast<std::ptrdiff_t>(j * block),
                       dst.begin() + static_cast<std::ptrdiff_t>((j + 1) * block),
                       [](unsigned char b) { return b == 0; });
  }
};

// Every other destination block, then the rest, backwards: no two neighbours stay neighbours.
std::vector<std::size_t> scattered_order() {
  std::vector<std::size_t> order;
  for (std::size_t j = 0; j < blocks; j += 2)
    order.push_back(j);
  for (std::size_t j = blocks - 1; j < blocks; j -= 2)
    order.push_back(j);
  return order;
}

const char* kind_name(memory_kind k) { return k == memory_kind::cuda ? "cuda" : "host"; }

}  // namespace

TEST_CASE("a cuda region is refused naming why when the node has no device for it") {
  node_config cfg;
  cfg.device = "none";
  auto n = node::start(cfg);
  REQUIRE_MESSAGE(n, n.error().message);
  std::vector<unsigned char> mem(4096);
  auto r = n.value()->register_region(mem.data(), mem.size(), memory_kind::cuda);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::unsupported);
  CHECK_MESSAGE(r.error().message.find("\"none\"") != std::string::npos, r.error().message);
  // Host memory is unaffected.
  CHECK(n.value()->register_region(mem.data(), mem.size(), memory_kind::host));
  n.value()->stop(2s);

  if (gpu::cuda_device_count() == 0) {
    // "auto" on a machine without a usable device (this build without CUDA, no driver, or no
    // device) starts on the CPU copy engine and says which of those it was.
    cfg.device = "auto";
    auto a = node::start(cfg);
    REQUIRE_MESSAGE(a, a.error().message);
    auto refused = a.value()->register_region(mem.data(), mem.size(), memory_kind::cuda);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == errc::unsupported);
    CHECK_MESSAGE(refused.error().message.find("no CUDA device") != std::string::npos,
                  refused.error().message);
    a.value()->stop(2s);
    // Asking for a device by number, the node does not start at all.
    cfg.device = "cuda:0";
    auto c = node::start(cfg);
    REQUIRE_FALSE(c);
    CHECK(c.error().code == errc::unsupported);
    CHECK_MESSAGE(c.error().message.find("cuda:0") != std::string::npos, c.error().message);
  }
}

TEST_CASE("device memory moves through staging both ways, scattered, over tcp and shared "
          "memory, every byte verified") {
  for (const char* transport : {"tcp", "shm"}) {
    for (auto [from, to] : {std::pair{memory_kind::cuda, memory_kind::cuda},
                            std::pair{memory_kind::host, memory_kind::cuda},
                            std::pair{memory_kind::cuda, memory_kind::host}}) {
      CAPTURE(transport);
      CAPTURE(kind_name(from));
      CAPTURE(kind_name(to));
      device_pair dp{transport, from, to};
      const auto order = scattered_order();
      auto s = dp.prefill->send("dev", dp.source_blocks());
      auto r = dp.decode->receive("dev", dp.peer, dp.destination_blocks(order));
      auto rr = r.wait_for(patience);
      REQUIRE(rr);
      CHECK_MESSAGE(rr->status == transfer_status::succeeded, rr->message);
      CHECK(rr->bytes == region_bytes);
      if (to == memory_kind::cuda)  // UCX never writes device memory: data messages do
        CHECK_MESSAGE(rr->transport.find("am") != std::string::npos, rr->transport);
      for (std::size_t i = 0; i < blocks; ++i)
        CHECK_MESSAGE(dp.landed(i, order[i]), "source block " << i);
      auto sr = s.wait_for(patience);
      REQUIRE(sr);
      CHECK(sr->status == transfer_status::succeeded);
      CHECK(s.wait_released(patience));
      CHECK(r.wait_released(patience));
    }
  }
}

TEST_CASE("a send from device memory goes chunk by chunk and a cancel stops it between two "
          "chunks: later chunks never move, both sides released") {
  // The third chunk's put is held before UCX: two chunks (128 KiB, six blocks and a part) have
  // landed, then the engine cancels. Unstaged, the whole request would be one put.
  transport::fault_rule third;
  third.op = "put";
  third.nth = 3;
  third.action = transport::fault_action::hold;
  auto plan = plan_with(third);
  device_pair dp{"tcp", memory_kind::cuda, memory_kind::cuda, plan};
  std::vector<std::size_t> order(blocks);
  std::iota(order.begin(), order.end(), 0);
  auto s = dp.prefill->send("chunks", dp.source_blocks());
  auto r = dp.decode->receive("chunks", dp.peer, dp.destination_blocks(order));
  REQUIRE(plan->wait_held(1, patience));
  CHECK(dp.prefill->cancel("chunks") == cancel_result::cancel_requested_in_flight);
  // The held put is the transport's: nothing is released before it answers.
  CHECK_FALSE(s.wait_released(200ms));
  plan->release_held();
  auto sr = s.wait_for(patience);
  REQUIRE(sr);
  CHECK(sr->status == transfer_status::cancelled);
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK(rr->status != transfer_status::succeeded);
  CHECK(s.wait_released(patience));
  CHECK(r.wait_released(patience));
  // Chunks one and two (bytes 0 .. 128 KiB: blocks 0-5) landed before the hold; from the fourth
  // chunk on (192 KiB: blocks 10 and later) nothing was sent.
  for (std::size_t i = 0; i < 6; ++i)
    CHECK_MESSAGE(dp.landed(i, i), "block " << i);
  for (std::size_t j = 10; j < blocks; ++j)
    CHECK_MESSAGE(dp.untouched(j), "block " << j);
}

TEST_CASE("F26: a copy into device memory that fails fails the receive naming it, after every "
          "other copy ended, and nothing is left held") {
  // The decode's copy engine fails its first copy (an illegal address, say): those bytes never
  // reach device memory, so the receive must not report them landed. Over tcp the 480 KiB
  // arrive as two data messages (256 KiB at most each), which the engine copies in one batch or
  // two (transport/device_landing.hpp), as the progress passes fall.
  node_config cfg;
  cfg.transport = "tcp";
  cfg.device = "emulated";
  transport::fault_rule first;
  first.op = "copy";
  first.nth = 1;
  first.action = transport::fault_action::fail;
  auto prefill = node::start(cfg);
  REQUIRE_MESSAGE(prefill, prefill.error().message);
  auto decode = testing::start_with_faults(cfg, plan_with(first));
  REQUIRE_MESSAGE(decode, decode.error().message);
  std::vector<unsigned char> src(region_bytes, 7), dst(region_bytes, 0);
  auto s_region = prefill.value()->register_region(src.data(), src.size()).value();
  auto d_region = decode.value()->register_region(dst.data(), dst.size(), memory_kind::cuda).value();
  auto peer = decode.value()->connect("127.0.0.1", prefill.value()->port());
  REQUIRE_MESSAGE(peer, peer.error().message);
  auto s = prefill.value()->send("bad-copy", {{s_region, 0, region_bytes}});
  auto r = decode.value()->receive("bad-copy", peer.value(), {{d_region, 0, region_bytes}});
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK(rr->status == transfer_status::failed);
  CHECK(rr->code == errc::transport_error);
  CHECK_MESSAGE(rr->message.find("copying into device memory failed: injected fault") !=
                  std::string::npos,
                rr->message);
  CHECK(r.wait_released(patience));
  CHECK(s.wait_released(patience));
  // The first copy's bytes did not land (a second copy, if any, wrote the second message only).
  const auto landed = static_cast<std::size_t>(std::count(dst.begin(), dst.end(), 7));
  CHECK(landed + 256 * 1024 <= region_bytes);
  auto h = decode.value()->health();
  CHECK(h.unreleased == 0);
  CHECK(h.healthy);
  prefill.value()->stop(2s);
  decode.value()->stop(2s);
}

TEST_CASE("a layer-wise send into device memory: a layer's event comes once its bytes are in "
          "device memory") {
  device_pair dp{"shm", memory_kind::host, memory_kind::cuda};
  std::vector<std::size_t> order(blocks);
  std::iota(order.begin(), order.end(), 0);
  transfer_options layered;
  layered.layer_blocks = {blocks / 2, blocks / 2};
  auto s = dp.prefill->send("layers", dp.source_blocks(), layered);
  auto r = dp.decode->receive("layers", dp.peer, dp.destination_blocks(order));
  CHECK(dp.prefill->layer_ready("layers", 0).code == errc::none);
  REQUIRE(r.wait_layer(0, patience));
  for (std::size_t i = 0; i < blocks / 2; ++i)
    CHECK_MESSAGE(dp.landed(i, i), "block " << i);
  for (std::size_t j = blocks / 2; j < blocks; ++j)
    CHECK_MESSAGE(dp.untouched(j), "block " << j);
  CHECK(dp.prefill->layer_ready("layers", 1).code == errc::none);
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK_MESSAGE(rr->status == transfer_status::succeeded, rr->message);
  for (std::size_t i = 0; i < blocks; ++i)
    CHECK_MESSAGE(dp.landed(i, i), "block " << i);
  CHECK(s.wait_released(patience));
}

TEST_CASE("heterogeneous TP into device memory: each decode rank fetches exactly its heads from "
          "the prefill ranks that hold them, converted on the way, as the CPU reference does") {
  // 4 KV heads of 4 tokens x 8 dims x 2 bytes (64 bytes a head), 2 layers x 3 blocks per rank.
  auto layout = [](std::uint32_t tp, std::uint32_t rank) {
    gpu::kv_layout l;
    l.layers = 2;
    l.total_heads = 4;
    l.tokens_per_block = 4;
    l.head_dim = 8;
    l.element_bytes = 2;
    l.tp_size = tp;
    l.tp_rank = rank;
    return l;
  };
  constexpr std::size_t per_rank = 2 * 3;  // layer blocks of one rank
  for (const char* transport : {"tcp", "shm"}) {
    for (auto [a, b] : {std::pair<std::uint32_t, std::uint32_t>{2, 1}, {1, 2}, {2, 4}}) {
      CAPTURE(transport);
      CAPTURE(a);
      CAPTURE(b);
      node_config cfg;
      cfg.transport = transport;
      cfg.device = "emulated";
      auto [prefill, decode] = start_two(cfg, nullptr);
      auto c = decode->connect("127.0.0.1", prefill->port());
      REQUIRE_MESSAGE(c, c.error().message);
      // Prefill rank i's cache, and decode rank j's; block n of a rank at n * block_bytes.
      std::vector<std::vector<unsigned char>> src(a), dst(b), want(b);
      std::vector<region_id> src_region(a), dst_region(b);
      auto offsets = [&](std::uint64_t block_bytes) {
        std::vector<std::uint64_t> out;
        for (std::size_t n = 0; n < per_rank; ++n)
          out.push_back(n * block_bytes);
        return out;
      };
      std::vector<std::vector<const void*>> by_rank(a);
      for (std::uint32_t i = 0; i < a; ++i) {
        src[i].resize(per_rank * layout(a, i).block_bytes());
        for (std::size_t k = 0; k < src[i].size(); ++k)
          src[i][k] = static_cast<unsigned char>(k * 7 + i * 101 + 1);
        src_region[i] =
          prefill->register_region(src[i].data(), src[i].size(), memory_kind::cuda).value();
        for (auto o : offsets(layout(a, i).block_bytes()))
          by_rank[i].push_back(src[i].data() + o);
      }
      std::vector<std::pair<transfer_handle, transfer_handle>> transfers;
      for (std::uint32_t j = 0; j < b; ++j) {
        const auto bytes = per_rank * layout(b, j).block_bytes();
        dst[j].assign(bytes, 0);
        want[j].assign(bytes, 0);
        dst_region[j] =
          decode->register_region(dst[j].data(), dst[j].size(), memory_kind::cuda).value();
        std::vector<void*> want_blocks;
        for (auto o : offsets(layout(b, j).block_bytes()))
          want_blocks.push_back(want[j].data() + o);
        gpu::assemble_rank_cpu(layout(a, 0), layout(b, j), by_rank, want_blocks);
        for (std::uint32_t i : gpu::source_ranks(layout(a, 0), layout(b, j))) {
          const std::string id = "tp-" + std::to_string(i) + "-" + std::to_string(j);
          std::vector<block_span> offer;
          for (auto sp : gpu::head_spans(layout(a, i), offsets(layout(a, i).block_bytes())))
            offer.push_back({src_region[i], sp.offset, sp.bytes});
          auto fetch = gpu::plan_tp_fetch(layout(a, i), layout(b, j),
                                          offsets(layout(b, j).block_bytes()));
          std::vector<block_span> into;
          for (auto sp : fetch.destinations)
            into.push_back({dst_region[j], sp.offset, sp.bytes});
          transfer_options wanted;
          for (auto [first, count] : fetch.ranges)
            wanted.fetch_ranges.push_back({first, count});
          transfers.emplace_back(prefill->send(id, offer),
                                 decode->receive(id, c.value(), into, wanted));
        }
      }
      for (auto& [s, r] : transfers) {
        auto rr = r.wait_for(patience);
        REQUIRE(rr);
        CHECK_MESSAGE(rr->status == transfer_status::succeeded, rr->message);
        CHECK(s.wait_released(patience));
        CHECK(r.wait_released(patience));
      }
      for (std::uint32_t j = 0; j < b; ++j)
        CHECK_MESSAGE(dst[j] == want[j], "decode rank " << j);
      prefill->stop(2s);
      decode->stop(2s);
    }
  }
}

}  // namespace kvferry::test
