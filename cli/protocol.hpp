// The process protocol between `kvferry node` and the process that drives it (the demo, bench,
// chaos, the integration tests): JSON lines, one object per line, each naming its kind in "msg".
//
//   node -> driver, on the node's stdout:
//     {"msg":"ready","port":7000,"epoch":123,"role":"prefill"}        published, serving
//     {"msg":"offered","requests":16}  or  {"msg":"offered","error":"bad_offer"}   (or "pool")
//     {"msg":"result","requests":8,"succeeded":8,"failed":0,"bytes":..,"verified_bytes":..}
//     {"msg":"report","succeeded":..,"failed":..,"cancelled":..,"in_flight":..,"unreleased":..,
//      "transports":["tcp"],"healthy":true,"lost_wakeups":0}
//   driver -> node, on the node's stdin:
//     {"msg":"offer","requests":16,"layers":4,"block_bytes":65536,"seed":7}
//     {"msg":"report"}   {"msg":"quit"}
//
// This header and protocol.cpp are the only places these lines are written or read. Callers
// see typed structs; the JSON library stays behind protocol.cpp. No CAF here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvferry::cli::protocol {

// -- node -> driver ------------------------------------------------------------------------------

struct ready {
  static constexpr const char* name = "ready";
  std::uint16_t port = 0;
  std::uint64_t epoch = 0;
  std::string role;
};

// The answer to `offer`: its sends are posted (error empty), or why not.
struct offered {
  static constexpr const char* name = "offered";
  std::uint32_t requests = 0;  // when accepted
  std::string error;           // "bad_offer", "bind" or "pool" when refused
  bool accepted() const noexcept { return error.empty(); }
};

// A decode node's outcome, written once its workload ended (its --peer workload, or a `fetch`).
struct result {
  static constexpr const char* name = "result";
  std::uint64_t requests = 0, succeeded = 0, failed = 0, bytes = 0, verified_bytes = 0;
};

// The answer to `report`: the node's counts and the UCX transports its sends used.
struct report {
  static constexpr const char* name = "report";
  std::uint64_t succeeded = 0, failed = 0, cancelled = 0, in_flight = 0, unreleased = 0;
  std::vector<std::string> transports;
  bool healthy = false;
  std::uint64_t lost_wakeups = 0;      // health_snapshot::lost_wakeups
  std::string transport_list() const;  // "a,b"
  std::string summary() const;         // one line for people: "succeeded=8 failed=0 ..."
};

// -- driver -> node ------------------------------------------------------------------------------

// Send this workload (cli/workload.hpp) too; answered by `offered`.
struct offer {
  static constexpr const char* name = "offer";
  std::uint32_t requests = 0, layers = 0;
  std::uint64_t block_bytes = 0, seed = 0;
  // "host:port" of the one decode node that may fetch it (transfer_options::bound_to: if that
  // node dies first, the offer ends at once); empty: any node.
  std::string bind;
};

// A decode node: receive this workload (cli/workload.hpp) from the prefill node at host:port,
// verify it; answered by `result` once every request ended.
struct fetch {
  static constexpr const char* name = "fetch";
  std::string host;
  std::uint16_t port = 0;
  std::uint32_t requests = 0, layers = 0;
  std::uint64_t block_bytes = 0, seed = 0;
};

struct report_request {
  static constexpr const char* name = "report";
};

struct quit {
  static constexpr const char* name = "quit";
};

// -- lines ---------------------------------------------------------------------------------------

// A parsed message, or why the line is not one. Never throws.
template <class Message>
struct parsed {
  std::optional<Message> value;
  std::string error;  // set when there is no value

  static parsed failure(std::string why) { return parsed{std::nullopt, std::move(why)}; }
  explicit operator bool() const noexcept { return value.has_value(); }
  const Message& operator*() const { return *value; }
  const Message* operator->() const { return &*value; }
};

// One message as one line of JSON, without the newline. Strings are escaped, so a message
// never spans lines; bytes that are not UTF-8 become U+FFFD instead of failing.
template <class Message>
std::string to_line(const Message& m);

// Parses one line as a message of kind `Message`. A line that is not a JSON object, names
// another kind, lacks a field or has one of the wrong type or range gives an error naming it.
template <class Message>
parsed<Message> parse(std::string_view line);

// The "msg" of a line, or nothing when the line is not a JSON object with a string "msg":
// lets a reader pick or dispatch lines before parsing them fully.
std::optional<std::string> kind_of(std::string_view line);

}  // namespace kvferry::cli::protocol
