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
  if (options.keepalive_interval_ms > 0) {
    settings.push_back({"KEEPALIVE_INTERVAL", std::to_string(options.keepalive_interval_ms) + "ms"});
  }
  return settings;
}

}  // namespace kvferry::transport
