// The machine's limits, measured in the same run as kvferry's figures: ucx_perftest on the
// same UCX transport (ucp_put_bw for bandwidth, tag_lat for the small-transfer rate) and a
// single-thread memcpy. No CAF here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace kvferry::bench {

// GB/s (1e9 bytes/s) of a single-thread memcpy of `bytes` (warm buffers).
double memcpy_gbps(std::uint64_t bytes);

// ucx_perftest ucp_put_bw of `bytes` messages between two processes on loopback over
// `transport` ("shm" or "tcp"): overall GB/s, or nothing if ucx_perftest is missing or failed.
std::optional<double> perftest_put_gbps(const std::string& transport, std::uint64_t bytes);

// ucx_perftest tag_lat of `bytes` messages: the one-way latency in microseconds.
std::optional<double> perftest_tag_lat_us(const std::string& transport, std::uint64_t bytes);

}  // namespace kvferry::bench
