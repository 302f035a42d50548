// Two real processes over real UCX and CAF networking: the demo (its prefill node is a child
// process) and two standalone `kvferry node` processes. Every byte is verified by the decode
// side; the shm runs assert that shared memory, not TCP, really carried the bytes.
#include "cli/child_process.hpp"
#include "cli/protocol.hpp"
#include "tests/support/test_pki.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <string>

using namespace kvferry::cli;
using namespace std::chrono_literals;

namespace {

// The line as a JSON object; a null object (every field missing) when it is not one.
nlohmann::json parse_object(const std::string& line) {
  auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : nlohmann::json::object();
}

// A field as text: a string's content, other values as JSON ("24", "true", "null"); "" when
// absent. Keeps the checks below short.
std::string json_field(const nlohmann::json& j, const std::string& key) {
  auto it = j.find(key);
  if (it == j.end())
    return {};
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string json_field(const std::string& line, const std::string& key) {
  return json_field(parse_object(line), key);
}

// Runs `kvferry demo --json ...`; returns its JSON line and exit status.
std::pair<std::string, int> run_demo(const std::vector<std::string>& extra) {
  std::vector<std::string> argv{KVFERRY_BINARY, "demo", "--json"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  child_process demo{argv};
  REQUIRE(demo.running());
  auto line = demo.wait_for_line("{", 120s).value_or("");
  auto status = demo.wait(60s);
  REQUIRE(status);
  return {line, *status};
}

bool names_shared_memory(const std::string& transports) {
  return transports.find("posix") != std::string::npos ||
         transports.find("sysv") != std::string::npos || transports.find("cma") != std::string::npos;
}

}  // namespace

TEST_CASE("two processes over UCX tcp move a multi-request workload with every byte verified") {
  auto [json, status] = run_demo({"--transport", "tcp", "--requests", "24", "--layers", "8",
                                  "--block-bytes", "65536"});
  CAPTURE(json);
  CHECK(status == 0);
  CHECK(json_field(json, "requests") == "24");
  CHECK(json_field(json, "failed") == "0");
  CHECK(json_field(json, "verified_bytes") == std::to_string(24ull * 8 * 65536));
  CHECK(json_field(json, "bytes") == std::to_string(24ull * 8 * 65536));
  auto tls = json_field(json, "rma_transports");
  CHECK(tls.find("tcp") != std::string::npos);
  CHECK(!names_shared_memory(tls));
}

TEST_CASE("two processes over UCX shared memory move the workload, and shared memory carried it") {
  auto [json, status] = run_demo({"--transport", "shm", "--requests", "24", "--layers", "8",
                                  "--block-bytes", "65536"});
  CAPTURE(json);
  CHECK(status == 0);
  CHECK(json_field(json, "failed") == "0");
  CHECK(json_field(json, "verified_bytes") == std::to_string(24ull * 8 * 65536));
  // The regression guard for PEER error mode silently dropping shared memory (docs/design.md).
  auto tls = json_field(json, "rma_transports");
  CHECK(names_shared_memory(tls));
  CHECK(tls.find("tcp") == std::string::npos);
}

TEST_CASE("an explicit UCX_TLS=tcp in the environment is honoured by both processes") {
  ::setenv("UCX_TLS", "tcp", 1);
  auto [json, status] = run_demo({"--transport", "auto", "--requests", "8", "--layers", "4"});
  ::unsetenv("UCX_TLS");
  CAPTURE(json);
  CHECK(status == 0);
  CHECK(json_field(json, "verified_bytes") == std::to_string(8ull * 4 * 65536));
  auto tls = json_field(json, "rma_transports");
  CHECK(tls.find("tcp") != std::string::npos);
  CHECK(!names_shared_memory(tls));
}

TEST_CASE("two standalone node processes, engine-owned memory, transfer and verify") {
  child_process prefill{{KVFERRY_BINARY, "node", "--role", "prefill", "--listen", "127.0.0.1:0",
                         "--transport", "tcp", "--requests", "8", "--layers", "4",
                         "--block-bytes", "12288", "--pool", "engine"}};
  REQUIRE(prefill.running());
  auto ready = prefill.wait_for_message<protocol::ready>(60s);
  REQUIRE_MESSAGE(ready, ready.error);
  REQUIRE(ready->port != 0);
  CHECK(ready->role == "prefill");
  auto port = std::to_string(ready->port);
  // The connect must succeed: its bound is for failure only (the default 5 s ran out under TSan
  // on a busy machine).
  child_process decode{{KVFERRY_BINARY, "node", "--role", "decode", "--peer", "127.0.0.1:" + port,
                        "--transport", "tcp", "--requests", "8", "--layers", "4",
                        "--block-bytes", "12288", "--pool", "engine", "--set",
                        "connect_timeout_ms=60000"}};
  REQUIRE(decode.running());
  auto result = decode.wait_for_message<protocol::result>(120s);
  REQUIRE_MESSAGE(result, result.error);
  CHECK(result->succeeded == 8);
  CHECK(result->failed == 0);
  CHECK(result->verified_bytes == 8ull * 4 * 12288);
  CHECK(decode.wait(60s) == 0);
  prefill.send_message(protocol::report_request{});
  auto report = prefill.wait_for_message<protocol::report>(30s);
  REQUIRE_MESSAGE(report, report.error);
  CHECK(report->succeeded == 8);
  CHECK(report->unreleased == 0);
  prefill.close_stdin();
  CHECK(prefill.wait(30s) == 0);
}

// `--set` arguments giving a node process `name`'s certificate from `pki`.
std::vector<std::string> tls_sets(kvferry::testing::test_pki& pki, const std::string& name) {
  auto c = pki.with_tls({}, name);
  return {"--set", "tls_certificate=" + c.tls_certificate, "--set", "tls_key=" + c.tls_key,
          "--set", "tls_ca=" + c.tls_ca};
}

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST_CASE("F18: two node processes with mutual TLS transfer and verify, and another CA's process "
          "is refused") {
  kvferry::testing::test_pki pki, rogue{"rogue-ca"};
  const std::vector<std::string> load{"--transport", "tcp", "--requests", "4", "--layers", "2",
                                      "--block-bytes", "8192"};
  child_process prefill{std::vector<std::string>{KVFERRY_BINARY, "node", "--role", "prefill",
                                                 "--listen", "127.0.0.1:0"} +
                        load + tls_sets(pki, "prefill-0") +
                        std::vector<std::string>{"--set", "tls_allow=decode-0"}};
  REQUIRE(prefill.running());
  auto ready = prefill.wait_for_message<protocol::ready>(60s);
  REQUIRE_MESSAGE(ready, ready.error);
  auto peer = "127.0.0.1:" + std::to_string(ready->port);
  // Same name, another CA: it cannot connect, and says so with a non-zero exit.
  child_process impostor{std::vector<std::string>{KVFERRY_BINARY, "node", "--role", "decode",
                                                  "--peer", peer} +
                         load + tls_sets(rogue, "decode-0")};
  REQUIRE(impostor.running());
  auto impostor_status = impostor.wait(60s);
  REQUIRE(impostor_status);
  CHECK(*impostor_status != 0);
  child_process decode{std::vector<std::string>{KVFERRY_BINARY, "node", "--role", "decode",
                                                "--peer", peer} +
                       load + tls_sets(pki, "decode-0") +
                       // Its connect must succeed: the bound is for failure only.
                       std::vector<std::string>{"--set", "connect_timeout_ms=60000"}};
  REQUIRE(decode.running());
  auto result = decode.wait_for_message<protocol::result>(120s);
  REQUIRE_MESSAGE(result, result.error);
  CHECK(result->succeeded == 4);
  CHECK(result->failed == 0);
  CHECK(result->verified_bytes == 4ull * 2 * 8192);
  CHECK(decode.wait(60s) == 0);
  prefill.close_stdin();
  CHECK(prefill.wait(30s) == 0);
}

TEST_CASE("a node process refuses an invalid configuration with exit status 2") {
  child_process bad{{KVFERRY_BINARY, "node", "--role", "prefill", "--set", "staging_slots=0"}};
  REQUIRE(bad.running());
  CHECK(bad.wait(60s) == 2);
}

TEST_CASE("a node process refuses a config path that is empty or not a regular file") {
  for (const char* path : {"", "/dev/zero", "/tmp"}) {
    CAPTURE(path);
    child_process bad{{KVFERRY_BINARY, "node", "--role", "prefill", "--config", path}};
    REQUIRE(bad.running());
    CHECK(bad.wait(60s) == 2);
  }
}

// A prefill node process offering `requests` transfers that nobody fetches.
std::unique_ptr<child_process> idle_prefill(const std::string& drain_ms) {
  auto p = std::make_unique<child_process>(std::vector<std::string>{
    KVFERRY_BINARY, "node", "--role", "prefill", "--listen", "127.0.0.1:0", "--transport", "tcp",
    "--requests", "4", "--layers", "2", "--block-bytes", "4096", "--set",
    "drain_timeout_ms=" + drain_ms});
  REQUIRE(p->running());
  auto ready = p->wait_for_message<protocol::ready>(60s);
  REQUIRE_MESSAGE(ready, ready.error);
  return p;
}

TEST_CASE("a node process on SIGTERM drains for its drain timeout, reports every request resolved, and exits 0") {
  auto node = idle_prefill("200");
  node->kill_now(SIGTERM);
  // Its 4 offers are never fetched: after the 200 ms drain they end, released, and the report
  // accounts for each. The bounds are for a loaded machine; the drain itself is 200 ms.
  auto report = node->wait_for_message<protocol::report>(30s);
  REQUIRE_MESSAGE(report, report.error);
  CHECK(report->in_flight == 0);
  CHECK(report->succeeded + report->failed + report->cancelled == 4);
  CHECK(report->unreleased == 0);
  CHECK(node->wait(30s) == 0);
}

TEST_CASE("a second signal ends a draining node process at once") {
  auto node = idle_prefill("60000");  // a drain that would take a minute
  auto t0 = std::chrono::steady_clock::now();
  node->kill_now(SIGTERM);
  node->kill_now(SIGINT);  // two different signals: neither is merged into the other
  auto status = node->wait(30s);
  REQUIRE(status);
  CHECK((*status == 128 + SIGINT || *status == 128 + SIGTERM));
  CHECK(std::chrono::steady_clock::now() - t0 < 30s);
}

TEST_CASE("kvferry bench runs every case between two processes and verifies the bytes") {
  // A functional check of the tool only (tiny cases, no limits); figures are never asserted.
  child_process bench{{KVFERRY_BINARY, "bench", "--transport", "tcp", "--sizes", "4096",
                       "--concurrency", "2", "--bytes-per-case", "65536", "--shapes", "2x4KiB",
                       "--small-blocks", "8",
                       "--rate-requests", "50", "--hold", "2000", "--idle-seconds", "0.5",
                       "--verify", "--no-limits", "--json"}};
  REQUIRE(bench.running());
  auto line = bench.wait_for_line("{", 120s).value_or("");
  CAPTURE(line);
  CHECK(bench.wait(60s) == 0);
  auto out = parse_object(line);
  REQUIRE(out.contains("cases"));
  REQUIRE(out["cases"].is_array());
  // Every case: nothing failed, and every byte was verified.
  std::vector<std::string> kinds;
  for (auto& c : out["cases"]) {
    kinds.push_back(json_field(c, "kind"));
    CAPTURE(kinds.back());
    CHECK(json_field(c, "failed") == "0");
    auto bytes = json_field(c, "bytes");
    CHECK(bytes != "0");
    CHECK(json_field(c, "verified_bytes") == bytes);
  }
  // bandwidth (one size, one concurrency), shapes (one), small-blocks, rate
  CHECK(kinds == std::vector<std::string>{"bandwidth", "shapes", "small-blocks", "rate"});
  // The shapes case moved 2 blocks of 4 KiB per request; nixlbench has no figure for it.
  for (auto& c : out["cases"]) {
    if (json_field(c, "kind") != "shapes")
      continue;
    CHECK(json_field(c, "blocks_per_request") == "2");
    CHECK(json_field(c, "block_bytes") == "4096");
    CHECK(json_field(c, "nixlbench_gb_per_s") == "null");
  }
  // The hold case held its requests in flight, measured something, and every one of them
  // resolved after its cancel, with the node healthy throughout.
  auto holds = out.value("hold", nlohmann::json::array());
  REQUIRE(holds.size() == 1);
  auto& hold = holds[0];
  CHECK(json_field(hold, "in_flight") == "2000");
  CHECK(json_field(hold, "stayed_healthy") == "true");
  for (const char* side : {"send", "recv"}) {
    CAPTURE(side);
    auto s = hold.value(side, nlohmann::json::object());
    auto heap = json_field(s, "heap_bytes_per_request");
    auto rss = json_field(s, "rss_bytes_per_request");
    // Heap figures are null under a sanitizer (its allocator keeps no malloc statistics).
    CHECK(((heap != "null" && heap != "0" && !heap.empty()) ||
           (heap == "null" && rss != "0" && !rss.empty())));
    // Nothing of a request stays behind once it ended. A CAF monitor left on a long-lived
    // actor (the transport, the receiver), or a deadline timer still pending, used to keep each
    // ended request's actor storage, about 1.4-2 KiB per request; allocator noise over 2000
    // requests is far below the bound.
    auto retained = json_field(s, "retained_bytes_per_request");
    if (retained != "null") {
      REQUIRE_FALSE(retained.empty());
      CHECK(std::stoll(retained) < 512);
    }
    CHECK(json_field(s, "all_resolved") == "true");
  }
  // The idle case read both processes' CPU time from /proc (the figures are not asserted).
  auto idle = out.value("idle", nlohmann::json::object());
  auto processes = idle.value("processes", nlohmann::json::array());
  REQUIRE(processes.size() == 2);
  CHECK(json_field(processes[0], "role") == "decode");
  CHECK(json_field(processes[1], "role") == "prefill");
  for (auto& p : processes) {
    CHECK(p.value("cpu_percent", nlohmann::json{}).is_number());
    CHECK_FALSE(p.value("threads", nlohmann::json::array()).empty());
  }
}

namespace {

// Runs `kvferry chaos ... --json` and checks the invariants every run must hold; the report.
std::string run_chaos(const std::vector<std::string>& args, const std::string& requests) {
  std::vector<std::string> argv{KVFERRY_BINARY, "chaos", "--requests", requests, "--json"};
  argv.insert(argv.end(), args.begin(), args.end());
  child_process chaos{argv};
  REQUIRE(chaos.running());
  auto json = chaos.wait_for_line("{", 120s).value_or("");
  CAPTURE(json);
  CHECK(chaos.wait(60s) == 0);
  CHECK(json_field(json, "resolved_once") == requests);
  CHECK(json_field(json, "resolved_twice") == "0");
  CHECK(json_field(json, "resolved_never") == "0");
  // Whatever was left unreleased by the kill is exactly what health counts as quarantined.
  CHECK(json_field(json, "not_released") == json_field(json, "quarantined"));
  CHECK(json_field(json, "probes_passed") == "5");
  CHECK(json_field(json, "healthy_after") == "true");
  CHECK(json_field(json, "ok") == "true");
  return json;
}

}  // namespace

TEST_CASE("F16: a burst with random cancels, short deadlines and a peer kill, then idle, then every probe succeeds") {
  run_chaos({"--concurrency", "32", "--kill", "--seed", "16", "--idle-ms", "500", "--transport",
             "tcp"},
            "240");
}

// A peer SIGKILLed in the middle of a shared-memory message wedges the survivor's UCX worker
// (see transport/wedge_detector.hpp); before the engine replaced wedged workers, about one run in
// three of this burst never finished. Two seeds that wedged then, one run each, as two cases: a
// sanitizer build on a busy machine takes about a minute for one. 512 requests still wedge (a
// worker replacement in three of four seeds tried) and touch half the memory 1024 did: 4 s a
// seed instead of 18 (first touch of fresh pages dominated). Under a sanitizer 256 (~215 MiB
// instead of ~430, moved, filled and checked by instrumented code): under TSan with every core
// busy these cases took 61-72 s, and one run took over 120 (24 s to start the two nodes, ~50 s
// for the first 256 requests). The kill mid-burst, the restart and the probes are the same.
void survivor_serves_restart_over_shm(const char* seed) {
  run_chaos({"--concurrency", "16", "--kill", "--seed", seed, "--idle-ms", "500", "--transport",
             "shm"},
            KVFERRY_SANITIZED ? "256" : "512");
}

TEST_CASE("F16 over shared memory: after a peer kill the survivor keeps serving its restart (seed 54)") {
  survivor_serves_restart_over_shm("54");
}

TEST_CASE("F16 over shared memory: after a peer kill the survivor keeps serving its restart (seed 56)") {
  survivor_serves_restart_over_shm("56");
}
