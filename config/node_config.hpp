// node_config: everything a node needs to start, with documented defaults. No CAF here.
//
// Sources, lowest to highest precedence: built-in defaults < TOML file < KVFERRY_* environment
// variables < command-line overrides. Every key has the same name in all three:
//   TOML `listen_port = 7000`, environment `KVFERRY_LISTEN_PORT=7000`, CLI `--set listen_port=7000`.
// An invalid value is refused with an error naming the key and the reason.
#pragma once

#include "transport/result.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kvferry {

struct node_config {
  std::string node_name = "kvferry";       // name in logs and health; non-empty
  std::string role = "both";               // "prefill", "decode" or "both"
  std::string listen_host = "127.0.0.1";   // where the node publishes its entry actor
  std::uint16_t listen_port = 0;           // 0: an ephemeral port (read it back from the node)
  std::string transport = "auto";          // UCX transports: "auto", "shm" or "tcp"
  std::uint32_t keepalive_interval_ms = 0; // UCX keepalive; 0 keeps UCX's default
  std::uint32_t staging_slots = 4;         // staging buffers in the buffer pool; >= 1
  std::uint64_t staging_slot_bytes = 4u << 20;  // bytes per staging buffer; 4 KiB .. 1 GiB
  std::uint32_t max_blocks_per_request = 65536; // larger requests are refused; >= 1
  std::uint32_t connect_timeout_ms = 5000; // bound on connect(); 1 .. 600000
  std::uint32_t cancel_timeout_ms = 1000;  // bound on cancel()'s answer; 1 .. 60000
  std::string log_level = "warn";          // trace, debug, info, warn, error, critical, off
};

// The error of a refused configuration: which key, and why.
struct config_error {
  std::string key;     // e.g. "listen_port"
  std::string reason;  // e.g. "must be between 0 and 65535, got 70000"
  std::string source;  // "file:<path>", "env:KVFERRY_LISTEN_PORT", "cli" or "" (validation)
  std::string message() const;  // "<key>: <reason> (<source>)"
};

struct config_sources {
  std::optional<std::string> file;                  // TOML file path; none: skip
  std::map<std::string, std::string> environment;   // name -> value; usually from environ
  std::vector<std::pair<std::string, std::string>> overrides;  // key -> value, from the CLI
};

// Reads the KVFERRY_* variables of the process environment into a map (name -> value).
std::map<std::string, std::string> kvferry_environment();

// Applies the sources over the defaults, then validates. Unknown keys are errors too.
// On failure returns errc::invalid_argument with config_error::message() as the message.
result<node_config> load_node_config(const config_sources& sources, config_error* error = nullptr);

// Checks every field; returns the first problem.
std::optional<config_error> validate(const node_config& config);

}  // namespace kvferry
