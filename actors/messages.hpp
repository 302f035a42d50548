// Every message type and every actor interface of a kvferry node, in one place.
//
// Types that cross the network (fetch_msg, transfer_done, desc, errc) are registered with CAF
// at start-up through the `kvferry` type-id block below (node.cpp calls
// add_message_types<caf::id_block::kvferry>()); a type missing here compiles and works locally,
// then fails only across the network with `unexpected_message`.
//
// This header includes CAF: include it only from actor .cpp files and tests, never from the
// public headers (include/kvferry).
#pragma once

#include "core/descriptor.hpp"
#include "core/process_identity.hpp"
#include "kvferry/errc.hpp"
#include "kvferry/transfer.hpp"

#include <caf/all.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace kvferry {

// -- data that crosses the network -------------------------------------------------------------

// decode (recv-request actor) -> prefill (sender actor, request/response): "write the blocks of
// `request_id` into these destination blocks". Answered with transfer_done once every put
// completed and was flushed, or with an error (the sender's memory is quiescent either way).
struct fetch_msg {
  std::string request_id;
  std::string node_name;                      // the decode node's name, for logs and errors
  std::uint64_t epoch = 0;                    // the decode node's incarnation (new per start)
  std::vector<std::uint8_t> worker_address;   // the decode node's UCX worker address
  std::vector<std::vector<std::uint8_t>> rkeys;  // packed rkeys of the destination regions
  std::vector<std::uint64_t> region_bases;    // per rkey: the region's base address ...
  std::vector<std::uint64_t> region_bytes;    // ... and size; every block must lie inside
  std::vector<desc> blocks;                   // destination blocks (key: index into rkeys),
                                              // in source-block order
  std::uint32_t deadline_ms = 0;              // what is left of the receive's deadline when the
                                              // fetch was sent (0: none); bounds its parking
  // An actor that lives exactly as long as the decode node (its health supervisor). The send
  // side monitors it to learn that the node died: one remote proxy per peer node, where
  // monitoring each fetching request cost a proxy (and two network messages) per transfer.
  // Invalid from older or foreign clients: then the fetching request itself is monitored.
  caf::actor_addr anchor;
  std::string layout_tag;  // the decode node's (node_config::layout_tag); must equal the sender's
  // The offered blocks wanted, as (first, count) pairs, ascending and disjoint; empty: all.
  std::vector<std::uint32_t> ranges;
  // The receive window the decode opened over the destination blocks: the sender's data
  // messages name it, and land only while it is open (transport/receive_windows.hpp).
  std::uint64_t window = 0;
};

// prefill -> decode: the answer to a fetch_msg that succeeded.
struct transfer_done {
  std::string request_id;
  std::uint64_t bytes = 0;
  std::uint64_t first_byte_us = 0;  // from the fetch's arrival at the owner to its first bytes
  std::uint32_t layers = 0;  // a layer-wise send's layer count (each landed); 0: not layered
  std::string transport{};   // how the bytes went (transfer_result::transport)
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, desc& x) {
  return f(caf::meta::type_name("desc"), x.addr, x.bytes, x.key);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, fetch_msg& x) {
  return f(caf::meta::type_name("fetch_msg"), x.request_id, x.node_name, x.epoch,
           x.worker_address, x.rkeys, x.region_bases, x.region_bytes, x.blocks, x.deadline_ms,
           x.anchor, x.layout_tag, x.ranges, x.window);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, transfer_done& x) {
  return f(caf::meta::type_name("transfer_done"), x.request_id, x.bytes, x.first_byte_us,
           x.layers, x.transport);
}

// prefill (sender actor) -> decode, asked by connect(): the prefill's process, so that the
// decode can tell later that it has ended (core/process_identity.hpp).
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, process_identity& x) {
  return f(caf::meta::type_name("process_identity"), x.boot_id, x.pid_ns, x.pid, x.start_ticks);
}

// -- local data (between the actors of one node) ----------------------------------------------

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, copy_op& x) {
  return f(caf::meta::type_name("copy_op"), x.src, x.dst);
}

// send-request -> transport: post these puts to the peer `peer_epoch`, flush, answer when every
// UCX request completed. `token` names the operation for cancel (the requester's actor id).
struct put_request {
  std::uint64_t token = 0;
  std::uint64_t peer_epoch = 0;
  std::vector<std::uint8_t> peer_address;
  std::vector<std::vector<std::uint8_t>> rkeys;
  std::vector<copy_op> ops;  // dst.key: index into rkeys
  std::uint64_t window = 0;  // fetch_msg::window
};

// transport -> send-request: the puts of a put_request completed and were flushed.
struct put_done {
  std::uint64_t bytes = 0;
  std::string transport;  // how they went: the endpoint's UCX transports and the path
};

// Memory the transport registered (or allocated) for transfers.
struct registered_memory {
  std::uint64_t base = 0;
  std::uint64_t bytes = 0;
  std::vector<std::uint8_t> packed_rkey;
};

// A leased staging buffer of the buffer pool.
struct lease {
  std::uint32_t slot = 0;
  desc buffer;
};

struct pool_stats {
  std::uint32_t slots = 0;
  std::uint32_t leased = 0;
  std::uint32_t waiting = 0;
  std::uint32_t poisoned = 0;  // taken out of service: UCX may still have been using them
};

// The children of the health supervisor.
enum class child_kind : std::uint8_t { transport, pool, sender, receiver };
const char* to_string(child_kind k) noexcept;

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, put_request& x) {
  return f(caf::meta::type_name("put_request"), x.token, x.peer_epoch, x.peer_address, x.rkeys,
           x.ops, x.window);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, put_done& x) {
  return f(caf::meta::type_name("put_done"), x.bytes, x.transport);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, registered_memory& x) {
  return f(caf::meta::type_name("registered_memory"), x.base, x.bytes, x.packed_rkey);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, lease& x) {
  return f(caf::meta::type_name("lease"), x.slot, x.buffer);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, pool_stats& x) {
  return f(caf::meta::type_name("pool_stats"), x.slots, x.leased, x.waiting, x.poisoned);
}

// -- atoms ---------------------------------------------------------------------------------------

using put_atom = caf::atom_constant<caf::atom("put")>;
using copy_atom = caf::atom_constant<caf::atom("copy")>;
using op_done_atom = caf::atom_constant<caf::atom("op_done")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using cancel_fetch_atom = caf::atom_constant<caf::atom("cancel_f")>;
using announce_atom = caf::atom_constant<caf::atom("announce")>;
using admit_atom = caf::atom_constant<caf::atom("admit")>;
using acquire_atom = caf::atom_constant<caf::atom("acquire")>;
using wait_expired_atom = caf::atom_constant<caf::atom("wait_exp")>;
using release_atom = caf::atom_constant<caf::atom("release")>;
using poison_atom = caf::atom_constant<caf::atom("poison")>;
using quiescent_atom = caf::atom_constant<caf::atom("quiescent")>;
using forget_peer_atom = caf::atom_constant<caf::atom("forget_p")>;
using stale_worker_atom = caf::atom_constant<caf::atom("stale_wkr")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
using ready_atom = caf::atom_constant<caf::atom("ready")>;
using peer_down_atom = caf::atom_constant<caf::atom("peer_down")>;
using crash_atom = caf::atom_constant<caf::atom("crash")>;
using deadline_atom = caf::atom_constant<caf::atom("deadline")>;
using park_expired_atom = caf::atom_constant<caf::atom("park_exp")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using proof_check_atom = caf::atom_constant<caf::atom("proof_chk")>;
using window_lost_atom = caf::atom_constant<caf::atom("win_lost")>;
using register_atom = caf::atom_constant<caf::atom("register")>;
using allocate_atom = caf::atom_constant<caf::atom("allocate")>;
using endpoint_atom = caf::atom_constant<caf::atom("endpoint")>;
using peers_atom = caf::atom_constant<caf::atom("peers")>;
using refresh_atom = caf::atom_constant<caf::atom("refresh")>;
using layout_atom = caf::atom_constant<caf::atom("layout")>;
using identity_atom = caf::atom_constant<caf::atom("identity")>;
using decline_atom = caf::atom_constant<caf::atom("decline")>;
using layer_atom = caf::atom_constant<caf::atom("layer")>;

// -- actor interfaces ------------------------------------------------------------------------------

// transport: the only actor that talks to UCX (transport::engine) and to the copy engine.
// Operations are named by a token (the requester's actor id): at most one batch of puts and one
// copy per token at a time.
using transport_actor = caf::typed_actor<
  // Post the puts, flush, answer with the bytes written (and how) once every UCX request
  // completed.
  caf::replies_to<put_atom, put_request>::with<put_done>,
  // Copy with the copy engine (token, copies between local memory), answer the bytes copied.
  caf::replies_to<copy_atom, std::uint64_t, std::vector<copy_op>>::with<std::uint64_t>,
  // Ask UCX to cancel the puts of `token`; their answer still comes, exactly once.
  caf::reacts_to<cancel_atom, std::uint64_t>,
  // From the engine's or the copy engine's thread: the puts (true) or the copy (false) of
  // `token` completed (empty: success; then the string says how the bytes went).
  caf::reacts_to<op_done_atom, std::uint64_t, bool, caf::error, std::string>,
  // From the engine's progress thread: the endpoint to peer `epoch` failed.
  caf::reacts_to<peer_down_atom, std::uint64_t, caf::error>,
  // True when nothing of `token` is in flight in the engines (op ledger, any incarnation).
  // Asked through this actor, it is answered only after every message `token` sent here
  // before it was handled (and posted): the pool asks it for a dead holder.
  caf::replies_to<quiescent_atom, std::uint64_t>::with<bool>,
  // The peer `epoch` is known dead (CAF lost its node): close its endpoint.
  caf::reacts_to<forget_peer_atom, std::uint64_t>,
  // The peer `epoch` replaced the worker at `address` (its receive said so): close the endpoint
  // if it still leads there, failing what waits for that worker's acknowledgements.
  caf::reacts_to<stale_worker_atom, std::uint64_t, std::vector<std::uint8_t>>,
  // Register [addr, addr + bytes) of this process for transfers (lives as long as the node).
  caf::replies_to<register_atom, std::uint64_t, std::uint64_t, bool>::with<registered_memory>,
  // Let UCX allocate and register `bytes` (zero-filled; lives as long as the node).
  caf::replies_to<allocate_atom, std::uint64_t>::with<registered_memory>,
  // Diagnostics (may take up to 2 s): the UCX transports the endpoint to peer `epoch` uses.
  caf::replies_to<endpoint_atom, std::uint64_t>::with<std::vector<std::string>>,
  // Diagnostics: the epochs of the peers this node has put data to.
  caf::replies_to<peers_atom>::with<std::vector<std::uint64_t>>,
  // Copy the engine's counters into the node's health (the supervisor's tick sends it).
  caf::reacts_to<refresh_atom>>;

// buffer pool: staging buffers handed out as leases, with bounded waits.
using buffer_pool_actor = caf::typed_actor<
  // Answers the number of slots once the staging buffers exist (an error if they could not be
  // allocated). Acquires that come earlier wait.
  caf::replies_to<ready_atom>::with<std::uint32_t>,
  // Lease a slot, waiting at most `wait_ms`; errc::timed_out when none came free in time.
  caf::replies_to<acquire_atom, std::uint32_t>::with<lease>,
  // Give slot back (only its holder may).
  caf::reacts_to<release_atom, std::uint32_t>,
  // Take slot out of service: its holder cannot prove UCX stopped using it (only the holder).
  caf::reacts_to<poison_atom, std::uint32_t>,
  // Internal (from the pool itself): the bounded wait of waiter `id` is over.
  caf::reacts_to<wait_expired_atom, std::uint64_t>,
  // Internal (from the op ledger): nothing the dead holder `token` posted is in flight.
  caf::reacts_to<quiescent_atom, std::uint64_t>,
  // Current counts.
  caf::replies_to<stats_atom>::with<pool_stats>>;

// send-request (prefill side, one per transfer): owns the source blocks until released.
using send_request_actor = caf::typed_actor<
  // The peer's fetch, relayed by the sender with the fetching actor (where layer-wise progress
  // goes, through the sender): validate, put, flush, answer.
  caf::replies_to<fetch_msg, caf::actor_addr>::with<transfer_done>,
  // From the engine (node::layer_ready, checked there): this layer's blocks are written.
  caf::reacts_to<layer_atom, std::uint32_t>,
  // The engine cancels: answers what the cancel found.
  caf::replies_to<cancel_atom>::with<cancel_result>,
  // The fetching peer (epoch) gave up; true: because it replaced the worker we write to.
  caf::reacts_to<cancel_fetch_atom, std::string, std::uint64_t, bool>,
  // A decode node will not fetch it: released at once if no fetch started (not_cancellable if
  // one did).
  // A decode node (named by its CAF node id, which the sender read) declines the offer.
  caf::replies_to<decline_atom, caf::node_id>::with<cancel_result>,
  // Internal: the request's deadline passed.
  caf::reacts_to<deadline_atom>,
  // Internal (from the op ledger): its transport died with a step in flight, and the engine has
  // since completed every operation it posted: its memory is quiescent.
  caf::reacts_to<quiescent_atom>>;

// recv-request (decode side, one per transfer): owns the destination blocks until released.
using recv_request_actor = caf::typed_actor<
  // The engine cancels: answers what the cancel found.
  caf::replies_to<cancel_atom>::with<cancel_result>,
  // Internal: the request's deadline passed.
  caf::reacts_to<deadline_atom>,
  // Internal: the engine replaced its worker, and our receive window with it (the number of
  // the window the actor opened, counted from 1: a window opened again makes earlier ones stale).
  caf::reacts_to<window_lost_atom, std::uint64_t>,
  // Internal: look again whether the prefill's process has ended (awaiting_proof).
  caf::reacts_to<proof_check_atom>,
  // From the peer's sender (a layer-wise send): layer (of layers) of request id has landed.
  caf::reacts_to<layer_atom, std::string, std::uint32_t, std::uint32_t>>;

// sender (prefill side, published): matches fetches with send-request actors.
using sender_actor = caf::typed_actor<
  // node::send put an offer of request id into the offer book (a fetch parked for it is served).
  caf::reacts_to<announce_atom, std::string>,
  // A remote fetch: routed to the owner of the request id or its offer, or parked until send().
  caf::replies_to<fetch_msg>::with<transfer_done>,
  // The remote receiver gave up on request id (epoch): stop its transfer, drop a parked fetch.
  // The flag: it gave up because it replaced its UCX worker (the one the fetch named).
  caf::reacts_to<cancel_fetch_atom, std::string, std::uint64_t, bool>,
  // Internal: the parked fetch for request id (epoch) waited as long as it may.
  caf::reacts_to<park_expired_atom, std::string, std::uint64_t>,
  // connect() asks the node's layout tag (node_config::layout_tag) before it accepts the peer.
  caf::replies_to<layout_atom>::with<std::string>,
  // connect() asks which process the node is (core/process_identity.hpp).
  caf::replies_to<identity_atom>::with<process_identity>,
  // A decode node declines request id: routed to its owner (not_found if there is none).
  caf::replies_to<decline_atom, std::string>::with<cancel_result>,
  // From a send-request of this node only: layer (of layers) of request id landed at the
  // fetching actor; passed on to it from here, so that it never learns the owner's address.
  caf::reacts_to<layer_atom, caf::actor_addr, std::string, std::uint32_t, std::uint32_t>>;

// receiver (decode side): admits queued receives, bounding fetches in flight.
using receiver_actor = caf::typed_actor<
  // node::receive queued a receive (or, after a restart, the supervisor): admit what fits.
  caf::reacts_to<admit_atom>,
  // Internal: the sweep of queued receives' deadlines.
  caf::reacts_to<deadline_atom>>;

// health supervisor: spawns, monitors and restarts the children above.
using supervisor_actor = caf::typed_actor<
  // Internal, periodic: check the global progress deadline.
  caf::reacts_to<tick_atom>,
  // The node published the sender on this port: a restarted sender is re-published there.
  caf::reacts_to<caf::publish_atom, std::uint16_t>,
  // Internal: publish the restarted sender again, with this many attempts left.
  caf::reacts_to<caf::publish_atom, std::int32_t>,
  // Test hook (the test library): make a child crash.
  caf::reacts_to<crash_atom, child_kind>>;

}  // namespace kvferry

CAF_BEGIN_TYPE_ID_BLOCK(kvferry, caf::first_custom_type_id)
  CAF_ADD_TYPE_ID(kvferry, (kvferry::desc))
  CAF_ADD_TYPE_ID(kvferry, (kvferry::fetch_msg))
  CAF_ADD_TYPE_ID(kvferry, (kvferry::transfer_done))
  CAF_ADD_TYPE_ID(kvferry, (kvferry::process_identity))
  CAF_ADD_TYPE_ID(kvferry, (kvferry::errc))
  CAF_ADD_TYPE_ID(kvferry, (kvferry::cancel_result))
  CAF_ADD_TYPE_ID(kvferry, (kvferry::copy_op))
  CAF_ADD_TYPE_ID(kvferry, (kvferry::put_request))
  CAF_ADD_TYPE_ID(kvferry, (kvferry::registered_memory))
  CAF_ADD_TYPE_ID(kvferry, (kvferry::lease))
  CAF_ADD_TYPE_ID(kvferry, (kvferry::pool_stats))
  CAF_ADD_TYPE_ID(kvferry, (kvferry::child_kind))
  CAF_ADD_TYPE_ID(kvferry, (kvferry::sender_actor))
  CAF_ADD_TYPE_ID(kvferry, (std::vector<kvferry::copy_op>))
  CAF_ADD_TYPE_ID(kvferry, (std::vector<std::string>))
  CAF_ADD_TYPE_ID(kvferry, (std::vector<std::uint8_t>))
  CAF_ADD_TYPE_ID(kvferry, (std::vector<std::uint64_t>))
  CAF_ADD_TYPE_ID(kvferry, (kvferry::put_done))
CAF_END_TYPE_ID_BLOCK(kvferry)

CAF_ERROR_CODE_ENUM(kvferry::errc, "kvferry")
