// node_config: everything a node needs to start, with documented defaults. No CAF here.
//
// Sources, lowest to highest precedence: built-in defaults < TOML file < KVFERRY_* environment
// variables < command-line overrides. Every key has the same name in all three:
//   TOML `listen_port = 7000`, environment `KVFERRY_LISTEN_PORT=7000`, CLI `--set listen_port=7000`.
// An invalid value is refused with an error naming the key and the reason. In the TOML file,
// characters beyond ASCII may appear only in strings and comments, and not U+00A1..U+0499,
// U+2C5E..U+3057 (but U+3000) or U+FB26..U+FEFE at all: Debian's toml++ 3.3 cannot read those
// safely, so the file is refused naming the place (environment and --set values may hold them).
//
// Environment: only names starting with KVFERRY_ are looked at (the map may hold the whole
// environment). KVFERRY_CONFIG is the one exception to "every KVFERRY_* name is a key": it names
// the TOML file, and callers (the CLI, an embedding engine) read it and put it into
// config_sources::file themselves; load_node_config skips it. Any other unknown KVFERRY_* name
// is an error, like an unknown key in the file or on the command line.
// Values from the environment and the CLI are strings, parsed strictly: integers are decimal,
// the whole string, within the field's range; no sign, no spaces, no suffixes.
#pragma once

#include "result.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kvferry {

struct node_config {
  std::string node_name = "kvferry";       // name in logs and health; 1 .. 256 bytes
  std::string role = "both";               // "prefill", "decode" or "both"
  std::string listen_host = "127.0.0.1";   // where the node publishes its entry actor
  std::uint16_t listen_port = 0;           // 0: an ephemeral port (read it back from the node)
  std::string transport = "auto";          // UCX transports: "auto", "shm" or "tcp"
  std::uint32_t keepalive_interval_ms = 0; // UCX keepalive; 0 keeps UCX's default
  // What copies staged bytes and reaches memory_kind::cuda regions: "auto" (CUDA device 0 when
  // the build has CUDA and the machine a driver and a device, else the CPU copy engine and no
  // cuda regions), "none" (the CPU engine; cuda regions refused), "cuda:<n>" (that device, or
  // the node does not start), "emulated" (tests and machines without a GPU: cuda regions are
  // host memory that only the CPU copy engine touches, moved exactly as device memory is).
  std::string device = "auto";
  std::uint32_t staging_slots = 4;         // staging buffers in the buffer pool; >= 1
  std::uint64_t staging_slot_bytes = 4u << 20;  // bytes per staging buffer; 4 KiB .. 1 GiB
  std::uint32_t max_blocks_per_request = 65536; // larger requests are refused; >= 1
  std::uint32_t max_fetches_in_flight = 256;  // receives fetching at once; more wait queued; >= 1
  std::uint32_t default_deadline_ms = 30000;  // per-request deadline when the call sets none;
                                            // 0: none. Also bounds a parked fetch. <= 1 day
  std::uint32_t progress_deadline_ms = 30000; // transfers moving, yet none ended and none had a
                                            // step answered for this long: unhealthy (waiting
                                            // for a peer is not moving). 100 .. 1 day
  std::uint32_t quarantine_budget = 1024;   // unreleased requests + poisoned staging slots
                                            // at which the node reports unhealthy; >= 1
  std::uint32_t network_stall_ms = 5000;   // CAF's network thread not running for this long:
                                           // unhealthy (health().network_stalled); 100 .. 600000
  std::uint32_t connect_timeout_ms = 5000; // bound on connect(); 1 .. 600000
  std::uint32_t cancel_timeout_ms = 1000;  // bound on cancel()'s answer; 1 .. 60000
  // Bounds on what peers may make this node hold (each refusal: errc::limit_exceeded).
  std::uint32_t max_request_id_bytes = 256;   // request ids, local and remote; 1 .. 65536
  std::uint32_t max_parked_fetches = 65536;   // fetches waiting for their send(), all peers;
                                              // 1 .. 16777216
  std::uint32_t max_parked_fetches_per_peer = 4096;  // the same per peer node; 1 .. the total
  std::uint32_t max_peers = 4096;  // peers connect() keeps ids for; a new one beyond it forgets
                                   // the least recently used (its id: not_connected); 1 .. 1048576
  std::uint32_t drain_timeout_ms = 5000;   // `kvferry node`: how long a SIGTERM/SIGINT or the
                                           // end of stdin lets transfers finish; 0 .. 600000
  std::uint32_t scheduler_threads = 0;     // threads running the node's actors; 0: one per
                                           // core of the host (at least 2); 0 .. 256
  std::string log_level = "warn";          // trace, debug, info, warn, error, critical, off
  // Mutual TLS on the control channel (CAF's OpenSSL module): all three paths (PEM files) or
  // none. With them the node accepts and connects to only peers whose certificate tls_ca signed,
  // over TLS 1.2 or later. The files are read at start (checked: the key unencrypted and
  // matching, the certificate valid and signed by tls_ca) and again at every connection.
  // Control messages, worker addresses and rkeys are then encrypted; UCX's data path is not.
  std::string tls_certificate;  // this node's certificate (chain), PEM
  std::string tls_key;          // its private key, PEM, unencrypted
  std::string tls_ca;           // the CA certificate(s) peers' certificates must chain to, PEM
  // Peers admitted, comma-separated: a peer's certificate must carry one of these as its
  // subject common name or as a DNS or URI subject alternative name. Empty: any peer tls_ca
  // signed. Needs the three tls_ paths. At most 1024 names of at most 256 bytes.
  std::string tls_allow;
  // With TLS: a connection whose handshake has not completed in this long is closed, and
  // beyond this many incomplete handshakes at once new connections are closed at once.
  std::uint32_t tls_handshake_timeout_ms = 5000;  // 100 .. 600000
  std::uint32_t tls_max_pending_handshakes = 256; // 1 .. 65536
  // What this node's KV blocks are (model, KV layout, dtype, block size, TP rank...): opaque
  // bytes, at most 4096. connect() refuses a peer that declares another, and a node refuses
  // fetches that declare another. Empty matches only empty.
  std::string layout_tag;
  // The operator's HTTP endpoint: "host:port" ("[v6addr]:port" for IPv6; port 0: any free one,
  // read it back with node::metrics_port()). Serves GET /metrics (Prometheus text format) and
  // GET /healthz (200 "ok", or 503 with the reason while the node is unhealthy). Empty: off.
  // Nothing on it changes the node; bind it to an address only operators reach.
  std::string metrics_listen;
};

// The error of a refused configuration: which key, and why.
struct config_error {
  std::string key;     // e.g. "listen_port"
  std::string reason;  // e.g. "must be between 0 and 65535, got 70000"
  // "file:<path>:<line>" (a key in the file), "file:<path>" (the file could not be read or
  // parsed; the reason names line and column), "env:KVFERRY_LISTEN_PORT", "cli", or "" for
  // validate(). load_node_config fills a validation error's source with the source that set
  // the refused value last.
  std::string source;
  // "<key>: <reason> (<source>)"; an empty key (a TOML syntax error) drops "<key>: ", an empty
  // source drops " (<source>)".
  std::string message() const;
};

struct config_sources {
  std::optional<std::string> file;                  // TOML file path; none: skip
  std::map<std::string, std::string> environment;   // name -> value; usually from environ
  std::vector<std::pair<std::string, std::string>> overrides;  // key -> value, from the CLI
};

// Every key, in documentation order (the names used in the file and with --set).
std::vector<std::string> node_config_keys();

// Reads the KVFERRY_* variables of the process environment into a map (name -> value).
std::map<std::string, std::string> kvferry_environment();

// Applies the sources over the defaults, then validates. Unknown keys are errors too.
// On failure returns errc::invalid_argument with config_error::message() as the message.
result<node_config> load_node_config(const config_sources& sources, config_error* error = nullptr);

// tls_allow as a list: split at commas, blanks around each name dropped, empty names dropped.
std::vector<std::string> tls_allow_list(const node_config& config);

// True when the three tls_ paths are set (validate() refuses one or two).
bool tls_enabled(const node_config& config);

// Splits "host:port" (or "[v6addr]:port") into host (brackets removed) and port (decimal,
// 0 .. 65535). False, leaving both untouched, when the text is not of that shape.
bool parse_host_port(const std::string& text, std::string& host, std::uint16_t& port);

// Checks every field; returns the first problem.
std::optional<config_error> validate(const node_config& config);

}  // namespace kvferry
