// sender actor: the prefill node's published entry point for remote receivers.
#pragma once

#include "actors/messages.hpp"

#include <string>

namespace kvferry {

// `node_name` appears in the errors the sender returns to fetchers.
sender_actor spawn_sender_actor(caf::actor_system& sys, std::string node_name);

}  // namespace kvferry
