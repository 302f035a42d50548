// node_config: defaults, precedence file < environment < CLI, strict parsing, validation.
#include "kvferry/config.hpp"

#include <doctest/doctest.h>

#include <chrono>

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

namespace {

using kvferry::config_error;
using kvferry::config_sources;
using kvferry::errc;
using kvferry::load_node_config;
using kvferry::node_config;
using kvferry::parse_host_port;

// A TOML file in the temp directory, removed when the test ends.
class temp_toml {
 public:
  explicit temp_toml(const std::string& text) {
    static std::atomic<int> counter{0};
    path_ = (std::filesystem::temp_directory_path() /
             ("kvferry_config_test_" + std::to_string(::getpid()) + "_" +
              std::to_string(counter++) + ".toml"))
                .string();
    std::ofstream(path_) << text;
  }
  ~temp_toml() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  temp_toml(const temp_toml&) = delete;
  temp_toml& operator=(const temp_toml&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Loads and expects a refusal; returns the error.
config_error refused(const config_sources& sources) {
  config_error error;
  auto loaded = load_node_config(sources, &error);
  REQUIRE_FALSE(loaded.has_value());
  CHECK(loaded.error().code == errc::invalid_argument);
  CHECK(loaded.error().message == error.message());
  return error;
}

config_sources cli(const std::string& key, const std::string& value) {
  config_sources s;
  s.overrides.emplace_back(key, value);
  return s;
}

config_sources env(const std::string& name, const std::string& value) {
  config_sources s;
  s.environment[name] = value;
  return s;
}

void check_same(const node_config& a, const node_config& b) {
  CHECK(a.node_name == b.node_name);
  CHECK(a.role == b.role);
  CHECK(a.listen_host == b.listen_host);
  CHECK(a.listen_port == b.listen_port);
  CHECK(a.transport == b.transport);
  CHECK(a.keepalive_interval_ms == b.keepalive_interval_ms);
  CHECK(a.device == b.device);
  CHECK(a.staging_slots == b.staging_slots);
  CHECK(a.staging_slot_bytes == b.staging_slot_bytes);
  CHECK(a.max_blocks_per_request == b.max_blocks_per_request);
  CHECK(a.connect_timeout_ms == b.connect_timeout_ms);
  CHECK(a.cancel_timeout_ms == b.cancel_timeout_ms);
  CHECK(a.log_level == b.log_level);
  CHECK(a.layout_tag == b.layout_tag);
  CHECK(a.scheduler_threads == b.scheduler_threads);
  CHECK(a.max_request_id_bytes == b.max_request_id_bytes);
  CHECK(a.max_parked_fetches == b.max_parked_fetches);
  CHECK(a.max_parked_fetches_per_peer == b.max_parked_fetches_per_peer);
  CHECK(a.max_peers == b.max_peers);
  CHECK(a.drain_timeout_ms == b.drain_timeout_ms);
  CHECK(a.tls_certificate == b.tls_certificate);
  CHECK(a.tls_key == b.tls_key);
  CHECK(a.tls_ca == b.tls_ca);
  CHECK(a.tls_allow == b.tls_allow);
  CHECK(a.tls_handshake_timeout_ms == b.tls_handshake_timeout_ms);
  CHECK(a.tls_max_pending_handshakes == b.tls_max_pending_handshakes);
  CHECK(a.network_stall_ms == b.network_stall_ms);
  CHECK(a.metrics_listen == b.metrics_listen);
}

}  // namespace

TEST_CASE("the built-in defaults are valid") {
  CHECK_FALSE(kvferry::validate(node_config{}).has_value());
  auto loaded = load_node_config(config_sources{});
  REQUIRE(loaded.has_value());
  check_same(*loaded, node_config{});
}

TEST_CASE("the file overrides the defaults, the environment the file, and the CLI both") {
  temp_toml file(
      "node_name = \"from-file\"\n"
      "listen_port = 7001\n"
      "staging_slots = 8\n"
      "log_level = \"info\"\n");
  config_sources s;
  s.file = file.path();
  s.environment["KVFERRY_LISTEN_PORT"] = "7002";
  s.environment["KVFERRY_STAGING_SLOTS"] = "16";
  s.overrides.emplace_back("staging_slots", "32");

  auto loaded = load_node_config(s);
  REQUIRE(loaded.has_value());
  CHECK(loaded->node_name == "from-file");  // file only
  CHECK(loaded->log_level == "info");       // file only
  CHECK(loaded->listen_port == 7002);       // environment beats file
  CHECK(loaded->staging_slots == 32);       // CLI beats environment and file
  CHECK(loaded->role == "both");            // untouched default
}

TEST_CASE("a later CLI override of the same key wins") {
  config_sources s;
  s.overrides = {{"listen_port", "1"}, {"listen_port", "2"}};
  auto loaded = load_node_config(s);
  REQUIRE(loaded.has_value());
  CHECK(loaded->listen_port == 2);
}

TEST_CASE("port 70000 is refused naming listen_port from every source") {
  auto e = refused(cli("listen_port", "70000"));
  CHECK(e.key == "listen_port");
  CHECK(e.source == "cli");
  CHECK(contains(e.reason, "65535"));
  CHECK(e.message() == "listen_port: must be between 0 and 65535, got 70000 (cli)");

  e = refused(env("KVFERRY_LISTEN_PORT", "70000"));
  CHECK(e.key == "listen_port");
  CHECK(e.source == "env:KVFERRY_LISTEN_PORT");

  temp_toml file("listen_port = 70000\n");
  config_sources s;
  s.file = file.path();
  e = refused(s);
  CHECK(e.key == "listen_port");
  CHECK(e.source == "file:" + file.path() + ":1");
}

TEST_CASE("role banana is refused naming role and the source that set it") {
  auto e = refused(cli("role", "banana"));
  CHECK(e.key == "role");
  CHECK(contains(e.reason, "banana"));
  CHECK(contains(e.reason, "prefill"));
  CHECK(e.source == "cli");
}

TEST_CASE("zero staging slots are refused naming staging_slots") {
  auto e = refused(env("KVFERRY_STAGING_SLOTS", "0"));
  CHECK(e.key == "staging_slots");
  CHECK(e.source == "env:KVFERRY_STAGING_SLOTS");
  CHECK(contains(e.message(), "staging_slots: "));
}

TEST_CASE("a number with trailing junk is refused naming the key") {
  auto e = refused(cli("connect_timeout_ms", "12x"));
  CHECK(e.key == "connect_timeout_ms");
  CHECK(contains(e.reason, "12x"));
}

TEST_CASE("integers from strings are parsed strictly") {
  for (const char* bad : {"", " 12", "12 ", "+12", "-1", "-", "0x10", "1e3", "1.5", "twelve"}) {
    CAPTURE(bad);
    auto e = refused(cli("staging_slots", bad));
    CHECK(e.key == "staging_slots");
  }
  auto e = refused(cli("staging_slot_bytes", "99999999999999999999999"));
  CHECK(e.key == "staging_slot_bytes");
  e = refused(cli("staging_slots", "4294967296"));  // one past uint32
  CHECK(contains(e.reason, "4294967295"));
  auto ok = load_node_config(cli("staging_slots", "0012"));
  REQUIRE(ok.has_value());
  CHECK(ok->staging_slots == 12);
}

TEST_CASE("a negative TOML integer is refused for an unsigned key") {
  temp_toml file("cancel_timeout_ms = -5\n");
  config_sources s;
  s.file = file.path();
  auto e = refused(s);
  CHECK(e.key == "cancel_timeout_ms");
  CHECK(contains(e.reason, "-5"));
}

TEST_CASE("validation refuses every out-of-range value naming its key") {
  struct bad_case {
    const char* key;
    std::string value;
  };
  const bad_case cases[] = {
      {"node_name", ""},
      {"role", "PREFILL"},
      {"listen_host", ""},
      {"transport", "rdma"},
      {"staging_slots", "4097"},
      {"staging_slot_bytes", "4095"},
      {"staging_slot_bytes", "1073741825"},
      {"max_blocks_per_request", "0"},
      {"max_fetches_in_flight", "0"},
      {"max_fetches_in_flight", "1048577"},
      {"default_deadline_ms", "86400001"},
      {"progress_deadline_ms", "99"},
      {"quarantine_budget", "0"},
      {"connect_timeout_ms", "0"},
      {"connect_timeout_ms", "600001"},
      {"cancel_timeout_ms", "0"},
      {"cancel_timeout_ms", "60001"},
      {"log_level", "verbose"},
      {"layout_tag", std::string(4097, 'x')},
      {"scheduler_threads", "257"},
      {"node_name", std::string(257, 'n')},
      {"max_request_id_bytes", "0"},
      {"max_request_id_bytes", "65537"},
      {"max_parked_fetches", "0"},
      {"max_parked_fetches", "16777217"},
      {"max_parked_fetches_per_peer", "0"},
      {"max_parked_fetches_per_peer", "65537"},  // more than max_parked_fetches (65536)
      {"max_peers", "0"},
      {"max_peers", "1048577"},
      {"drain_timeout_ms", "600001"},
      {"network_stall_ms", "99"},
      {"network_stall_ms", "600001"},
      {"tls_handshake_timeout_ms", "99"},
      {"tls_max_pending_handshakes", "0"},
      {"tls_max_pending_handshakes", "65537"},
      {"metrics_listen", "9464"},
      {"metrics_listen", "127.0.0.1:"},
      {"metrics_listen", ":9464"},
      {"metrics_listen", "127.0.0.1:65536"},
      {"metrics_listen", "127.0.0.1:94x"},
      {"metrics_listen", "::1:9464"},
      {"metrics_listen", "[]:9464"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.key);
    CAPTURE(c.value);
    auto e = refused(cli(c.key, c.value));
    CHECK(e.key == c.key);
    CHECK(e.source == "cli");
  }
}

TEST_CASE("the edges of every range are accepted") {
  config_sources s;
  s.overrides = {{"staging_slots", "1"},           {"staging_slot_bytes", "1073741824"},
                 {"max_blocks_per_request", "1"},  {"connect_timeout_ms", "600000"},
                 {"cancel_timeout_ms", "60000"},   {"listen_port", "65535"},
                 {"keepalive_interval_ms", "0"},   {"log_level", "off"},
                 {"transport", "tcp"},             {"role", "decode"},
                 {"max_peers", "1048576"}};
  auto loaded = load_node_config(s);
  REQUIRE(loaded.has_value());
  CHECK(loaded->staging_slot_bytes == (std::uint64_t{1} << 30));
  s.overrides = {{"staging_slots", "4096"}, {"staging_slot_bytes", "4096"},
                 {"connect_timeout_ms", "1"}, {"cancel_timeout_ms", "1"}, {"max_peers", "1"}};
  CHECK(load_node_config(s).has_value());
}

TEST_CASE("device: auto, none, emulated or cuda:<n>, and nothing else") {
  for (const char* good : {"auto", "none", "emulated", "cuda:0", "cuda:7", "cuda:1023"}) {
    config_sources s;
    s.overrides = {{"device", good}};
    auto loaded = load_node_config(s);
    REQUIRE_MESSAGE(loaded.has_value(), good);
    CHECK(loaded->device == good);
  }
  for (const char* bad : {"", "cuda", "cuda:", "cuda:-1", "cuda:x", "cuda:12345", "gpu", "AUTO",
                          "cuda:0 "}) {
    config_sources s;
    s.overrides = {{"device", bad}};
    config_error e;
    auto loaded = load_node_config(s, &e);
    REQUIRE_MESSAGE(!loaded.has_value(), bad);
    CHECK(e.key == "device");
    CHECK(e.reason.find(std::string{"got \""} + bad + "\"") != std::string::npos);
  }
}

TEST_CASE("host:port splits names, IPv4 and bracketed IPv6 addresses, and nothing else") {
  std::string host = "unchanged";
  std::uint16_t port = 1;
  CHECK(parse_host_port("127.0.0.1:0", host, port));
  CHECK(host == "127.0.0.1");
  CHECK(port == 0);
  CHECK(parse_host_port("[::1]:9464", host, port));
  CHECK(host == "::1");
  CHECK(port == 9464);
  CHECK(parse_host_port("metrics.local:65535", host, port));
  CHECK(host == "metrics.local");
  CHECK(port == 65535);
  for (const char* bad : {"", ":", "host", "host:", ":1", "host:-1", "host:1x", "host:000065536",
                          "::1:80", "[::1:80", "[]:80", "host: 80"}) {
    CAPTURE(bad);
    CHECK(!parse_host_port(bad, host, port));
    CHECK(host == "metrics.local");
    CHECK(port == 65535);
  }
  auto ok = kvferry::load_node_config(cli("metrics_listen", "[::1]:0"));
  REQUIRE(ok);
  CHECK(ok.value().metrics_listen == "[::1]:0");
}

TEST_CASE("validate alone reports no source") {
  node_config c;
  c.role = "banana";
  auto e = kvferry::validate(c);
  REQUIRE(e.has_value());
  CHECK(e->key == "role");
  CHECK(e->source.empty());
  CHECK(e->message() == "role: must be one of prefill, decode, both, got \"banana\"");
}

TEST_CASE("an unknown key in the file is refused naming it") {
  temp_toml file("listen_port = 1\nlisten_prot = 7000\n");
  config_sources s;
  s.file = file.path();
  auto e = refused(s);
  CHECK(e.key == "listen_prot");
  CHECK(e.source == "file:" + file.path() + ":2");
  CHECK(contains(e.message(), "listen_prot"));
}

TEST_CASE("a TOML table is an unknown key, not a namespace") {
  temp_toml file("[node]\nlisten_port = 1\n");
  config_sources s;
  s.file = file.path();
  CHECK(refused(s).key == "node");
}

TEST_CASE("an unknown KVFERRY_ environment variable is refused naming it") {
  auto e = refused(env("KVFERRY_LISTEN_PROT", "7000"));
  CHECK(e.key == "KVFERRY_LISTEN_PROT");
  CHECK(e.source == "env:KVFERRY_LISTEN_PROT");
}

TEST_CASE("KVFERRY_CONFIG and variables without the prefix are left to others") {
  config_sources s;
  s.environment["KVFERRY_CONFIG"] = "/nonexistent/kvferry.toml";
  s.environment["PATH"] = "/usr/bin";
  s.environment["kvferry_listen_port"] = "banana";  // case matters: not ours
  auto loaded = load_node_config(s);
  REQUIRE(loaded.has_value());
  check_same(*loaded, node_config{});
}

TEST_CASE("an unknown key on the command line is refused naming it") {
  auto e = refused(cli("stagingslots", "3"));
  CHECK(e.key == "stagingslots");
  CHECK(e.source == "cli");
  CHECK(e.message() == "stagingslots: unknown key (cli)");
  CHECK(refused(cli("LISTEN_PORT", "3")).key == "LISTEN_PORT");  // keys are lower case
}

TEST_CASE("a TOML syntax error names the file and the line") {
  temp_toml file("node_name = \"a\"\nrole = \"decode\"\nlisten_port = = 3\n");
  config_sources s;
  s.file = file.path();
  auto e = refused(s);
  CHECK(e.key.empty());
  CHECK(e.source == "file:" + file.path());
  CHECK(contains(e.reason, "line 3"));
  CHECK(contains(e.message(), file.path()));
  CHECK(contains(e.message(), "line 3"));
}

TEST_CASE("a missing config file is refused naming the file") {
  config_sources s;
  s.file = "/nonexistent/dir/kvferry.toml";
  auto e = refused(s);
  CHECK(contains(e.message(), "/nonexistent/dir/kvferry.toml"));
}

TEST_CASE("a config path that is empty, a directory or a device is refused naming it") {
  for (std::string path : {std::string{}, std::string{"/tmp"}, std::string{"/dev/zero"}}) {
    CAPTURE(path);
    config_sources s;
    s.file = path;
    auto e = refused(s);
    CHECK(e.key.empty());
    CHECK(e.source == "file:" + path);
    if (path.empty())
      CHECK(contains(e.reason, "path is empty"));
    else
      CHECK(contains(e.reason, "'" + path + "' is not a regular file"));
  }
}

TEST_CASE("a staging reservation beyond the machine's physical memory is refused at once, naming both keys") {
  // 4096 slots of 1 GiB: 4 TiB, more than any machine this runs on. Each value alone is valid.
  auto t0 = std::chrono::steady_clock::now();
  config_sources s;
  s.overrides = {{"staging_slots", "4096"}, {"staging_slot_bytes", "1073741824"}};
  auto e = refused(s);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds{5});
  CHECK(e.key == "staging_slots");
  CHECK(contains(e.reason, "staging_slot_bytes"));
  CHECK(contains(e.reason, "physical memory"));
}

TEST_CASE("a value of the wrong TOML type names the key and the expected type") {
  temp_toml file("listen_port = \"7000\"\nnode_name = 5\n");
  config_sources s;
  s.file = file.path();
  auto e = refused(s);  // keys are visited in name order: listen_port first
  CHECK(e.key == "listen_port");
  CHECK(contains(e.reason, "expected an integer"));
  CHECK(contains(e.reason, "string"));

  temp_toml file2("node_name = 5\n");
  s.file = file2.path();
  e = refused(s);
  CHECK(e.key == "node_name");
  CHECK(contains(e.reason, "expected a string"));

  temp_toml file3("staging_slots = 4.0\n");
  s.file = file3.path();
  CHECK(contains(refused(s).reason, "floating-point"));
}

TEST_CASE("the example file documents every key and loads to the defaults") {
  std::ifstream in(KVFERRY_EXAMPLE_TOML);
  REQUIRE(in.good());
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const auto& key : kvferry::node_config_keys()) {
    CAPTURE(key);
    CHECK(contains(text, "\n" + key + " = "));
  }
  config_sources s;
  s.file = KVFERRY_EXAMPLE_TOML;
  auto loaded = load_node_config(s);
  REQUIRE(loaded.has_value());
  check_same(*loaded, node_config{});
}

TEST_CASE("every key can be set from the environment by its upper-case name") {
  config_sources s;
  for (const auto& key : kvferry::node_config_keys()) {
    std::string name = "KVFERRY_";
    for (char ch : key) name += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    // Refused for every key: unparsable or invalid when empty; a layout tag may be empty, not
    // longer than 4096 bytes; a TLS key may be empty, not set alone.
    s.environment[name] = key == "layout_tag"                  ? std::string(4097, 't')
                          : key.rfind("tls_", 0) == 0 ||
                              key == "metrics_listen" ? "x"
                                                      : "";
    CAPTURE(name);
    auto e = refused(s);
    CHECK(e.key == key);
    CHECK(e.source == "env:" + name);
    s.environment.erase(name);
  }
}

TEST_CASE("kvferry_environment reads only KVFERRY_ variables of the process") {
  ::setenv("KVFERRY_TEST_ONLY_VARIABLE", "a=b", 1);
  auto vars = kvferry::kvferry_environment();
  ::unsetenv("KVFERRY_TEST_ONLY_VARIABLE");
  CHECK(vars.at("KVFERRY_TEST_ONLY_VARIABLE") == "a=b");
  for (const auto& [name, value] : vars) CHECK(name.rfind("KVFERRY_", 0) == 0);
}

TEST_CASE("TLS keys go together, and tls_allow needs them") {
  config_sources s;
  s.overrides = {{"tls_certificate", "node.pem"}, {"tls_ca", "ca.pem"}};
  auto e = refused(s);
  CHECK(e.key == "tls_certificate");
  CHECK(contains(e.reason, "tls_key not"));
  s.overrides = {{"tls_key", "node.key"}};
  e = refused(s);
  CHECK(e.key == "tls_key");
  CHECK(contains(e.reason, "tls_certificate and tls_ca not"));
  s.overrides = {{"tls_allow", "decode-0"}};
  e = refused(s);
  CHECK(e.key == "tls_allow");
  CHECK(contains(e.reason, "needs TLS"));
  // Validation does not read the files: the node does, at start.
  s.overrides = {{"tls_certificate", "node.pem"}, {"tls_key", "node.key"}, {"tls_ca", "ca.pem"},
                 {"tls_allow", " decode-0 ,, decode-1,"}};
  auto loaded = load_node_config(s);
  REQUIRE(loaded.has_value());
  CHECK(kvferry::tls_enabled(*loaded));
  CHECK(kvferry::tls_allow_list(*loaded) == std::vector<std::string>{"decode-0", "decode-1"});
  CHECK_FALSE(kvferry::tls_enabled(node_config{}));
}

TEST_CASE("tls_allow is bounded in names and in name length") {
  config_sources s;
  s.overrides = {{"tls_certificate", "n.pem"}, {"tls_key", "n.key"}, {"tls_ca", "ca.pem"}};
  std::string many;
  for (int i = 0; i < 1025; ++i) many += "n" + std::to_string(i) + ",";
  s.overrides.emplace_back("tls_allow", many);
  auto e = refused(s);
  CHECK(e.key == "tls_allow");
  CHECK(contains(e.reason, "at most 1024"));
  s.overrides.back().second = std::string(257, 'x');
  e = refused(s);
  CHECK(e.key == "tls_allow");
  CHECK(contains(e.reason, "at most 256 bytes"));
}

namespace {

// Writes `text` to a fresh file and loads it; the refusal, or an empty config_error.
config_error load_text(const std::string& text) {
  char path[] = "/tmp/kvferry-config-XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  ::close(fd);
  config_sources s;
  s.file = path;
  config_error e;
  auto loaded = load_node_config(s, &e);
  ::unlink(path);
  return loaded ? config_error{} : e;
}

}  // namespace

TEST_CASE("bytes beyond ASCII outside strings and comments are refused with their place, before "
          "the TOML parser sees them") {
  // toml++ 3.3 reaches __builtin_unreachable on this one (fuzz/crashes).
  auto e = load_text("listen_port\xC2\xA1 = 1\n");
  CHECK(contains(e.reason, "line 1, column 12"));
  CHECK(contains(e.reason, "beyond ASCII"));
  e = load_text("node_name = \"a\"\nrole = \"decode\" \xE2\x80\x83\n");
  CHECK(contains(e.reason, "line 2, column 17"));
  // A quote inside a bare value opens no string (toml++ reads on: fuzz/crashes, -3).
  e = load_text("#mment\nnoame = 5e9\\t0\"\"\"-03-0\xCF\xAB\xCF\xCFt \n");
  CHECK_MESSAGE(contains(e.reason, "line 2, column 23"), e.reason);
  // After a backslash in a string (an escape, or a line-ending backslash and its blanks), where
  // toml++ also asks (fuzz/crashes, -4).
  e = load_text("layout_tag = \"\"\"a\\ \n  \xEF\xB3\xBF\"\"\"\n");
  CHECK_MESSAGE(contains(e.reason, "a backslash before a byte beyond ASCII"), e.reason);
  e = load_text("node_name = \"a\\\xC2\xA1\"\n");
  CHECK_MESSAGE(contains(e.reason, "line 1, column 15"), e.reason);
  // In strings (every kind), quoted keys and comments they are fine (U+20AC, U+65E5)...
  e = load_text("# \xE2\x82\xAC\nnode_name = \"x\xE2\x82\xAC \\\" \xE6\x97\xA5\"\n"
                "layout_tag = '''x\xE6\x97\xA5\n\xE2\x82\xAC'''\n"
                "\"log_level\" = 'warn' # \xE6\x97\xA5\n");
  CHECK_MESSAGE(e.reason.empty(), e.reason);
  e = load_text("layout_tag = \"\"\"a\xE2\x82\xAC\"\"\"\"\"\nnode_name = '\xE6\x97\xA5'\n");
  CHECK_MESSAGE(e.reason.empty(), e.reason);
  // ...except the code points toml++ 3.3 cannot read anywhere (fuzz/crashes, -5): U+00E9 too.
  e = load_text("node_name = \"caf\xC3\xA9\"\n");
  CHECK_MESSAGE(contains(e.reason, "line 1, column 17: U+00E9 is a character the TOML parser"),
                e.reason);
  e = load_text("list0 =1111111MMMM=====\'Z\xEF\xB7\xBF==\n");
  CHECK_MESSAGE(contains(e.reason, "U+FDFF"), e.reason);
}
