// sender actor: the prefill node's published entry point for remote receivers.
#pragma once

#include "actors/messages.hpp"

#include <cstdint>
#include <string>

namespace kvferry {

// `node_name` appears in the errors the sender returns to fetchers; a fetch that carries no
// deadline is parked at most `default_park_ms` (0: without limit).
// `layout_tag`: this node's (node_config::layout_tag); a fetch that declares another is refused.
sender_actor spawn_sender_actor(caf::actor_system& sys, std::string node_name,
                                std::uint32_t default_park_ms, std::string layout_tag = {});

}  // namespace kvferry
