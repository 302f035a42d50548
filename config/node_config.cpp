// node_config loading: defaults < TOML file < KVFERRY_* environment < CLI overrides, then
// validate(). Every key is described once, in `keys` below (name, setter from a string, setter
// from a TOML node); the file, the environment and the command line all go through that table,
// so a new key is one line in the struct, one line in the table and one check in validate().
#include "kvferry/config.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <charconv>
#include <initializer_list>
#include <limits>
#include <string_view>
#include <type_traits>
#include <utility>

#include <sys/stat.h>
#include <unistd.h>  // environ, sysconf, access

#include <cerrno>
#include <cstring>

namespace kvferry {

namespace {

constexpr std::string_view env_prefix = "KVFERRY_";
constexpr std::string_view env_config_file = "KVFERRY_CONFIG";  // handled by callers

// A setter returns nullopt on success, otherwise the reason the value was refused.
using reason = std::optional<std::string>;
using string_setter = reason (*)(node_config&, std::string_view);
using toml_setter = reason (*)(node_config&, const toml::node&);

struct key_entry {
  std::string_view name;
  string_setter from_string;
  toml_setter from_toml;
};

std::string quoted(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  out += s;
  out += '"';
  return out;
}

const char* toml_type_name(toml::node_type type) {
  switch (type) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "nothing";
  }
}

template <class T>
std::string range_reason(const std::string& got) {
  return "must be between 0 and " + std::to_string(std::numeric_limits<T>::max()) +
         ", got " + got;
}

// Setters, generated per member. Strings take any value (validate() judges them); unsigned
// integers are parsed strictly: the whole string, decimal digits only, within T's range.
template <auto Member>
reason set_string(node_config& c, std::string_view text) {
  c.*Member = std::string(text);
  return std::nullopt;
}

template <auto Member>
reason set_string_toml(node_config& c, const toml::node& node) {
  const auto* value = node.as_string();
  if (value == nullptr) {
    return std::string("expected a string, got ") + toml_type_name(node.type());
  }
  c.*Member = value->get();
  return std::nullopt;
}

template <auto Member>
reason set_unsigned(node_config& c, std::string_view text) {
  using T = std::remove_reference_t<decltype(c.*Member)>;
  static_assert(std::is_unsigned_v<T>);
  if (text.empty()) return std::string("expected an integer, got an empty value");
  if (text.front() == '-') {
    const auto digits = text.substr(1);
    const bool number = !digits.empty() && digits.find_first_not_of("0123456789") ==
                                               std::string_view::npos;
    if (number) return range_reason<T>(std::string(text));
    return "expected an integer, got " + quoted(text);
  }
  unsigned long long parsed = 0;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  auto [end, ec] = std::from_chars(first, last, parsed, 10);
  if (ec == std::errc::result_out_of_range) return range_reason<T>(std::string(text));
  if (ec != std::errc() || end != last) {
    return "expected an integer, got " + quoted(text);
  }
  if (parsed > std::numeric_limits<T>::max()) return range_reason<T>(std::string(text));
  c.*Member = static_cast<T>(parsed);
  return std::nullopt;
}

template <auto Member>
reason set_unsigned_toml(node_config& c, const toml::node& node) {
  using T = std::remove_reference_t<decltype(c.*Member)>;
  const auto* value = node.as_integer();
  if (value == nullptr) {
    return std::string("expected an integer, got ") + toml_type_name(node.type());
  }
  const std::int64_t v = value->get();
  if (v < 0 || static_cast<std::uint64_t>(v) > std::numeric_limits<T>::max()) {
    return range_reason<T>(std::to_string(v));
  }
  c.*Member = static_cast<T>(v);
  return std::nullopt;
}

template <auto Member>
constexpr key_entry string_key(std::string_view name) {
  return {name, &set_string<Member>, &set_string_toml<Member>};
}

template <auto Member>
constexpr key_entry unsigned_key(std::string_view name) {
  return {name, &set_unsigned<Member>, &set_unsigned_toml<Member>};
}

// The one table of keys. Order is the documentation order (kvferry.example.toml follows it).
constexpr key_entry keys[] = {
    string_key<&node_config::node_name>("node_name"),
    string_key<&node_config::role>("role"),
    string_key<&node_config::listen_host>("listen_host"),
    unsigned_key<&node_config::listen_port>("listen_port"),
    string_key<&node_config::transport>("transport"),
    unsigned_key<&node_config::keepalive_interval_ms>("keepalive_interval_ms"),
    string_key<&node_config::device>("device"),
    unsigned_key<&node_config::staging_slots>("staging_slots"),
    unsigned_key<&node_config::staging_slot_bytes>("staging_slot_bytes"),
    unsigned_key<&node_config::max_blocks_per_request>("max_blocks_per_request"),
    unsigned_key<&node_config::max_fetches_in_flight>("max_fetches_in_flight"),
    unsigned_key<&node_config::default_deadline_ms>("default_deadline_ms"),
    unsigned_key<&node_config::progress_deadline_ms>("progress_deadline_ms"),
    unsigned_key<&node_config::quarantine_budget>("quarantine_budget"),
    unsigned_key<&node_config::network_stall_ms>("network_stall_ms"),
    unsigned_key<&node_config::connect_timeout_ms>("connect_timeout_ms"),
    unsigned_key<&node_config::cancel_timeout_ms>("cancel_timeout_ms"),
    unsigned_key<&node_config::max_request_id_bytes>("max_request_id_bytes"),
    unsigned_key<&node_config::max_parked_fetches>("max_parked_fetches"),
    unsigned_key<&node_config::max_parked_fetches_per_peer>("max_parked_fetches_per_peer"),
    unsigned_key<&node_config::max_peers>("max_peers"),
    unsigned_key<&node_config::drain_timeout_ms>("drain_timeout_ms"),
    unsigned_key<&node_config::scheduler_threads>("scheduler_threads"),
    string_key<&node_config::log_level>("log_level"),
    string_key<&node_config::tls_certificate>("tls_certificate"),
    string_key<&node_config::tls_key>("tls_key"),
    string_key<&node_config::tls_ca>("tls_ca"),
    string_key<&node_config::tls_allow>("tls_allow"),
    unsigned_key<&node_config::tls_handshake_timeout_ms>("tls_handshake_timeout_ms"),
    unsigned_key<&node_config::tls_max_pending_handshakes>("tls_max_pending_handshakes"),
    string_key<&node_config::layout_tag>("layout_tag"),
    string_key<&node_config::metrics_listen>("metrics_listen"),
};

const key_entry* find_key(std::string_view name) {
  for (const auto& k : keys) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

std::string env_name_of(std::string_view key) {
  std::string out(env_prefix);
  for (char ch : key) out += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return out;
}

// KVFERRY_LISTEN_PORT -> the entry for listen_port; nullptr for an unknown name.
const key_entry* find_env_key(std::string_view env_name) {
  for (const auto& k : keys) {
    if (env_name_of(k.name) == env_name) return &k;
  }
  return nullptr;
}

// 0 when unknown. Read once: sysconf reads /proc/meminfo each time.
std::uint64_t physical_memory_bytes() {
  static const std::uint64_t bytes = [] {
    long pages = sysconf(_SC_PHYS_PAGES);
    long page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return std::uint64_t{0};
    return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
  }();
  return bytes;
}

// A configuration file must be a readable regular file of sane size: /dev/zero, a directory or
// a FIFO would be read forever or parsed as nothing.
std::optional<std::string> unusable_file(const std::string& path) {
  constexpr std::uint64_t max_bytes = 1u << 20;
  if (path.empty()) return std::string("the configuration file path is empty");
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0)
    return "cannot read configuration file '" + path + "': " + std::strerror(errno);
  if (!S_ISREG(st.st_mode))
    return "configuration file '" + path + "' is not a regular file";
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes)
    return "configuration file '" + path + "' has " + std::to_string(st.st_size) +
           " bytes, more than the " + std::to_string(max_bytes) + " a configuration may have";
  if (::access(path.c_str(), R_OK) != 0)
    return "cannot read configuration file '" + path + "': " + std::strerror(errno);
  return std::nullopt;
}

// Remembers, per key, which source set it last, so that a validation error can say where the
// offending value came from.
using origin_map = std::map<std::string_view, std::string>;

// TOML 1.0 allows bytes beyond ASCII only in strings and comments; toml++ 3.3 reaches
// __builtin_unreachable for some of them elsewhere (fuzz/README.md). Such a byte is refused here,
// naming its line and column, before toml++ sees the text. nullopt: none. A quote opens a string
// only where TOML lets one start (a key at the start of a line or after '.', '{' or ',', a value
// after '=', '[' or ','): one inside a bare token is part of that token, as toml++ reads it.
std::optional<std::string> non_ascii_outside_strings(std::string_view text) {
  enum class in { code, comment, basic, literal, ml_basic, ml_literal } state = in::code;
  std::size_t line = 1, column = 0;
  char last = '\n';  // the last byte of code that is not a blank; '\n' at a line's start
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    ++column;
    if (state == in::code && ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n') {
      const bool may_open = std::string_view{"\n=[,{."}.find(last) != std::string_view::npos;
      last = ch;
      if (!may_open && (ch == '"' || ch == '\'')) continue;  // part of a bare token
    }
    auto ahead = [&](std::string_view s) { return text.compare(i, s.size(), s) == 0; };
    // A multi-line string's closing delimiter may follow up to two quotes of its content.
    auto close_extra = [&](char quote) {
      for (int k = 0; k < 2 && i + 1 < text.size() && text[i + 1] == quote; ++k) { ++i; ++column; }
    };
    if (ch == '\n') {
      ++line;
      column = 0;
      if (state != in::ml_basic && state != in::ml_literal) last = '\n';
      if (state == in::comment || state == in::basic || state == in::literal) state = in::code;
      continue;
    }
    switch (state) {
      case in::code:
        if (static_cast<unsigned char>(ch) >= 0x80)
          return "TOML syntax error at line " + std::to_string(line) + ", column " +
                 std::to_string(column) + ": a byte beyond ASCII outside a string or comment";
        if (ch == '#') state = in::comment;
        else if (ahead("\"\"\"")) { state = in::ml_basic; i += 2; column += 2; }
        else if (ahead("'''")) { state = in::ml_literal; i += 2; column += 2; }
        else if (ch == '"') state = in::basic;
        else if (ch == '\'') state = in::literal;
        break;
      case in::comment: break;
      case in::basic:
      case in::ml_basic:
        if (ch == '\\') {
          // An escape is ASCII; so is what follows a line-ending backslash and its blanks, which
          // toml++ asks "whitespace?" about. (TOML has no escape beyond ASCII either.)
          std::size_t k = i + 1;
          while (state == in::ml_basic && k < text.size() &&
                 std::string_view{" \t\r\n"}.find(text[k]) != std::string_view::npos)
            ++k;
          if (k < text.size() && static_cast<unsigned char>(text[k]) >= 0x80)
            return "TOML syntax error at line " + std::to_string(line) + ", column " +
                   std::to_string(column) + ": a backslash before a byte beyond ASCII";
          if (k == i + 1 && k < text.size() && text[k] != '\n') {
            ++i;  // an escape: the next byte never ends the string
            ++column;
          }
        }
        else if (state == in::basic && ch == '"') state = in::code;
        else if (state == in::ml_basic && ahead("\"\"\"")) { state = in::code; i += 2; column += 2; close_extra('"'); }
        break;
      case in::literal:
        if (ch == '\'') state = in::code;
        break;
      case in::ml_literal:
        if (ahead("'''")) { state = in::code; i += 2; column += 2; close_extra('\''); }
        break;
    }
  }
  return std::nullopt;
}

// toml++ 3.3.0's is_non_ascii_horizontal_whitespace reaches __builtin_unreachable for
// U+00A1..U+0499, U+2C5E..U+3057 (but U+3000) and U+FB26..U+FEFE, and its parser asks it in
// more places than bare tokens (after a backslash in a string, too): such a code point is
// refused wherever it is, naming its place. Sequences are decoded leniently (overlong forms
// count), as toml++ might.
std::optional<std::string> code_point_toml_cannot_read(std::string_view text) {
  std::size_t line = 1, column = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    ++column;
    const auto b = static_cast<unsigned char>(text[i]);
    if (b == '\n') {
      ++line;
      column = 0;
      continue;
    }
    if (b < 0xC0 || b >= 0xF8)
      continue;
    const std::size_t n = b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : 1;
    std::uint32_t cp = b & (0x3F >> n);
    bool whole = i + n < text.size();
    for (std::size_t k = 1; whole && k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      whole = (cc & 0xC0) == 0x80;
      cp = (cp << 6) | (cc & 0x3F);
    }
    const bool unreadable = (cp >= 0xA1 && cp <= 0x499) ||
                            (cp >= 0x2C5E && cp <= 0x3057 && cp != 0x3000) ||
                            (cp >= 0xFB26 && cp <= 0xFEFE);
    if (whole && unreadable) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "U+%04X", static_cast<unsigned>(cp));
      return "line " + std::to_string(line) + ", column " + std::to_string(column) + ": " +
             hex + " is a character the TOML parser (toml++ 3.3) cannot read safely";
    }
  }
  return std::nullopt;
}

std::optional<config_error> apply_file(node_config& c, origin_map& origin,
                                       const std::string& path) {
  const std::string file_source = "file:" + path;
  if (auto why = unusable_file(path)) return config_error{"", std::move(*why), file_source};
  std::string text;
  {
    std::ifstream in{path, std::ios::binary};
    if (!in) return config_error{"", "cannot read configuration file '" + path + "'", file_source};
    std::ostringstream bytes;
    bytes << in.rdbuf();
    text = bytes.str();
  }
  if (auto why = non_ascii_outside_strings(text)) return config_error{"", *why, file_source};
  if (auto why = code_point_toml_cannot_read(text)) return config_error{"", *why, file_source};
  toml::table table;
  try {
    table = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    std::string why = "TOML syntax error at line " + std::to_string(where.line) + ", column " +
                      std::to_string(where.column) + ": " + std::string(e.description());
    if (where.line == 0) why = "cannot read TOML file: " + std::string(e.description());
    return config_error{"", std::move(why), file_source};
  }
  for (const auto& [name, node] : table) {
    const std::string_view key = name.str();
    const std::string source = file_source + ":" + std::to_string(node.source().begin.line);
    const key_entry* entry = find_key(key);
    if (entry == nullptr) return config_error{std::string(key), "unknown key", source};
    if (auto why = entry->from_toml(c, node)) {
      return config_error{std::string(key), std::move(*why), source};
    }
    origin[entry->name] = source;
  }
  return std::nullopt;
}

std::optional<config_error> apply_environment(node_config& c, origin_map& origin,
                                              const std::map<std::string, std::string>& env) {
  for (const auto& [name, value] : env) {
    if (name.compare(0, env_prefix.size(), env_prefix) != 0) continue;  // not ours
    if (name == env_config_file) continue;  // names the file; callers handle it
    const std::string source = "env:" + name;
    const key_entry* entry = find_env_key(name);
    if (entry == nullptr) {
      return config_error{name, "unknown KVFERRY_* environment variable", source};
    }
    if (auto why = entry->from_string(c, value)) {
      return config_error{std::string(entry->name), std::move(*why), source};
    }
    origin[entry->name] = source;
  }
  return std::nullopt;
}

std::optional<config_error> apply_overrides(
    node_config& c, origin_map& origin,
    const std::vector<std::pair<std::string, std::string>>& overrides) {
  for (const auto& [key, value] : overrides) {
    const key_entry* entry = find_key(key);
    if (entry == nullptr) return config_error{key, "unknown key", "cli"};
    if (auto why = entry->from_string(c, value)) {
      return config_error{key, std::move(*why), "cli"};
    }
    origin[entry->name] = "cli";
  }
  return std::nullopt;
}

std::optional<config_error> one_of(std::string_view key, const std::string& value,
                                   std::initializer_list<std::string_view> allowed) {
  std::string list;
  for (auto a : allowed) {
    if (a == value) return std::nullopt;
    if (!list.empty()) list += ", ";
    list += a;
  }
  return config_error{std::string(key), "must be one of " + list + ", got " + quoted(value), ""};
}

std::optional<config_error> between(std::string_view key, std::uint64_t value, std::uint64_t lo,
                                    std::uint64_t hi) {
  if (value >= lo && value <= hi) return std::nullopt;
  return config_error{std::string(key),
                      "must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                          ", got " + std::to_string(value),
                      ""};
}

std::optional<config_error> not_empty(std::string_view key, const std::string& value) {
  if (!value.empty()) return std::nullopt;
  return config_error{std::string(key), "must not be empty", ""};
}

std::optional<config_error> check_tls(const node_config& c) {
  constexpr std::size_t max_path = 4096, max_names = 1024, max_name = 256;
  const std::pair<std::string_view, const std::string*> paths[] = {
      {"tls_certificate", &c.tls_certificate}, {"tls_key", &c.tls_key}, {"tls_ca", &c.tls_ca}};
  int set = 0;
  for (const auto& [key, value] : paths) {
    if (value->size() > max_path)
      return config_error{std::string(key), "must be a path of at most 4096 bytes, got " +
                                                std::to_string(value->size()), ""};
    set += value->empty() ? 0 : 1;
  }
  if (set != 0 && set != 3) {
    std::string missing;
    for (const auto& [key, value] : paths) {
      if (value->empty())
        missing += (missing.empty() ? "" : " and ") + std::string(key);
    }
    for (const auto& [key, value] : paths) {
      if (!value->empty())
        return config_error{std::string(key),
                            "is set but " + missing +
                                " not: mutual TLS needs tls_certificate, tls_key and tls_ca",
                            ""};
    }
  }
  const auto names = tls_allow_list(c);
  if (!names.empty() && set == 0)
    return config_error{"tls_allow",
                        "needs TLS: set tls_certificate, tls_key and tls_ca as well", ""};
  if (names.size() > max_names)
    return config_error{"tls_allow", "must name at most 1024 peers, got " +
                                         std::to_string(names.size()), ""};
  for (const auto& name : names) {
    if (name.size() > max_name)
      return config_error{"tls_allow", "names must be at most 256 bytes, got one of " +
                                           std::to_string(name.size()), ""};
  }
  return std::nullopt;
}

}  // namespace

std::vector<std::string> tls_allow_list(const node_config& c) {
  std::vector<std::string> out;
  std::string_view rest = c.tls_allow;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    const auto first = item.find_first_not_of(" \t");
    if (first == std::string_view::npos) continue;
    item = item.substr(first, item.find_last_not_of(" \t") - first + 1);
    out.emplace_back(item);
  }
  return out;
}

bool tls_enabled(const node_config& c) {
  return !c.tls_certificate.empty() && !c.tls_key.empty() && !c.tls_ca.empty();
}

std::string config_error::message() const {
  std::string out;
  if (!key.empty()) out += key + ": ";
  out += reason;
  if (!source.empty()) out += " (" + source + ")";
  return out;
}

std::vector<std::string> node_config_keys() {
  std::vector<std::string> out;
  for (const auto& k : keys) out.emplace_back(k.name);
  return out;
}

std::map<std::string, std::string> kvferry_environment() {
  std::map<std::string, std::string> out;
  if (environ == nullptr) return out;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    std::string_view item(*entry);
    if (item.compare(0, env_prefix.size(), env_prefix) != 0) continue;
    const auto eq = item.find('=');
    if (eq == std::string_view::npos) continue;
    out.emplace(std::string(item.substr(0, eq)), std::string(item.substr(eq + 1)));
  }
  return out;
}

std::optional<config_error> check_device(const std::string& device) {
  if (device == "auto" || device == "none" || device == "emulated")
    return std::nullopt;
  const std::string prefix = "cuda:";
  const std::string digits = device.size() > prefix.size() && device.compare(0, prefix.size(), prefix) == 0
                               ? device.substr(prefix.size())
                               : std::string{};
  if (!digits.empty() && digits.size() <= 4 &&
      std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
    return std::nullopt;
  return config_error{"device",
                      "must be \"auto\", \"none\", \"emulated\" or \"cuda:<n>\" (n: a device "
                      "number, at most 4 digits), got \"" + device + "\"",
                      ""};
}

std::optional<config_error> validate(const node_config& c) {
  using std::uint64_t;
  std::optional<config_error> e;
  if ((e = not_empty("node_name", c.node_name))) return e;
  if (c.node_name.size() > 256)
    return config_error{"node_name", "must be at most 256 bytes, got " +
                                       std::to_string(c.node_name.size()), ""};
  if ((e = one_of("role", c.role, {"prefill", "decode", "both"}))) return e;
  if ((e = not_empty("listen_host", c.listen_host))) return e;
  if ((e = one_of("transport", c.transport, {"auto", "shm", "tcp"}))) return e;
  if ((e = check_device(c.device))) return e;
  if ((e = between("staging_slots", c.staging_slots, 1, 4096))) return e;
  if ((e = between("staging_slot_bytes", c.staging_slot_bytes, 4096, uint64_t{1} << 30))) return e;
  // Reserved at start, so a reservation the machine cannot hold is refused now, not after
  // tens of seconds of failing piecemeal.
  if (auto physical = physical_memory_bytes();
      physical != 0 && c.staging_slot_bytes > physical / c.staging_slots) {
    return config_error{"staging_slots",
                        "staging_slots x staging_slot_bytes = " + std::to_string(c.staging_slots) +
                            " x " + std::to_string(c.staging_slot_bytes) +
                            " bytes exceeds this machine's physical memory (" +
                            std::to_string(physical) + " bytes)",
                        ""};
  }
  if ((e = between("max_blocks_per_request", c.max_blocks_per_request, 1,
                   std::numeric_limits<std::uint32_t>::max()))) {
    return e;
  }
  if ((e = between("max_fetches_in_flight", c.max_fetches_in_flight, 1, 1u << 20))) return e;
  if ((e = between("default_deadline_ms", c.default_deadline_ms, 0, 86400000))) return e;
  if ((e = between("progress_deadline_ms", c.progress_deadline_ms, 100, 86400000))) return e;
  if ((e = between("quarantine_budget", c.quarantine_budget, 1, 1u << 30))) return e;
  if ((e = between("network_stall_ms", c.network_stall_ms, 100, 600000))) return e;
  if ((e = between("connect_timeout_ms", c.connect_timeout_ms, 1, 600000))) return e;
  if ((e = between("cancel_timeout_ms", c.cancel_timeout_ms, 1, 60000))) return e;
  if ((e = between("max_request_id_bytes", c.max_request_id_bytes, 1, 65536))) return e;
  if ((e = between("max_parked_fetches", c.max_parked_fetches, 1, 1u << 24))) return e;
  if ((e = between("max_parked_fetches_per_peer", c.max_parked_fetches_per_peer, 1,
                   c.max_parked_fetches))) {
    return e;
  }
  if ((e = between("max_peers", c.max_peers, 1, 1u << 20))) return e;
  if ((e = between("drain_timeout_ms", c.drain_timeout_ms, 0, 600000))) return e;
  if ((e = between("scheduler_threads", c.scheduler_threads, 0, 256))) return e;
  if ((e = one_of("log_level", c.log_level,
                  {"trace", "debug", "info", "warn", "error", "critical", "off"}))) {
    return e;
  }
  if ((e = check_tls(c))) return e;
  if ((e = between("tls_handshake_timeout_ms", c.tls_handshake_timeout_ms, 100, 600000)))
    return e;
  if ((e = between("tls_max_pending_handshakes", c.tls_max_pending_handshakes, 1, 65536)))
    return e;
  if (c.layout_tag.size() > 4096)
    return config_error{"layout_tag", "must be at most 4096 bytes, got " +
                                        std::to_string(c.layout_tag.size()), ""};
  if (!c.metrics_listen.empty()) {
    std::string host;
    std::uint16_t port = 0;
    if (!parse_host_port(c.metrics_listen, host, port))
      return config_error{"metrics_listen",
                          "must be empty (off) or host:port with a port of 0 .. 65535, got '" +
                            c.metrics_listen + "'", ""};
  }
  return std::nullopt;
}

bool parse_host_port(const std::string& text, std::string& host, std::uint16_t& port) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size() ||
      text.size() - colon - 1 > 5)
    return false;
  unsigned long p = 0;
  for (auto c : text.substr(colon + 1)) {
    if (c < '0' || c > '9')
      return false;
    p = p * 10 + static_cast<unsigned long>(c - '0');
  }
  if (p > 65535)
    return false;
  auto h = text.substr(0, colon);
  if (h.front() == '[') {
    if (h.size() < 3 || h.back() != ']')
      return false;
    h = h.substr(1, h.size() - 2);
  } else if (h.find(':') != std::string::npos) {
    return false;  // an IPv6 address needs its brackets
  }
  host = h;
  port = static_cast<std::uint16_t>(p);
  return true;
}

result<node_config> load_node_config(const config_sources& sources, config_error* error) {
  node_config config;
  origin_map origin;
  std::optional<config_error> problem;
  if (sources.file) problem = apply_file(config, origin, *sources.file);
  if (!problem) problem = apply_environment(config, origin, sources.environment);
  if (!problem) problem = apply_overrides(config, origin, sources.overrides);
  if (!problem) {
    problem = validate(config);
    if (problem) {
      // Say which source supplied the refused value (defaults are always valid).
      if (auto it = origin.find(problem->key); it != origin.end()) problem->source = it->second;
    }
  }
  if (!problem) return config;
  if (error != nullptr) *error = *problem;
  return result<node_config>(errc::invalid_argument, problem->message());
}

}  // namespace kvferry
