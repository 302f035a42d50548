#include "bench/idle.hpp"

#include "core/process_identity.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <thread>

namespace kvferry::bench {

namespace {

using steady = std::chrono::steady_clock;

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// The next whitespace-separated token of `text` from `*pos` on (empty at the end).
std::string_view next_token(std::string_view text, std::size_t* pos) {
  auto i = *pos;
  while (i < text.size() && is_space(text[i]))
    ++i;
  auto start = i;
  while (i < text.size() && !is_space(text[i]))
    ++i;
  *pos = i;
  return text.substr(start, i - start);
}

std::optional<std::uint64_t> to_u64(std::string_view s) {
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || s.empty())
    return std::nullopt;
  return v;
}

// The value of the line "key:<whitespace>N" of a status text.
std::optional<std::uint64_t> status_value(std::string_view status, std::string_view key) {
  std::size_t at = 0;
  while (at < status.size()) {
    auto eol = status.find('\n', at);
    auto line = status.substr(at, eol == std::string_view::npos ? std::string_view::npos : eol - at);
    if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == ':') {
      std::size_t pos = key.size() + 1;
      return to_u64(next_token(line, &pos));
    }
    if (eol == std::string_view::npos)
      break;
    at = eol + 1;
  }
  return std::nullopt;
}

double ticks_per_second() {
  static const double hz = [] {
    long v = ::sysconf(_SC_CLK_TCK);
    return v > 0 ? static_cast<double>(v) : 100.0;
  }();
  return hz;
}

}  // namespace

std::optional<proc_stat> parse_proc_stat(std::string_view text) {
  auto open = text.find('(');
  auto close = text.rfind(')');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open)
    return std::nullopt;
  proc_stat out;
  out.comm = std::string{text.substr(open + 1, close - open - 1)};
  std::size_t pos = close + 1;
  // Field 3 (the state) follows the name; utime and stime are fields 14 and 15.
  for (int field = 3; field <= 15; ++field) {
    auto token = next_token(text, &pos);
    if (token.empty())
      return std::nullopt;
    if (field == 14 || field == 15) {
      auto v = to_u64(token);
      if (!v)
        return std::nullopt;
      (field == 14 ? out.user_ticks : out.system_ticks) = *v;
    }
  }
  return out;
}

std::optional<std::uint64_t> parse_context_switches(std::string_view status) {
  auto voluntary = status_value(status, "voluntary_ctxt_switches");
  auto involuntary = status_value(status, "nonvoluntary_ctxt_switches");
  if (!voluntary || !involuntary)
    return std::nullopt;
  return *voluntary + *involuntary;
}

std::optional<process_sample> sample_process(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid);
  std::string text;
  if (!read_small_file(dir + "/stat", &text))
    return std::nullopt;
  auto total = parse_proc_stat(text);
  if (!total)
    return std::nullopt;
  process_sample out;
  out.user_ticks = total->user_ticks;
  out.system_ticks = total->system_ticks;
  std::vector<pid_t> tids;
  if (DIR* d = ::opendir((dir + "/task").c_str())) {
    while (dirent* e = ::readdir(d)) {
      auto name = std::string_view{e->d_name};
      if (auto tid = to_u64(name))
        tids.push_back(static_cast<pid_t>(*tid));
    }
    ::closedir(d);
  }
  for (auto tid : tids) {
    const std::string task = dir + "/task/" + std::to_string(tid);
    std::string stat, status;
    if (!read_small_file(task + "/stat", &stat) || !read_small_file(task + "/status", &status))
      continue;  // ended meanwhile
    auto s = parse_proc_stat(stat);
    auto switches = parse_context_switches(status);
    if (!s || !switches)
      continue;
    out.threads[tid] = thread_sample{s->comm, s->user_ticks + s->system_ticks, *switches};
  }
  return out;
}

process_usage usage_between(const process_sample& before, const process_sample& after,
                            double seconds) {
  process_usage out;
  if (seconds <= 0)
    return out;
  const double hz = ticks_per_second();
  auto delta = [](std::uint64_t a, std::uint64_t b) { return b > a ? b - a : 0; };
  out.user_s = static_cast<double>(delta(before.user_ticks, after.user_ticks)) / hz;
  out.system_s = static_cast<double>(delta(before.system_ticks, after.system_ticks)) / hz;
  out.cpu_percent = (out.user_s + out.system_s) / seconds * 100;
  std::map<std::string, thread_usage> names;
  std::uint64_t switches = 0;
  for (auto& [tid, now] : after.threads) {
    thread_sample then;
    if (auto it = before.threads.find(tid); it != before.threads.end() && it->second.name == now.name)
      then = it->second;
    const auto sw = delta(then.switches, now.switches);
    switches += sw;
    auto& n = names[now.name];
    n.name = now.name;
    ++n.threads;
    n.cpu_percent += static_cast<double>(delta(then.ticks, now.ticks)) / hz / seconds * 100;
    n.switches_per_s += static_cast<double>(sw) / seconds;
  }
  out.switches_per_s = static_cast<double>(switches) / seconds;
  for (auto& [name, u] : names)
    out.names.push_back(u);
  std::stable_sort(out.names.begin(), out.names.end(), [](auto& a, auto& b) {
    return a.cpu_percent != b.cpu_percent ? a.cpu_percent > b.cpu_percent
                                          : a.switches_per_s > b.switches_per_s;
  });
  return out;
}

idle_result measure_idle(const std::vector<std::pair<std::string, pid_t>>& processes,
                         std::chrono::milliseconds settle, std::chrono::milliseconds window) {
  idle_result out;
  out.settle_s = std::chrono::duration<double>(settle).count();
  std::this_thread::sleep_for(settle);
  std::vector<std::optional<process_sample>> before;
  for (auto& p : processes)
    before.push_back(sample_process(p.second));
  const auto t0 = steady::now();
  std::this_thread::sleep_for(window);
  std::vector<std::optional<process_sample>> after;
  for (auto& p : processes)
    after.push_back(sample_process(p.second));
  out.seconds = std::chrono::duration<double>(steady::now() - t0).count();
  out.resolution_percent = out.seconds > 0 ? 100 / ticks_per_second() / out.seconds : 0;
  for (std::size_t i = 0; i < processes.size(); ++i) {
    idle_process ip;
    ip.role = processes[i].first;
    ip.pid = processes[i].second;
    if (before[i] && after[i])
      ip.usage = usage_between(*before[i], *after[i], out.seconds);
    out.processes.push_back(std::move(ip));
  }
  return out;
}

}  // namespace kvferry::bench
