// sender actor: the prefill node's published entry point for remote receivers.
#pragma once

#include "actors/messages.hpp"
#include "actors/request_registry.hpp"

#include <memory>

#include <cstdint>
#include <string>

namespace kvferry {

// `node_name` appears in the errors the sender returns to fetchers; a fetch that carries no
// deadline is parked at most `default_park_ms` (0: without limit).
// `layout_tag`: this node's (node_config::layout_tag); a fetch that declares another is refused.
// `registry`: where a decline finds an owner that has not announced itself yet (may be null).
sender_actor spawn_sender_actor(caf::actor_system& sys, std::string node_name,
                                std::uint32_t default_park_ms, std::string layout_tag = {},
                                std::shared_ptr<const request_registry> registry = nullptr);

}  // namespace kvferry
