// recv-request actor: the one owner of a decode-side transfer.
#pragma once

#include "actors/messages.hpp"

#include <memory>

namespace kvferry {

struct node_core;
namespace detail {
class handle_state;
}

struct recv_spec {
  std::shared_ptr<node_core> core;
  std::shared_ptr<detail::handle_state> handle;
  sender_actor peer;   // the prefill node's entry
  fetch_msg fetch;     // complete: destination blocks, rkeys, our address and epoch
  std::uint32_t deadline_ms = 0;  // from spawn; 0: none
};

recv_request_actor spawn_recv_request_actor(caf::actor_system& sys, recv_spec spec);

}  // namespace kvferry
