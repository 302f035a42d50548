#include "actors/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <mutex>

namespace kvferry {

std::shared_ptr<spdlog::logger> logger() {
  static std::once_flag once;
  static std::shared_ptr<spdlog::logger> instance;
  std::call_once(once, [] {
    instance = spdlog::get("kvferry");
    if (!instance) {
      instance = std::make_shared<spdlog::logger>(
        "kvferry", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
      instance->set_level(spdlog::level::warn);
    }
  });
  return instance;
}

void set_log_level(const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl != spdlog::level::off || level == "off")
    logger()->set_level(lvl);
}

}  // namespace kvferry
