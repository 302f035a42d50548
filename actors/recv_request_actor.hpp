// recv-request actor: the one owner of a decode-side transfer.
#pragma once

#include "actors/messages.hpp"
#include "actors/request_lifecycle.hpp"

namespace kvferry {

struct recv_spec {
  request_context ctx;
  sender_actor peer;  // the prefill node's entry
  fetch_msg fetch;    // destination blocks, rkeys, our epoch and anchor; the worker address is
                      // asked of the transport when the fetch is sent
};

recv_request_actor spawn_recv_request_actor(caf::actor_system& sys, recv_spec spec);

}  // namespace kvferry
