// The idle case of kvferry bench (issue 13): with the two nodes connected and warm, nothing to
// do for a few seconds; how much CPU each process spends meanwhile, read from /proc, and which
// of its threads spend it. Reading /proc never throws: it uses open/read/close (a /proc file of
// a process that exits while it is read fails with ESRCH, which std::ifstream turns into an
// exception), and what cannot be read is unknown. No CAF here.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace kvferry::bench {

// What the idle case reads of one /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat.
struct proc_stat {
  std::string comm;                // field 2 without its parentheses: the thread's name
  std::uint64_t user_ticks = 0;    // field 14, utime, in clock ticks
  std::uint64_t system_ticks = 0;  // field 15, stime
};

// Parses the text of a stat file; nothing if it is not one. The name may hold spaces and
// parentheses: the fields after it are read from the last ')'.
std::optional<proc_stat> parse_proc_stat(std::string_view text);

// voluntary_ctxt_switches + nonvoluntary_ctxt_switches of the text of a /proc/.../status file:
// how often the thread left the CPU (mostly: went to sleep). Nothing if either is missing.
std::optional<std::uint64_t> parse_context_switches(std::string_view status);

// One reading of a process: its CPU time (its threads gone included) and each thread's.
struct thread_sample {
  std::string name;
  std::uint64_t ticks = 0;     // user + system
  std::uint64_t switches = 0;  // voluntary + involuntary
};
struct process_sample {
  std::uint64_t user_ticks = 0, system_ticks = 0;
  std::map<pid_t, thread_sample> threads;  // by thread id
};

// Reads /proc/<pid>/stat and /proc/<pid>/task/*/{stat,status}; nothing if the process cannot
// be read (it is gone, or there is no /proc). A thread that ends while it is read is left out.
std::optional<process_sample> sample_process(pid_t pid);

// The threads of one name (CAF 0.17 names its scheduler's workers "caf.multiplexer" too).
struct thread_usage {
  std::string name;
  std::uint32_t threads = 0;
  double cpu_percent = 0;  // of one core
  double switches_per_s = 0;
};
struct process_usage {
  double cpu_percent = 0;  // user + system, of one core
  double user_s = 0, system_s = 0;
  double switches_per_s = 0;        // the threads' context switches (wake-ups, roughly)
  std::vector<thread_usage> names;  // busiest first
};

// From `before` to `after`, `seconds` apart. A thread only in `after` counts from zero; one
// that ended in between counts in the process's total only.
process_usage usage_between(const process_sample& before, const process_sample& after,
                            double seconds);

// A process the idle case watches, and what it used.
struct idle_process {
  std::string role;  // "decode" (the bench's own process) or "prefill" (its child)
  pid_t pid = 0;
  std::optional<process_usage> usage;  // absent: /proc could not be read
};
struct idle_result {
  double settle_s = 0, seconds = 0;
  double resolution_percent = 0;  // one clock tick over the window, in % of one core
  std::vector<idle_process> processes;
};

// Waits `settle` (timers of earlier traffic run out), then reads each process, sleeps
// `window` and reads them again.
idle_result measure_idle(const std::vector<std::pair<std::string, pid_t>>& processes,
                         std::chrono::milliseconds settle, std::chrono::milliseconds window);

}  // namespace kvferry::bench
