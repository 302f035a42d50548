// Writes the seed corpus of fuzz_wire_messages: real messages a kvferry node exchanges, encoded
// by CAF's binary serializer exactly as BASP puts them into a payload, each prefixed with its
// mode byte (wire_common.hpp). The fetches carry a real UCX worker address and real packed rkeys
// of this host's UCX (so that they pass check_fetch); with a second directory, those blobs are
// also written as seeds of fuzz_wire_check.
//   usage: fuzz_gen_wire_corpus WIRE_DIR [WIRE_CHECK_DIR]
#include "fuzz/wire_common.hpp"

#include <ucp/api/ucp.h>

#include <caf/binary_serializer.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

using namespace kvferry;

namespace {

std::string dir;
fuzz::wire_env* env = nullptr;

template <class... Ts>
void write(const std::string& name, fuzz::wire_mode mode, Ts&... xs) {
  std::vector<char> buf;
  buf.push_back(static_cast<char>(mode));
  caf::binary_serializer sink{env->ctx.get(), buf};
  if (auto err = sink(xs...)) {
    std::fprintf(stderr, "cannot encode %s\n", name.c_str());
    std::exit(1);
  }
  std::ofstream out(dir + "/" + name, std::ios::binary);
  out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
}

// A node on another host: the anchor of a fetch is an actor there (its health supervisor).
caf::node_id peer_node() {
  caf::node_id::default_data::host_id_type host{};
  for (std::size_t i = 0; i < host.size(); ++i)
    host[i] = static_cast<std::uint8_t>(0xa0 + i);
  return caf::make_node_id(4242, host);
}

// A decode node's UCX side: its worker address and two registered regions' packed rkeys.
struct ucx_blobs {
  std::vector<std::uint8_t> address;
  std::vector<std::vector<std::uint8_t>> rkeys;
  std::vector<std::uint64_t> bases, sizes;
};

[[noreturn]] void ucx_fail(const char* what, ucs_status_t st) {
  std::fprintf(stderr, "%s: %s\n", what, ucs_status_string(st));
  std::exit(1);
}

ucx_blobs make_ucx_blobs() {
  ucx_blobs out;
  ucp_config_t* config = nullptr;
  if (auto st = ucp_config_read(nullptr, nullptr, &config); st != UCS_OK)
    ucx_fail("ucp_config_read", st);
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA;
  ucp_context_h ctx = nullptr;
  if (auto st = ucp_init(&params, config, &ctx); st != UCS_OK)
    ucx_fail("ucp_init", st);
  ucp_config_release(config);
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  ucp_worker_h worker = nullptr;
  if (auto st = ucp_worker_create(ctx, &wp, &worker); st != UCS_OK)
    ucx_fail("ucp_worker_create", st);
  ucp_address_t* addr = nullptr;
  std::size_t len = 0;
  if (auto st = ucp_worker_get_address(worker, &addr, &len); st != UCS_OK)
    ucx_fail("ucp_worker_get_address", st);
  auto* a = reinterpret_cast<const std::uint8_t*>(addr);
  out.address.assign(a, a + len);
  for (std::size_t bytes : {std::size_t{1} << 20, std::size_t{1} << 20}) {
    void* region = std::aligned_alloc(4096, bytes);
    ucp_mem_map_params_t mp{};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address = region;
    mp.length = bytes;
    ucp_mem_h memh = nullptr;
    if (auto st = ucp_mem_map(ctx, &mp, &memh); st != UCS_OK)
      ucx_fail("ucp_mem_map", st);
    void* packed = nullptr;
    std::size_t packed_size = 0;
    if (auto st = ucp_rkey_pack(ctx, memh, &packed, &packed_size); st != UCS_OK)
      ucx_fail("ucp_rkey_pack", st);
    auto* p = static_cast<const std::uint8_t*>(packed);
    out.rkeys.emplace_back(p, p + packed_size);
    out.bases.push_back(reinterpret_cast<std::uint64_t>(region));
    out.sizes.push_back(bytes);
  }
  return out;  // UCX is left up: the process exits right after writing
}

const ucx_blobs& blobs() {
  static const ucx_blobs b = make_ucx_blobs();
  return b;
}

fetch_msg valid_fetch() {
  // Matches fuzz_wire_messages' source blocks: 8 blocks, two rkeys.
  fetch_msg f;
  f.request_id = "req-0001";
  f.node_name = "decode-0";
  f.epoch = 0x1234567890abcdefULL;
  f.worker_address = blobs().address;
  f.rkeys = blobs().rkeys;
  f.region_bases = blobs().bases;
  f.region_bytes = blobs().sizes;
  const std::uint64_t sizes[] = {4096, 4096, 4096, 4096, 8192, 512, 512, 65536};
  std::uint64_t at = f.region_bases[0];
  for (std::size_t i = 0; i < 8; ++i) {
    std::uint32_t key = i < 5 ? 0 : 1;
    if (i == 5)
      at = f.region_bases[1];
    f.blocks.push_back(desc{at, sizes[i], key});
    at += sizes[i];
  }
  f.deadline_ms = 30000;
  f.layout_tag = "llama-7b/fp16/bs16/tp0";
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::fprintf(stderr, "usage: %s WIRE_DIR [WIRE_CHECK_DIR]\n", argv[0]);
    return 2;
  }
  dir = argv[1];
  env = new fuzz::wire_env;
  auto anchor_ptr = env->proxies->get_or_put(peer_node(), 17);
  std::vector<caf::strong_actor_ptr> no_stages;

  // A whole fetch as BASP carries it, anchor and all.
  auto f = valid_fetch();
  f.anchor = caf::actor_cast<caf::actor_addr>(anchor_ptr);
  auto m = caf::make_message(f);
  write("basp-fetch", fuzz::basp_direct, no_stages, m);
  // Routed (through a third node), with block ranges: the first 3 and the last block.
  auto g = valid_fetch();
  g.ranges = {0, 3, 7, 1};
  g.blocks = {g.blocks[0], g.blocks[1], g.blocks[2], g.blocks[7]};
  auto src_node = peer_node();
  auto dst_node = env->sys->node();
  auto mg = caf::make_message(g);
  write("basp-routed-fetch-ranges", fuzz::basp_routed, src_node, dst_node, no_stages, mg);
  // The sender's other remote requests.
  auto cancel = caf::make_message(cancel_fetch_atom::value, std::string{"req-0001"},
                                  std::uint64_t{0x1234567890abcdefULL}, true);
  write("basp-cancel-fetch", fuzz::basp_direct, no_stages, cancel);
  auto layout = caf::make_message(layout_atom::value);
  write("basp-layout", fuzz::basp_direct, no_stages, layout);
  auto decline = caf::make_message(decline_atom::value, std::string{"req-0002"});
  write("basp-decline", fuzz::basp_direct, no_stages, decline);
  // A layer-wise send's progress, as the prefill's sender tells the fetching actor; and the
  // relay request only this node's send-requests may make of the sender (a peer may try).
  auto layer = caf::make_message(layer_atom::value, std::string{"req-0001"}, std::uint32_t{3},
                                 std::uint32_t{32});
  write("basp-layer", fuzz::basp_direct, no_stages, layer);
  auto relay = caf::make_message(layer_atom::value, caf::actor_cast<caf::actor_addr>(anchor_ptr),
                                 std::string{"req-0001"}, std::uint32_t{3}, std::uint32_t{32});
  write("basp-layer-relay", fuzz::basp_direct, no_stages, relay);
  // Answers: transfer_done, a kvferry error, a cancel result, a layout tag.
  transfer_done done{"req-0001", 94208, 350, 32, "posix put"};
  auto md = caf::make_message(done);
  write("basp-transfer-done", fuzz::basp_direct, no_stages, md);
  auto me = caf::make_message(
    caf::make_error(errc::incompatible_peer, "the fetch for request 'req-0001' declares another "
                                             "layout tag than node 'prefill-0'"));
  write("basp-error", fuzz::basp_direct, no_stages, me);
  auto mc = caf::make_message(cancel_result::cancelled_before_advertise);
  write("basp-cancel-result", fuzz::basp_direct, no_stages, mc);
  // Raw wire types.
  write("raw-fetch", fuzz::raw_fetch, f);
  write("raw-transfer-done", fuzz::raw_done, done);
  auto err = caf::make_error(errc::size_mismatch, "block 3 of 'req-0001': destination has 1 bytes");
  write("raw-error", fuzz::raw_error, err);
  desc d{0x7f0000001000ULL, 4096, 1};
  write("raw-desc", fuzz::raw_desc, d);
  errc code = errc::stale_epoch;
  auto cr = cancel_result::not_cancellable;
  write("raw-enums", fuzz::raw_enums, code, cr);
  auto sender = caf::actor_cast<sender_actor>(env->proxies->get_or_put(peer_node(), 9));
  write("raw-sender", fuzz::raw_sender, sender);
  if (argc == 3) {
    // fuzz_wire_check: mode byte 0 address, 1 rkey, 2 (address length, address, rkey).
    auto raw = [](const std::string& path, std::uint8_t mode,
                  std::initializer_list<const std::vector<std::uint8_t>*> parts, bool with_len) {
      std::vector<char> buf{static_cast<char>(mode)};
      if (with_len) {
        auto n = (*parts.begin())->size();
        buf.push_back(static_cast<char>(n & 0xff));
        buf.push_back(static_cast<char>(n >> 8));
      }
      for (auto* part : parts)
        buf.insert(buf.end(), part->begin(), part->end());
      std::ofstream out(path, std::ios::binary);
      out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
    };
    std::string check_dir = argv[2];
    const auto& b = blobs();
    raw(check_dir + "/worker-address", 0, {&b.address}, false);
    raw(check_dir + "/rkey", 1, {&b.rkeys[0]}, false);
    raw(check_dir + "/rkey-with-address", 2, {&b.address, &b.rkeys[1]}, true);
    std::printf("wrote seeds to %s\n", check_dir.c_str());
  }
  std::printf("wrote seeds to %s\n", dir.c_str());
  std::fflush(stdout);
  std::_Exit(0);  // skip the actor system's shutdown: nothing to flush
}
