// sender actor: the prefill node's published entry point for remote receivers.
#pragma once

#include "actors/messages.hpp"

namespace kvferry {

sender_actor spawn_sender_actor(caf::actor_system& sys);

}  // namespace kvferry
