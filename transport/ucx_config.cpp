#include "transport/ucx_config.hpp"

namespace kvferry::transport {

result<std::vector<ucx_setting>> ucx_settings(const engine_options& options, const char* env_tls) {
  std::vector<ucx_setting> settings;
  bool shm_possible = true;
  if (env_tls != nullptr) {
    shm_possible = std::string(env_tls) != "tcp" && std::string(env_tls) != "tcp,self";
  } else if (options.tls == "shm") {
    settings.push_back({"TLS", "sm,self"});
  } else if (options.tls == "tcp") {
    settings.push_back({"TLS", "tcp,self"});
    shm_possible = false;
  } else if (!options.tls.empty() && options.tls != "auto") {
    return {errc::invalid_argument,
            "engine_options.tls must be \"shm\", \"tcp\" or \"auto\", not \"" + options.tls + "\""};
  }
  // Only with a shared-memory transport loaded: otherwise UCX warns that no transport took it.
  if (options.shm_error_handling && shm_possible) {
    settings.push_back({"MM_ERROR_HANDLING", "y"});
  }
  // With adaptive progress, UCX polls a shared-memory interface that has no endpoint of ours
  // only after its wake-up socket fired. That socket lives in the abstract namespace of the
  // network namespace: a peer in another one (a container on this host) writes into our queue
  // but cannot wake it, so a receiving node never read it (F24). Polling every interface costs
  // a few checks of a queue head per progress call.
  if (shm_possible) {
    settings.push_back({"ADAPTIVE_PROGRESS", "n"});
  }
  // No zero-copy sends. UCX 1.13's tcp transport completes a zero-copy send a second time when
  // its endpoint fails while the send is queued (an endpoint timeout, as when a peer vanishes
  // on a busy machine): "uct_iface.h: Assertion `comp->count > 0' failed", and the process
  // aborts. Our data messages are then sent by copy, which shared memory does anyway.
  settings.push_back({"ZCOPY_THRESH", "inf"});
  if (options.keepalive_interval_ms > 0) {
    settings.push_back({"KEEPALIVE_INTERVAL", std::to_string(options.keepalive_interval_ms) + "ms"});
  }
  return settings;
}

}  // namespace kvferry::transport
