// receiver actor: admits recv-request actors, at most max_fetches_in_flight at once.
#pragma once

#include "actors/messages.hpp"

#include <cstdint>

namespace kvferry {

receiver_actor spawn_receiver_actor(caf::actor_system& sys, std::uint32_t max_fetches_in_flight);

}  // namespace kvferry
