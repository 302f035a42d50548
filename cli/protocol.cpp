#include "cli/protocol.hpp"

#include <nlohmann/json.hpp>

#include <exception>
#include <limits>
#include <type_traits>

namespace kvferry::cli::protocol {

namespace {

// Ordered: "msg" stays first and fields keep the order written, so lines read well in logs.
using json = nlohmann::ordered_json;

// Replaces bytes that are not UTF-8 instead of throwing: a message is always written.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Bad input quoted in an error, cut short so one huge line does not flood the log.
std::string shown(std::string_view text) {
  constexpr std::size_t most = 120;
  return text.size() <= most ? std::string{text} : std::string{text.substr(0, most)} + "...";
}

// Reads the fields of one message; the first problem is kept and the rest are skipped.
class reader {
 public:
  reader(const json& j, const char* kind) : j_(j), kind_(kind) {}

  bool ok() const noexcept { return error_.empty(); }
  const std::string& error() const noexcept { return error_; }
  bool has(const char* key) const { return j_.contains(key); }

  template <class U>
  void unsigned_field(const char* key, U& out) {
    auto* v = find(key);
    if (!v)
      return;
    if (!v->is_number_unsigned() || v->get<std::uint64_t>() > std::numeric_limits<U>::max())
      return wrong(key, "an unsigned integer up to " +
                          std::to_string(std::numeric_limits<U>::max()), *v);
    out = static_cast<U>(v->get<std::uint64_t>());
  }

  void string_field(const char* key, std::string& out) {
    if (auto* v = find(key)) {
      if (!v->is_string())
        return wrong(key, "a string", *v);
      out = v->get<std::string>();
    }
  }

  void bool_field(const char* key, bool& out) {
    if (auto* v = find(key)) {
      if (!v->is_boolean())
        return wrong(key, "true or false", *v);
      out = v->get<bool>();
    }
  }

  void strings_field(const char* key, std::vector<std::string>& out) {
    auto* v = find(key);
    if (!v)
      return;
    if (!v->is_array())
      return wrong(key, "an array of strings", *v);
    std::vector<std::string> items;
    for (auto& item : *v) {
      if (!item.is_string())
        return wrong(key, "an array of strings", *v);
      items.push_back(item.get<std::string>());
    }
    out = std::move(items);
  }

  // fields() below reads through these.
  template <class U>
  std::enable_if_t<std::is_unsigned_v<U> && !std::is_same_v<U, bool>> field(const char* key,
                                                                             U& out) {
    unsigned_field(key, out);
  }
  void field(const char* key, std::string& out) { string_field(key, out); }
  void field(const char* key, bool& out) { bool_field(key, out); }
  void field(const char* key, std::vector<std::string>& out) { strings_field(key, out); }

  void fail(const char* key, const std::string& why) {
    if (ok())
      error_ = "\"" + std::string{kind_} + "\" message: field \"" + key + "\" " + why;
  }

 private:
  const json* find(const char* key) {
    if (!ok())
      return nullptr;
    auto it = j_.find(key);
    if (it == j_.end()) {
      fail(key, "is missing");
      return nullptr;
    }
    return &*it;
  }

  void wrong(const char* key, const std::string& expected, const json& got) {
    fail(key, "must be " + expected + ", got " + shown(dump(got)));
  }

  const json& j_;
  const char* kind_;
  std::string error_;
};

// Writes the fields of one message (the writer side of fields()).
struct writer {
  json& j;
  template <class T>
  void field(const char* key, const T& value) {
    j[key] = value;
  }
};

// One list of fields per message, read and written through the same function.

template <class V>
void fields(V& v, ready& m) {
  v.field("port", m.port);
  v.field("epoch", m.epoch);
  v.field("role", m.role);
}

template <class V>
void fields(V& v, result& m) {
  v.field("requests", m.requests);
  v.field("succeeded", m.succeeded);
  v.field("failed", m.failed);
  v.field("bytes", m.bytes);
  v.field("verified_bytes", m.verified_bytes);
}

template <class V>
void fields(V& v, report& m) {
  v.field("succeeded", m.succeeded);
  v.field("failed", m.failed);
  v.field("cancelled", m.cancelled);
  v.field("in_flight", m.in_flight);
  v.field("unreleased", m.unreleased);
  v.field("transports", m.transports);
  v.field("healthy", m.healthy);
  v.field("lost_wakeups", m.lost_wakeups);
}

// The workload (cli/workload.hpp) an `offer` or a `fetch` names.
template <class V, class Command>
void workload_fields(V& v, Command& m) {
  v.field("requests", m.requests);
  v.field("layers", m.layers);
  v.field("block_bytes", m.block_bytes);
  v.field("seed", m.seed);
}

template <class V>
void fields(V& v, offer& m) {
  workload_fields(v, m);
  v.field("bind", m.bind);
}

template <class V>
void fields(V& v, fetch& m) {
  v.field("host", m.host);
  v.field("port", m.port);
  workload_fields(v, m);
}

template <class V>
void fields(V&, report_request&) {}

template <class V>
void fields(V&, quit&) {}

template <class Message>
void write(json& j, const Message& m) {
  writer w{j};
  fields(w, const_cast<Message&>(m));  // the writer only reads
}
template <class Message>
void read(reader& r, Message& m) {
  fields(r, m);
}

// An offer's answer carries either the count or the error, so it is written by hand.
void write(json& j, const offered& m) {
  if (m.accepted())
    j["requests"] = m.requests;
  else
    j["error"] = m.error;
}
void read(reader& r, offered& m) {
  if (!r.has("error"))
    return r.unsigned_field("requests", m.requests);
  r.string_field("error", m.error);
  if (r.ok() && m.error.empty())  // an empty error would read as accepted, with no count
    r.fail("error", "must not be empty");
}

}  // namespace

std::string report::transport_list() const {
  std::string out;
  for (auto& t : transports)
    out += (out.empty() ? "" : ",") + t;
  return out;
}

std::string report::summary() const {
  return "succeeded=" + std::to_string(succeeded) + " failed=" + std::to_string(failed) +
         " cancelled=" + std::to_string(cancelled) + " in_flight=" + std::to_string(in_flight) +
         " unreleased=" + std::to_string(unreleased) + " transports=" + transport_list() +
         " healthy=" + (healthy ? "1" : "0") + " lost_wakeups=" + std::to_string(lost_wakeups);
}

template <class Message>
std::string to_line(const Message& m) {
  json j;
  j["msg"] = Message::name;
  write(j, m);
  return dump(j);
}

template <class Message>
parsed<Message> parse(std::string_view line) {
  using out = parsed<Message>;
  // The parser is asked not to throw; the try only guards against the unforeseen (bad_alloc),
  // since a driver must be able to read any line a dying child prints.
  try {
    auto j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded())
      return out::failure("not JSON: " + shown(line));
    if (!j.is_object())
      return out::failure("not a JSON object: " + shown(line));
    auto kind = j.find("msg");
    if (kind == j.end() || !kind->is_string())
      return out::failure("no string \"msg\" field: " + shown(line));
    if (kind->template get<std::string>() != Message::name)
      return out::failure("expected a \"" + std::string{Message::name} + "\" message, got \"" +
                          shown(kind->template get<std::string>()) + "\"");
    Message m;
    reader r{j, Message::name};
    read(r, m);
    if (!r.ok())
      return out::failure(r.error());
    return out{std::move(m), {}};
  } catch (const std::exception& e) {
    return out::failure(std::string{"cannot parse the line: "} + e.what());
  }
}

std::optional<std::string> kind_of(std::string_view line) {
  try {
    auto j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (!j.is_object())  // also true for a discarded (invalid) line
      return std::nullopt;
    auto kind = j.find("msg");
    if (kind == j.end() || !kind->is_string())
      return std::nullopt;
    return kind->get<std::string>();
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// The messages there are; to_line and parse exist for these only.
#define PROTOCOL_MESSAGE(T)                          \
  template std::string to_line<T>(const T&);         \
  template parsed<T> parse<T>(std::string_view);
PROTOCOL_MESSAGE(ready)
PROTOCOL_MESSAGE(offered)
PROTOCOL_MESSAGE(result)
PROTOCOL_MESSAGE(report)
PROTOCOL_MESSAGE(offer)
PROTOCOL_MESSAGE(fetch)
PROTOCOL_MESSAGE(report_request)
PROTOCOL_MESSAGE(quit)
#undef PROTOCOL_MESSAGE

}  // namespace kvferry::cli::protocol
