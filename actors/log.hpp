// kvferry's own named logger ("kvferry"); the host's default spdlog logger is never touched.
// No CAF here.
#pragma once

#include <memory>
#include <string>

namespace spdlog {
class logger;
}

namespace kvferry {

// The "kvferry" logger (stderr), created on first use at level "warn".
std::shared_ptr<spdlog::logger> logger();
// Sets its level by spdlog name ("trace" ... "off"); unknown names leave it unchanged.
void set_log_level(const std::string& level);

}  // namespace kvferry
