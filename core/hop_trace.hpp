// Hop tracing: where one request's time goes as it passes between threads and processes.
//
// Off unless the build says -DKVFERRY_HOP_TRACE=ON; then KVFERRY_HOP(name) records the point and
// the steady clock (ns) in a fixed table of the process (the first 2^20 records are kept), and
// the process writes its records when it exits to $HOP_TRACE_DIR/hops.<pid> (default
// /tmp; not a KVFERRY_ variable, which the node would refuse as unknown configuration), one
// "point nanoseconds" line each. Both nodes of a bench on one host read the same
// CLOCK_MONOTONIC, so their files merge into one time line: bench/hops.py prints each hop's
// median and tail for requests run one at a time (`kvferry bench ... --concurrency 1`).
// Off, the macro is nothing and this file only names the points.
#pragma once

namespace kvferry::hop {

// In the order one receive passes them (decode: d, prefill: p).
enum point : int {
  api_receive = 1,     // d: node::receive called
  receiver_admit,      // d: the receiver admits the receive (takes it out of the queue)
  recv_started,        // d: the recv-request actor's first step
  fetch_sent,          // d: its fetch leaves (CAF request to the prefill's sender)
  fetch_at_sender,     // p: the sender has the fetch
  fetch_at_owner,      // p: the send-request has it
  put_at_transport,    // p: the transport actor takes the puts
  put_at_engine,       // p: transport::engine::put (caller's thread)
  put_posting,         // p: the engine's progress thread posts them
  data_arrived,        // d: a data message reaches the decode's engine
  batch_done,          // p: the batch completed (acknowledged and flushed)
  answer_at_receive,   // d: the sender's answer reaches the recv-request
  receive_finished,    // d: the receive's terminal event (its handle completes)
};

void record(point p) noexcept;

}  // namespace kvferry::hop

#ifdef KVFERRY_HOP_TRACE
#define KVFERRY_HOP(name) ::kvferry::hop::record(::kvferry::hop::name)
#else
#define KVFERRY_HOP(name) ((void)0)
#endif
