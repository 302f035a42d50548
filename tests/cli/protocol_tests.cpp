// The JSON-lines protocol between `kvferry node` and its driver (cli/protocol.hpp): every
// message survives a round trip, and a bad line gives an error naming the problem, never an
// exception.
#include "cli/child_process.hpp"
#include "cli/protocol.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace kvferry::cli;
using namespace std::chrono_literals;

namespace {

// Writes `m` as a line and parses it back; the line must be one line.
template <class Message>
Message round_trip(const Message& m) {
  auto line = protocol::to_line(m);
  CAPTURE(line);
  CHECK(line.find('\n') == std::string::npos);
  CHECK(protocol::kind_of(line) == std::string{Message::name});
  auto back = protocol::parse<Message>(line);
  REQUIRE_MESSAGE(back, back.error);
  return *back;
}

// The error of parsing `line` as a `Message`, which must fail.
template <class Message>
std::string refusal(const std::string& line) {
  CAPTURE(line);
  auto p = protocol::parse<Message>(line);
  REQUIRE_FALSE(p);
  CHECK_FALSE(p.error.empty());
  return p.error;
}

bool mentions(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("every message a node writes reads back as it was written") {
  auto r = round_trip(protocol::ready{7000, 0xfedcba9876543210ull, "prefill"});
  CHECK(r.port == 7000);
  CHECK(r.epoch == 0xfedcba9876543210ull);
  CHECK(r.role == "prefill");

  auto accepted = round_trip(protocol::offered{16, ""});
  CHECK(accepted.accepted());
  CHECK(accepted.requests == 16);
  auto refused = round_trip(protocol::offered{0, "pool"});
  CHECK_FALSE(refused.accepted());
  CHECK(refused.error == "pool");

  auto res = round_trip(protocol::result{8, 7, 1, 1ull << 40, (1ull << 40) - 1});
  CHECK(res.requests == 8);
  CHECK(res.succeeded == 7);
  CHECK(res.failed == 1);
  CHECK(res.bytes == 1ull << 40);
  CHECK(res.verified_bytes == (1ull << 40) - 1);

  auto rep = round_trip(protocol::report{8, 1, 2, 3, 4, {"tcp", "posix"}, true, 5});
  CHECK(rep.succeeded == 8);
  CHECK(rep.failed == 1);
  CHECK(rep.cancelled == 2);
  CHECK(rep.in_flight == 3);
  CHECK(rep.unreleased == 4);
  CHECK(rep.transports == std::vector<std::string>{"tcp", "posix"});
  CHECK(rep.healthy);
  CHECK(rep.lost_wakeups == 5);
  CHECK(rep.transport_list() == "tcp,posix");
  CHECK(rep.summary() == "succeeded=8 failed=1 cancelled=2 in_flight=3 unreleased=4 "
                         "transports=tcp,posix healthy=1 lost_wakeups=5");
}

TEST_CASE("every command to a node reads back as it was written") {
  auto o = round_trip(protocol::offer{16, 4, 65536, 1ull << 63, "10.0.0.1:7000"});
  CHECK(o.bind == "10.0.0.1:7000");
  CHECK(o.requests == 16);
  CHECK(o.layers == 4);
  CHECK(o.block_bytes == 65536);
  CHECK(o.seed == 1ull << 63);
  auto f = round_trip(protocol::fetch{"10.231.0.2", 65535, 8, 4, 4096, 77});
  CHECK(f.host == "10.231.0.2");
  CHECK(f.port == 65535);
  CHECK(f.requests == 8);
  CHECK(f.layers == 4);
  CHECK(f.block_bytes == 4096);
  CHECK(f.seed == 77);
  round_trip(protocol::report_request{});
  round_trip(protocol::quit{});
  CHECK(protocol::to_line(protocol::quit{}) == R"({"msg":"quit"})");
  CHECK(protocol::to_line(protocol::report_request{}) == R"({"msg":"report"})");
}

TEST_CASE("strings with quotes, backslashes and control characters round-trip exactly") {
  std::string nasty = "a \"quoted\" \\ back\nslash\r\t\b\f";
  nasty += std::string{"\0\x01\x1f\x7f", 4};
  nasty += " and UTF-8 \xc3\xa9 and a } brace";
  auto r = round_trip(protocol::ready{1, 2, nasty});
  CHECK(r.role == nasty);
  auto o = round_trip(protocol::offered{0, nasty});
  CHECK(o.error == nasty);
  auto rep = round_trip(protocol::report{0, 0, 0, 0, 0, {nasty, "", ","}, false});
  CHECK(rep.transports == std::vector<std::string>{nasty, "", ","});
}

TEST_CASE("bytes that are not UTF-8 are written as replacement characters, not thrown") {
  auto line = protocol::to_line(protocol::ready{1, 2, "bad \xff byte"});
  auto r = protocol::parse<protocol::ready>(line);
  REQUIRE_MESSAGE(r, r.error);
  CHECK(r->role == "bad \xef\xbf\xbd byte");
}

TEST_CASE("a line that is not a JSON object is refused with an error, not an exception") {
  CHECK(mentions(refusal<protocol::ready>("ready port=7000 epoch=1 role=prefill"),
                 "not JSON"));
  CHECK(mentions(refusal<protocol::ready>(""), "not JSON"));
  CHECK(mentions(refusal<protocol::ready>(R"({"msg":"ready","port":1)"), "not JSON"));
  CHECK(mentions(refusal<protocol::ready>(R"({"msg":"ready"} trailing)"), "not JSON"));
  CHECK(mentions(refusal<protocol::ready>("\xff\xfe"), "not JSON"));
  CHECK(mentions(refusal<protocol::ready>(R"(["msg","ready"])"), "not a JSON object"));
  CHECK(mentions(refusal<protocol::ready>("42"), "not a JSON object"));
  CHECK(mentions(refusal<protocol::ready>(R"({"port":1})"), "msg"));
  CHECK(mentions(refusal<protocol::ready>(R"({"msg":1,"port":1})"), "msg"));
  CHECK_FALSE(protocol::kind_of("not json"));
  CHECK_FALSE(protocol::kind_of(R"({"msg":7})"));
  CHECK_FALSE(protocol::kind_of(R"(["msg"])"));
}

TEST_CASE("a message of another kind is refused naming both kinds") {
  auto e = refusal<protocol::ready>(protocol::to_line(protocol::result{}));
  CHECK(mentions(e, "\"ready\""));
  CHECK(mentions(e, "\"result\""));
  // "report" both ways is one kind: the request parses as the (empty) command only.
  CHECK(protocol::parse<protocol::report_request>(protocol::to_line(protocol::report{})));
  CHECK(mentions(refusal<protocol::report>(protocol::to_line(protocol::report_request{})),
                 "\"succeeded\" is missing"));
}

TEST_CASE("a message lacking a required field is refused naming the field") {
  auto e = refusal<protocol::ready>(R"({"msg":"ready","epoch":1,"role":"prefill"})");
  CHECK(mentions(e, "\"port\""));
  CHECK(mentions(e, "missing"));
  CHECK(mentions(refusal<protocol::offer>(R"({"msg":"offer","requests":1,"layers":1,"seed":1})"),
                 "\"block_bytes\" is missing"));
  CHECK(mentions(refusal<protocol::offered>(R"({"msg":"offered"})"), "\"requests\" is missing"));
  CHECK(mentions(refusal<protocol::offered>(R"({"msg":"offered","error":""})"), "empty"));
  CHECK(mentions(refusal<protocol::report>(
                   R"({"msg":"report","succeeded":1,"failed":0,"cancelled":0,"in_flight":0,)"
                   R"("unreleased":0,"healthy":true})"),
                 "\"transports\" is missing"));
}

TEST_CASE("a field of the wrong type or out of range is refused naming it and its value") {
  auto ready_with = [](const std::string& port) {
    return refusal<protocol::ready>(R"({"msg":"ready","port":)" + port +
                                    R"(,"epoch":1,"role":"prefill"})");
  };
  for (const char* port : {R"("7000")", "-1", "70000", "7000.5", "true", "null", "[7000]"}) {
    CAPTURE(port);
    auto e = ready_with(port);
    CHECK(mentions(e, "\"port\""));
    CHECK(mentions(e, "65535"));
    CHECK(mentions(e, port));
  }
  CHECK(mentions(refusal<protocol::offer>(
                   R"({"msg":"offer","requests":4294967296,"layers":1,"block_bytes":1,"seed":1})"),
                 "\"requests\""));
  CHECK(mentions(refusal<protocol::fetch>(
                   R"({"msg":"fetch","host":"h","port":65536,"requests":1,"layers":1,"block_bytes":1,"seed":1})"),
                 "\"port\""));
  CHECK(mentions(refusal<protocol::fetch>(
                   R"({"msg":"fetch","port":1,"requests":1,"layers":1,"block_bytes":1,"seed":1})"),
                 "\"host\" is missing"));
  CHECK(mentions(refusal<protocol::ready>(R"({"msg":"ready","port":1,"epoch":1,"role":5})"),
                 "\"role\" must be a string"));
  auto report_with = [](const std::string& rest) {
    return refusal<protocol::report>(
      R"({"msg":"report","succeeded":1,"failed":0,"cancelled":0,"in_flight":0,"unreleased":0,)" +
      rest + "}");
  };
  CHECK(mentions(report_with(R"("transports":"tcp","healthy":true)"), "array of strings"));
  CHECK(mentions(report_with(R"("transports":["tcp",1],"healthy":true)"), "array of strings"));
  CHECK(mentions(report_with(R"("transports":[],"healthy":1)"), "\"healthy\""));
}

TEST_CASE("fields a message does not know are ignored, so a newer writer can add some") {
  auto r = protocol::parse<protocol::ready>(
    R"({"msg":"ready","port":7,"epoch":1,"role":"decode","host":"127.0.0.1","extra":{"a":[1]}})");
  REQUIRE_MESSAGE(r, r.error);
  CHECK(r->port == 7);
  CHECK(r->role == "decode");
}

TEST_CASE("waiting for a message skips other lines and parses the kind asked for") {
  child_process child{{"/bin/sh", "-c",
                       R"(echo 'UCX  WARN  a log line'; echo '{"msg":"offered","requests":3}';)"
                       R"( echo '{"msg":"ready","port":7001,"epoch":9,"role":"prefill"}';)"
                       R"( echo '{"msg":"result","requests":"8"}')"}};
  REQUIRE(child.running());
  auto ready = child.wait_for_message<protocol::ready>(10s);
  REQUIRE_MESSAGE(ready, ready.error);
  CHECK(ready->port == 7001);
  CHECK(ready->epoch == 9);
  // A line of the kind asked for that does not parse is an error, not skipped.
  auto result = child.wait_for_message<protocol::result>(10s);
  REQUIRE_FALSE(result);
  CHECK(mentions(result.error, "\"requests\""));
  // Nothing more comes: the wait ends at EOF with a reason.
  auto none = child.wait_for_message<protocol::report>(10s);
  REQUIRE_FALSE(none);
  CHECK(mentions(none.error, "no \"report\" message"));
  CHECK(child.wait(10s) == 0);
}
