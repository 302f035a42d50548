// engine_options -> UCX configuration (ucp_config_modify). Internal to transport/.
#pragma once

#include "transport/engine.hpp"
#include "kvferry/result.hpp"

#include <string>
#include <vector>

namespace kvferry::transport {

struct ucx_setting {
  std::string name;  // without the UCX_ prefix, as ucp_config_modify takes it
  std::string value;
};

// The settings kvferry applies on top of UCX's environment. `env_tls` is the value of UCX_TLS in
// the environment (nullptr when unset): an explicit UCX_TLS wins over options.tls.
//
// UCX 1.13 pitfall: ucp_config_modify("POSIX_ERROR_HANDLING", ...) is silently accepted and then
// ignored ("invalid configurations" warning at worker creation) — the key UCX matches for the
// posix and sysv transports is the shared mm table's "MM_ERROR_HANDLING", which the environment
// spells UCX_POSIX_ERROR_HANDLING / UCX_SYSV_ERROR_HANDLING.
result<std::vector<ucx_setting>> ucx_settings(const engine_options& options, const char* env_tls);

}  // namespace kvferry::transport
