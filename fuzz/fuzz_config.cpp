// fuzz_config: the configuration loader (include/kvferry/config.hpp, config/node_config.cpp) over
// all three of its sources at once.
//
// Input: TOML file text, a NUL byte, environment lines "NAME=VALUE", a NUL byte, override lines
// "key=value" (lines split on '\n', name and value on the first '='; missing parts: empty).
// The TOML part is always given as the file (an in-memory file: memfd, read through
// /proc/self/fd/N; load_node_config has no in-memory entry point). toml++ is compiled in
// header-only (see fuzz/CMakeLists.txt). toml++ 3.3.0 reaches __builtin_unreachable for some
// code points outside strings (fuzz/crashes/fuzz_config-toml-unreachable*.bin); the loader
// refuses bytes beyond ASCII there before toml++ sees the text, so the text goes in unchanged.
// Checks, beyond the sanitizers:
//   - a success is a config that validate() accepts; a failure is errc::invalid_argument with a
//     non-empty message equal to the config_error's message();
//   - a loaded config, written back as --set overrides (and, separately, as KVFERRY_* variables),
//     loads to the same config.
#include "fuzz/fuzz_check.hpp"
#include "kvferry/config.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

using namespace kvferry;

namespace {

constexpr const char* kFuzzTarget = "fuzz_config";

const std::string& toml_path(const std::string_view text) {
  static int fd = [] {
    int f = memfd_create("kvferry-fuzz.toml", 0);
    if (f < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    return f;
  }();
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (ftruncate(fd, 0) != 0 ||
      pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    std::perror("memfd write");
    std::abort();
  }
  return path;
}

std::vector<std::pair<std::string, std::string>> split_lines(std::string_view text) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!text.empty()) {
    auto nl = text.find('\n');
    auto line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    auto eq = line.find('=');
    if (eq == std::string_view::npos)
      out.emplace_back(std::string(line), std::string());
    else
      out.emplace_back(std::string(line.substr(0, eq)), std::string(line.substr(eq + 1)));
  }
  return out;
}

// Every field, as the string a --set override takes, in the order of node_config_keys(). A key
// added to node_config without being added here switches the round-trip checks off (with a
// warning) instead of failing: the load checks still run.
std::vector<std::pair<std::string, std::string>> as_overrides(const node_config& c) {
  auto n = [](auto v) { return std::to_string(v); };
  return {
    {"node_name", c.node_name},
    {"role", c.role},
    {"listen_host", c.listen_host},
    {"listen_port", n(c.listen_port)},
    {"transport", c.transport},
    {"keepalive_interval_ms", n(c.keepalive_interval_ms)},
    {"device", c.device},
    {"staging_slots", n(c.staging_slots)},
    {"staging_slot_bytes", n(c.staging_slot_bytes)},
    {"max_blocks_per_request", n(c.max_blocks_per_request)},
    {"max_fetches_in_flight", n(c.max_fetches_in_flight)},
    {"default_deadline_ms", n(c.default_deadline_ms)},
    {"progress_deadline_ms", n(c.progress_deadline_ms)},
    {"quarantine_budget", n(c.quarantine_budget)},
    {"network_stall_ms", n(c.network_stall_ms)},
    {"connect_timeout_ms", n(c.connect_timeout_ms)},
    {"cancel_timeout_ms", n(c.cancel_timeout_ms)},
    {"max_request_id_bytes", n(c.max_request_id_bytes)},
    {"max_parked_fetches", n(c.max_parked_fetches)},
    {"max_parked_fetches_per_peer", n(c.max_parked_fetches_per_peer)},
    {"max_peers", n(c.max_peers)},
    {"drain_timeout_ms", n(c.drain_timeout_ms)},
    {"scheduler_threads", n(c.scheduler_threads)},
    {"log_level", c.log_level},
    {"tls_certificate", c.tls_certificate},
    {"tls_key", c.tls_key},
    {"tls_ca", c.tls_ca},
    {"tls_allow", c.tls_allow},
    {"tls_handshake_timeout_ms", n(c.tls_handshake_timeout_ms)},
    {"tls_max_pending_handshakes", n(c.tls_max_pending_handshakes)},
    {"layout_tag", c.layout_tag},
  };
}

bool same(const node_config& a, const node_config& b) {
  return as_overrides(a) == as_overrides(b);
}

std::string env_name(const std::string& key) {
  std::string out = "KVFERRY_";
  for (char ch : key)
    out += static_cast<char>(ch >= 'a' && ch <= 'z' ? ch - 'a' + 'A' : ch);
  return out;
}

void check_outcome(const result<node_config>& r, const config_error& e) {
  if (r) {
    FUZZ_CHECK(!validate(r.value()).has_value());
  } else {
    FUZZ_CHECK(r.error().code == errc::invalid_argument);
    FUZZ_CHECK(!r.error().message.empty());
    FUZZ_CHECK(r.error().message == e.message());
    FUZZ_CHECK(!e.reason.empty());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto keys = node_config_keys();
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto cut1 = in.find('\0');
  auto toml = in.substr(0, cut1);
  std::string_view env_text, set_text;
  if (cut1 != std::string_view::npos) {
    auto rest = in.substr(cut1 + 1);
    auto cut2 = rest.find('\0');
    env_text = rest.substr(0, cut2);
    if (cut2 != std::string_view::npos)
      set_text = rest.substr(cut2 + 1);
  }
  config_sources sources;
  sources.file = toml_path(toml);
  for (auto& [name, value] : split_lines(env_text))
    sources.environment[name] = value;  // a map, as an environment: the last one wins
  sources.overrides = split_lines(set_text);

  config_error error;
  auto loaded = load_node_config(sources, &error);
  check_outcome(loaded, error);
  if (!loaded)
    return 0;
  const auto& config = loaded.value();
  static const bool fields_known = [] {
    auto listed = as_overrides(node_config{});
    bool same_keys = listed.size() == keys.size();
    for (std::size_t i = 0; same_keys && i < keys.size(); ++i)
      same_keys = listed[i].first == keys[i];
    if (!same_keys)
      std::fprintf(stderr, "fuzz_config: node_config_keys() changed; update as_overrides() "
                           "(round-trip checks off)\n");
    return same_keys;
  }();
  if (!fields_known)
    return 0;

  // Written back as overrides: the same config.
  config_sources by_set;
  by_set.overrides = as_overrides(config);
  config_error e2;
  auto again = load_node_config(by_set, &e2);
  check_outcome(again, e2);
  FUZZ_CHECK(again && same(again.value(), config));

  // Written back as the environment: the same config.
  config_sources by_env;
  for (auto& [key, value] : as_overrides(config))
    by_env.environment[env_name(key)] = value;
  config_error e3;
  auto from_env = load_node_config(by_env, &e3);
  check_outcome(from_env, e3);
  FUZZ_CHECK(from_env && same(from_env.value(), config));
  return 0;
}
