// fuzz_protocol: the JSON-lines protocol between a `kvferry node` process and its driver
// (cli/protocol.{hpp,cpp}): a driver reads whatever a (possibly dying) child prints, a node reads
// whatever its driver writes.
//
// Input, two modes:
//   - anything not starting with 0xFF is one line: it is parsed as every message kind, and
//     kind_of() is asked; every parse that succeeds must round-trip: to_line(parse(x)) parses to
//     the same value and re-encodes to the same line, a line without '\n', whose kind_of is the
//     message's name; every failure must carry an error;
//   - 0xFF, then bytes that build a message of each kind field by field (strings may be any
//     bytes: the encoder replaces what is not UTF-8): to_line must give one line that parses
//     back to the same numbers and flags, and to the same strings where they were UTF-8.
#include "fuzz/fuzz_check.hpp"
#include "cli/protocol.hpp"

#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <tuple>

namespace p = kvferry::cli::protocol;

namespace {

constexpr const char* kFuzzTarget = "fuzz_protocol";

// Field-wise equality (the structs have no operator==).
auto fields(const p::ready& m) { return std::tie(m.port, m.epoch, m.role); }
auto fields(const p::offered& m) { return std::tie(m.requests, m.error); }
auto fields(const p::result& m) {
  return std::tie(m.requests, m.succeeded, m.failed, m.bytes, m.verified_bytes);
}
auto fields(const p::report& m) {
  return std::tie(m.succeeded, m.failed, m.cancelled, m.in_flight, m.unreleased, m.transports,
                  m.healthy);
}
auto fields(const p::offer& m) { return std::tie(m.requests, m.layers, m.block_bytes, m.seed); }
auto fields(const p::report_request&) { return std::tuple<>{}; }
auto fields(const p::quit&) { return std::tuple<>{}; }

template <class M>
bool same(const M& a, const M& b) {
  return fields(a) == fields(b);
}

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t n;
    std::uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size())  // the continuation bytes run past the end
      return false;
    for (std::size_t k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n + 1;
  }
  return true;
}

// A line the encoder wrote: one line, of its kind, that parses to `m` (and re-encodes the same).
template <class M>
void check_encoded(const M& m, const std::string& line) {
  FUZZ_CHECK(line.find('\n') == std::string::npos);
  FUZZ_CHECK(line.find('\r') == std::string::npos);
  auto kind = p::kind_of(line);
  FUZZ_CHECK(kind && *kind == M::name);
  auto back = p::parse<M>(line);
  if (!back)
    fuzz_fail(kFuzzTarget, ("an encoded line does not parse: " + back.error + " in " + line).c_str());
  FUZZ_CHECK(p::to_line(*back) == line);
  (void)m;
}

template <class M>
void parse_as(std::string_view line, const std::optional<std::string>& kind) {
  auto parsed = p::parse<M>(line);
  if (!parsed) {
    FUZZ_CHECK(!parsed.error.empty());
    return;
  }
  FUZZ_CHECK(parsed.error.empty());
  FUZZ_CHECK(kind && *kind == M::name);
  auto line2 = p::to_line(*parsed);
  check_encoded(*parsed, line2);
  auto again = p::parse<M>(line2);
  FUZZ_CHECK(again && same(*again, *parsed));
}

void parse_mode(std::string_view line) {
  auto kind = p::kind_of(line);
  parse_as<p::ready>(line, kind);
  parse_as<p::offered>(line, kind);
  parse_as<p::result>(line, kind);
  parse_as<p::report>(line, kind);
  parse_as<p::offer>(line, kind);
  parse_as<p::report_request>(line, kind);
  parse_as<p::quit>(line, kind);
  if (auto r = p::parse<p::report>(line)) {
    (void)r->summary();
    (void)r->transport_list();
  }
}

// Encodes `m`, checks the line (check_encoded), and returns what parsing it gives back.
template <class M>
M encoded_back(const M& m) {
  auto line = p::to_line(m);
  check_encoded(m, line);
  auto back = p::parse<M>(line);
  FUZZ_CHECK(back);
  return *back;
}

void encode_mode(FuzzedDataProvider& in) {
  p::ready r;
  r.port = in.ConsumeIntegral<std::uint16_t>();
  r.epoch = in.ConsumeIntegral<std::uint64_t>();
  r.role = in.ConsumeRandomLengthString(64);
  {
    auto back = encoded_back(r);
    FUZZ_CHECK(back.port == r.port && back.epoch == r.epoch);
    FUZZ_CHECK(!valid_utf8(r.role) || back.role == r.role);
  }
  p::offered o;
  o.requests = in.ConsumeIntegral<std::uint32_t>();
  o.error = in.ConsumeBool() ? std::string{} : in.ConsumeRandomLengthString(64);
  {
    auto back = encoded_back(o);
    FUZZ_CHECK(back.accepted() == o.accepted());
    FUZZ_CHECK(!o.accepted() || back.requests == o.requests);
    FUZZ_CHECK(o.accepted() || !valid_utf8(o.error) || back.error == o.error);
  }
  p::result res;
  res.requests = in.ConsumeIntegral<std::uint64_t>();
  res.succeeded = in.ConsumeIntegral<std::uint64_t>();
  res.failed = in.ConsumeIntegral<std::uint64_t>();
  res.bytes = in.ConsumeIntegral<std::uint64_t>();
  res.verified_bytes = in.ConsumeIntegral<std::uint64_t>();
  FUZZ_CHECK(same(encoded_back(res), res));
  p::report rep;
  rep.succeeded = in.ConsumeIntegral<std::uint64_t>();
  rep.failed = in.ConsumeIntegral<std::uint64_t>();
  rep.cancelled = in.ConsumeIntegral<std::uint64_t>();
  rep.in_flight = in.ConsumeIntegral<std::uint64_t>();
  rep.unreleased = in.ConsumeIntegral<std::uint64_t>();
  rep.healthy = in.ConsumeBool();
  bool utf8 = true;
  for (auto n = in.ConsumeIntegralInRange<int>(0, 4); n > 0; --n) {
    rep.transports.push_back(in.ConsumeRandomLengthString(16));
    utf8 = utf8 && valid_utf8(rep.transports.back());
  }
  {
    auto back = encoded_back(rep);
    FUZZ_CHECK(back.succeeded == rep.succeeded && back.failed == rep.failed &&
               back.cancelled == rep.cancelled && back.in_flight == rep.in_flight &&
               back.unreleased == rep.unreleased && back.healthy == rep.healthy);
    FUZZ_CHECK(back.transports.size() == rep.transports.size());
    FUZZ_CHECK(!utf8 || back.transports == rep.transports);
    (void)back.summary();
  }
  p::offer of;
  of.requests = in.ConsumeIntegral<std::uint32_t>();
  of.layers = in.ConsumeIntegral<std::uint32_t>();
  of.block_bytes = in.ConsumeIntegral<std::uint64_t>();
  of.seed = in.ConsumeIntegral<std::uint64_t>();
  FUZZ_CHECK(same(encoded_back(of), of));
  encoded_back(p::report_request{});
  encoded_back(p::quit{});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 0 && data[0] == 0xFF) {
    FuzzedDataProvider in(data + 1, size - 1);
    encode_mode(in);
  } else {
    parse_mode(std::string_view(reinterpret_cast<const char*>(data), size));
  }
  return 0;
}
