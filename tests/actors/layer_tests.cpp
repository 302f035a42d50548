// Layer-wise streaming (transfer_options::layer_blocks, node::layer_ready): a prefill offers a
// request before its layers exist and marks each written; the decode hears of each layer as it
// lands. Real UCX (tcp) and CAF networking between two nodes of this process (node_pair).
#include "tests/actors/node_pair.hpp"

#include <numeric>

namespace kvferry::test {

namespace {

constexpr std::size_t block = 4096;

// `layers` layers of `per_layer` blocks each, back to back from `offset` in `region`.
std::vector<block_span> layered_spans(region_id region, std::size_t offset, std::uint32_t layers,
                                      std::uint32_t per_layer) {
  std::vector<block_span> out;
  for (std::uint32_t i = 0; i < layers * per_layer; ++i)
    out.push_back({region, offset + i * block, block});
  return out;
}

transfer_options in_layers(std::uint32_t layers, std::uint32_t per_layer) {
  transfer_options o;
  o.layer_blocks.assign(layers, per_layer);
  return o;
}

bool zero(const std::vector<unsigned char>& v, std::size_t from, std::size_t bytes) {
  return std::all_of(v.begin() + static_cast<std::ptrdiff_t>(from),
                     v.begin() + static_cast<std::ptrdiff_t>(from + bytes),
                     [](auto b) { return b == 0; });
}

// The layer numbers of the layer_landed events in `evs`, in order.
std::vector<std::uint32_t> landed_order(const std::vector<transfer_event>& evs) {
  std::vector<std::uint32_t> out;
  for (auto& e : evs)
    if (e.kind == event_kind::layer_landed)
      out.push_back(e.layer);
  return out;
}

// Both sides of a transfer ended with `status`, and both were released.
void both_ended(const transfer_handle& s, const transfer_handle& r, transfer_status status) {
  auto sr = s.wait_for(patience);
  REQUIRE(sr);
  CHECK(sr->status == status);
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK(rr->status == status);
  CHECK(s.wait_released(patience));
  CHECK(r.wait_released(patience));
}

}  // namespace

TEST_CASE("a layer-wise send goes out layer by layer as each is marked ready, and the decode hears of each as it lands") {
  for (bool staged : {false, true}) {
    CAPTURE(staged);
    node_pair np{16 * block};
    const std::uint32_t layers = 4, per = 2;
    auto opts = in_layers(layers, per);
    opts.stage_through_pool = staged;
    auto s = np.prefill->send("stream", layered_spans(np.src_region, 0, layers, per), opts);
    auto r = np.decode->receive("stream", np.peer, layered_spans(np.dst_region, 0, layers, per));
    // Fetched, but no layer is ready: nothing is written and nothing ends.
    REQUIRE(r.wait_started(patience));
    CHECK(np.prefill->layer_ready("stream", 0).code == errc::none);
    REQUIRE(r.wait_layer(0, patience));
    CHECK(std::memcmp(&np.dst[0], &np.src[0], per * block) == 0);
    CHECK(zero(np.dst, per * block, (layers - 1) * per * block));  // no other layer was marked
    CHECK(r.layers_landed() == 1);
    CHECK_FALSE(r.result());
    CHECK_FALSE(s.result());
    // Out of order: each is sent when it is marked.
    CHECK(np.prefill->layer_ready("stream", 3).code == errc::none);
    REQUIRE(r.wait_layer(3, patience));
    CHECK(std::memcmp(&np.dst[3 * per * block], &np.src[3 * per * block], per * block) == 0);
    CHECK(zero(np.dst, per * block, 2 * per * block));
    CHECK(np.prefill->layer_ready("stream", 1).code == errc::none);
    CHECK(np.prefill->layer_ready("stream", 2).code == errc::none);
    auto rr = r.wait_for(patience);
    REQUIRE(rr);
    CHECK_MESSAGE(rr->status == transfer_status::succeeded, rr->message);
    CHECK(rr->bytes == layers * per * block);
    CHECK(std::memcmp(np.dst.data(), np.src.data(), layers * per * block) == 0);
    auto sr = s.wait_for(patience);
    REQUIRE(sr);
    CHECK(sr->status == transfer_status::succeeded);
    // Which UCX transport carried it (node_pair's nodes use tcp), on both sides alike.
    CHECK_MESSAGE(sr->transport.rfind("tcp ", 0) == 0, sr->transport);
    CHECK(rr->transport == sr->transport);
    CHECK(s.wait_released(patience));
    CHECK(r.wait_released(patience));
    // The decode's events: one per layer in the order they landed, each naming the count, then
    // the completed event, then the released one.
    std::map<std::string, std::vector<transfer_event>> seen;
    auto evs = events_for(*np.decode, "stream", layers + 2, seen);
    REQUIRE(evs.size() == layers + 2);
    CHECK(landed_order(evs) == std::vector<std::uint32_t>{0, 3, 1, 2});
    for (std::size_t i = 0; i < layers; ++i) {
      CHECK(evs[i].kind == event_kind::layer_landed);
      CHECK(evs[i].layers == layers);
    }
    CHECK(evs[layers].kind == event_kind::completed);
    CHECK(evs[layers + 1].kind == event_kind::released);
    // The prefill has no layer events: only its completed and released ones.
    std::map<std::string, std::vector<transfer_event>> prefill_seen;
    auto pevs = events_for(*np.prefill, "stream", 2, prefill_seen);
    CHECK(pevs.size() == 2);
    CHECK(count_kind(pevs, event_kind::layer_landed) == 0);
    CHECK(detail::handle_state::violations() == np.violations_at_start);
  }
}

TEST_CASE("layers marked ready before the fetch all go when it comes, and a partial fetch hears of every layer") {
  node_pair np{16 * block};
  const std::uint32_t layers = 4, per = 2;
  auto s = np.prefill->send("early", layered_spans(np.src_region, 0, layers, per),
                            in_layers(layers, per));
  for (std::uint32_t i = 0; i < layers; ++i)
    CHECK(np.prefill->layer_ready("early", i).code == errc::none);
  // The decode has layers 0 and 2 (and the first block of layer 1) in its prefix cache: it
  // fetches blocks 3 (layer 1) and 6..7 (layer 3) only.
  transfer_options rest;
  rest.fetch_ranges = {{3, 1}, {6, 2}};
  auto r = np.decode->receive(
    "early", np.peer,
    {{np.dst_region, 3 * block, block}, {np.dst_region, 6 * block, block},
     {np.dst_region, 7 * block, block}},
    rest);
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK_MESSAGE(rr->status == transfer_status::succeeded, rr->message);
  CHECK(rr->bytes == 3 * block);
  CHECK(std::memcmp(&np.dst[3 * block], &np.src[3 * block], block) == 0);
  CHECK(std::memcmp(&np.dst[6 * block], &np.src[6 * block], 2 * block) == 0);
  CHECK(zero(np.dst, 0, 3 * block));
  CHECK(zero(np.dst, 4 * block, 2 * block));
  // Every layer landed (those it fetched nothing of, too) before the terminal result showed.
  CHECK(r.layers_landed() == layers);
  for (std::uint32_t i = 0; i < layers; ++i)
    CHECK(r.wait_layer(i, 0ms));
  std::map<std::string, std::vector<transfer_event>> seen;
  auto evs = events_for(*np.decode, "early", layers + 2, seen);
  auto order = landed_order(evs);
  std::sort(order.begin(), order.end());
  CHECK(order == std::vector<std::uint32_t>{0, 1, 2, 3});
  CHECK(evs[layers].kind == event_kind::completed);
  CHECK(s.wait_released(patience));
}

TEST_CASE("layer_ready and layer_blocks refuse what they cannot do, naming why") {
  node_pair np{16 * block};
  auto spans = layered_spans(np.src_region, 0, 2, 2);
  // At the call: layers that do not add up to the blocks, an empty layer. Nothing is kept: the
  // id is free again.
  transfer_options short_layers;
  short_layers.layer_blocks = {2, 1};
  auto bad = np.prefill->send("layers", spans, short_layers);
  REQUIRE(bad.result());
  CHECK(bad.result()->code == errc::invalid_argument);
  CHECK(bad.result()->message.find("3 blocks") != std::string::npos);
  transfer_options empty_layer;
  empty_layer.layer_blocks = {4, 0};
  auto empty = np.prefill->send("layers", spans, empty_layer);
  REQUIRE(empty.result());
  CHECK(empty.result()->code == errc::invalid_argument);
  CHECK(empty.result()->message.find("layer 1 has no blocks") != std::string::npos);

  auto s = np.prefill->send("layers", spans, in_layers(2, 2));
  CHECK_FALSE(s.result());
  CHECK(np.prefill->layer_ready("nothing", 0).code == errc::unknown_request_id);
  auto past = np.prefill->layer_ready("layers", 2);
  CHECK(past.code == errc::out_of_range);
  CHECK(past.message.find("layer_ready('layers', 2)") != std::string::npos);
  CHECK(np.prefill->layer_ready("layers", 1).code == errc::none);
  auto twice = np.prefill->layer_ready("layers", 1);
  CHECK(twice.code == errc::invalid_argument);
  CHECK(twice.message.find("already") != std::string::npos);
  // A send not offered in layers, and a receive, have no layers to mark.
  auto plain = np.prefill->send("plain", {{np.src_region, 8 * block, block}});
  auto not_layered = np.prefill->layer_ready("plain", 0);
  CHECK(not_layered.code == errc::invalid_argument);
  CHECK(not_layered.message.find("not offered in layers") != std::string::npos);
  auto g = np.decode->receive("waiting", np.peer, {{np.dst_region, 0, block}});
  CHECK(np.decode->layer_ready("waiting", 0).code == errc::unknown_request_id);
  // Once the send has ended, marking is refused and changes nothing.
  CHECK(np.prefill->cancel("layers") == cancel_result::cancelled_before_advertise);
  REQUIRE(s.wait_for(patience));
  auto ended = np.prefill->layer_ready("layers", 0);
  CHECK(ended.code == errc::unknown_request_id);
  CHECK(s.wait_released(patience));
  CHECK(np.prefill->cancel("plain") == cancel_result::cancelled_before_advertise);
  CHECK(np.decode->cancel("waiting") != cancel_result::not_found);
  CHECK(g.wait_released(patience));
  CHECK(detail::handle_state::violations() == np.violations_at_start);
}

TEST_CASE("a layer never marked ready fails both sides at the deadline, and both are released") {
  node_pair np{16 * block};
  auto opts = in_layers(2, 2);
  opts.deadline_ms = 300;
  auto s = np.prefill->send("half", layered_spans(np.src_region, 0, 2, 2), opts);
  auto r = np.decode->receive("half", np.peer, layered_spans(np.dst_region, 0, 2, 2));
  CHECK(np.prefill->layer_ready("half", 0).code == errc::none);
  REQUIRE(r.wait_layer(0, patience));
  auto sr = s.wait_for(patience);
  REQUIRE(sr);
  CHECK(sr->code == errc::timed_out);
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK(rr->status == transfer_status::failed);
  CHECK(rr->code == errc::timed_out);
  CHECK(s.wait_released(patience));
  CHECK(r.wait_released(patience));
  CHECK(r.layers_landed() == 1);
  CHECK_FALSE(r.wait_layer(1, 0ms));
  CHECK(std::memcmp(&np.dst[0], &np.src[0], 2 * block) == 0);
  CHECK(zero(np.dst, 2 * block, 2 * block));
  CHECK(detail::handle_state::violations() == np.violations_at_start);
}

TEST_CASE("a send waiting for its next layer is not a stall, and a receive cancelled between layers ends both sides") {
  // The progress check waits on transfers moving through the node; one waiting for the engine
  // to compute its next layer is not. Three progress deadlines pass (wall-clock, as the check
  // is) without the node calling itself stalled.
  node_config cfg;
  cfg.progress_deadline_ms = 200;
  node_pair np{16 * block, cfg};
  auto s = np.prefill->send("slow", layered_spans(np.src_region, 0, 3, 1), in_layers(3, 1));
  auto r = np.decode->receive("slow", np.peer, layered_spans(np.dst_region, 0, 3, 1));
  CHECK(np.prefill->layer_ready("slow", 0).code == errc::none);
  REQUIRE(r.wait_layer(0, patience));
  auto unhealthy = [](auto& h) { return !h.healthy || h.stalled; };
  CHECK_FALSE(health_until(*np.prefill, unhealthy, 600ms));
  // The decode gives up between layers: both sides end cancelled and released; the layer
  // marked afterwards is refused and nothing more is written.
  CHECK(np.decode->cancel("slow") == cancel_result::cancel_requested_in_flight);
  both_ended(s, r, transfer_status::cancelled);
  CHECK(np.prefill->layer_ready("slow", 1).code == errc::unknown_request_id);
  CHECK(zero(np.dst, block, 2 * block));
  CHECK(np.prefill->health().healthy);
  CHECK(detail::handle_state::violations() == np.violations_at_start);
}

TEST_CASE("a cancel while a layer's puts are in flight waits for them, then ends both sides released") {
  // The second layer's put is held in the prefill's transport.
  transport::fault_rule hold_second;
  hold_second.op = "put";
  hold_second.nth = 2;
  hold_second.action = transport::fault_action::hold;
  auto plan = plan_with(hold_second);
  node_pair np{16 * block, {}, plan};
  auto s = np.prefill->send("held", layered_spans(np.src_region, 0, 3, 1), in_layers(3, 1));
  auto r = np.decode->receive("held", np.peer, layered_spans(np.dst_region, 0, 3, 1));
  for (std::uint32_t i = 0; i < 3; ++i)
    CHECK(np.prefill->layer_ready("held", i).code == errc::none);
  REQUIRE(r.wait_layer(0, patience));
  REQUIRE(plan->wait_held(1, patience));
  CHECK(np.prefill->cancel("held") == cancel_result::cancel_requested_in_flight);
  // Not released while the put may still run; released once the transport answered it.
  CHECK_FALSE(s.released());
  plan->release_held();
  both_ended(s, r, transfer_status::cancelled);
  CHECK(zero(np.dst, 2 * block, block));  // the third layer was never sent
  CHECK(detail::handle_state::violations() == np.violations_at_start);
}

TEST_CASE("a layer-wise offer bound to a decode node fails promptly when that node dies between layers") {
  node_pair np{16 * block};
  auto decode_as_peer = np.prefill->connect("127.0.0.1", np.decode->port());
  REQUIRE_MESSAGE(decode_as_peer, decode_as_peer.error().message);
  auto opts = in_layers(2, 1);
  opts.bound_to = decode_as_peer.value();
  auto s = np.prefill->send("bound", layered_spans(np.src_region, 0, 2, 1), opts);
  auto r = np.decode->receive("bound", np.peer, layered_spans(np.dst_region, 0, 2, 1));
  CHECK(np.prefill->layer_ready("bound", 0).code == errc::none);
  REQUIRE(r.wait_layer(0, patience));
  np.decode->stop(2s);
  auto sr = s.wait_for(patience);
  REQUIRE(sr);
  CHECK(sr->status == transfer_status::failed);
  CHECK_MESSAGE(sr->code == errc::peer_failed, sr->message);
  CHECK(s.wait_released(patience));
  // Marking the layer the dead node will never fetch is refused: the offer is over.
  CHECK(np.prefill->layer_ready("bound", 1).code == errc::unknown_request_id);
  CHECK(detail::handle_state::violations() == np.violations_at_start);
}

}  // namespace kvferry::test
