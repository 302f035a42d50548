// Embedding kvferry: one prefill node and one decode node (here in one process for brevity;
// in a real deployment each lives in its own engine worker process, on its own host).
//
//   build/examples/kvferry_example_1p1d
#include <kvferry/kvferry.hpp>  // the public API: standard library only

#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

using namespace std::chrono_literals;

int main() {
  kvferry::node_config cfg;  // documented defaults: loopback, ephemeral port, UCX's choice
  auto prefill = kvferry::node::start(cfg);
  auto decode = kvferry::node::start(cfg);
  if (!prefill || !decode) {
    std::fprintf(stderr, "start failed: %s\n",
                 (!prefill ? prefill.error() : decode.error()).message.c_str());
    return 1;
  }
  auto& p = *prefill.value();
  auto& d = *decode.value();

  // Each engine registers its KV pool once.
  constexpr std::size_t block = 64 * 1024, blocks = 8;
  std::vector<unsigned char> src(block * blocks), dst(block * blocks, 0);
  for (std::size_t i = 0; i < src.size(); ++i)
    src[i] = static_cast<unsigned char>(i * 7);
  auto src_region = p.register_region(src.data(), src.size()).value();
  auto dst_region = d.register_region(dst.data(), dst.size()).value();

  // Prefill: offer blocks 0 and 5 of its pool under a request id.
  auto sent = p.send("request-42", {{src_region, 0 * block, block}, {src_region, 5 * block, block}});

  // Decode: connect once, then fetch the request into its own blocks 3 and 1.
  auto peer = d.connect("127.0.0.1", p.port());
  if (!peer) {
    std::fprintf(stderr, "connect: %s\n", peer.error().message.c_str());
    return 1;
  }
  auto got = d.receive("request-42", peer.value(),
                       {{dst_region, 3 * block, block}, {dst_region, 1 * block, block}});
  got.on_done([](const kvferry::transfer_result& r) {
    std::printf("decode: %s, %llu bytes\n", kvferry::to_string(r.status),
                static_cast<unsigned long long>(r.bytes));
  });

  auto r = got.wait_for(10s);
  bool ok = r && r->status == kvferry::transfer_status::succeeded &&
            std::memcmp(&dst[3 * block], &src[0], block) == 0 &&
            std::memcmp(&dst[1 * block], &src[5 * block], block) == 0;
  sent.wait_for(10s);
  for (auto& ev : p.poll())  // completed, then released: the blocks may be reused
    std::printf("prefill event: %s %s\n", ev.request_id.c_str(),
                ev.kind == kvferry::event_kind::released ? "released" : "completed");
  std::printf("health: %s\n%s\n", d.health().to_string().c_str(), ok ? "OK" : "FAILED");
  d.stop(1s);
  p.stop(1s);
  return ok ? 0 : 1;
}
