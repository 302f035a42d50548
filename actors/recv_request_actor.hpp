// recv-request actor: the one owner of a decode-side transfer.
#pragma once

#include "actors/messages.hpp"
#include "actors/region_table.hpp"
#include "actors/request_lifecycle.hpp"
#include "transport/receive_windows.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace kvferry {

struct recv_spec {
  request_context ctx;
  sender_actor peer;          // the prefill node's entry
  std::vector<desc> blocks;   // destination blocks (key: region id, as region_table resolved them)
  std::vector<std::uint32_t> ranges;  // the offered blocks wanted (fetch_msg::ranges); empty: all
  // This node's part of every fetch (name, epoch, anchor), and its regions: the fetch is
  // written only when it is sent, so a receive waiting for admission holds just its blocks. The
  // worker address is read then too (it changes when a wedged worker is replaced).
  std::shared_ptr<const fetch_msg> header;
  std::shared_ptr<const region_table> regions;
  // The engine's receive windows: one is opened over the blocks when the fetch goes out.
  std::shared_ptr<transport::receive_windows> windows;
  // The prefill's process (connect() asked): once it has ended, nothing writes through a mapping
  // of our UCX-allocated memory any more.
  process_identity peer_process;
  // The engine's worker address now (transport::engine::worker_address: thread-safe, and
  // published before a replacement loses the windows), read right after the window opened.
  std::function<std::vector<std::uint8_t>()> worker_address;
};

// A queued receive is admitted (receiver_actor.hpp): its owner moves into a new recv-request,
// whose deadline is what is left of the receive's (`deadline_left_ms`; 0: none). A null owner
// makes one (tests that drive the actor directly).
recv_request_actor spawn_recv_request_actor(caf::actor_system& sys, recv_spec spec,
                                            std::unique_ptr<request_owner> owner,
                                            std::uint32_t deadline_left_ms);

}  // namespace kvferry
