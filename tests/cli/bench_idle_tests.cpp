// The /proc readers of kvferry bench's idle case (bench/idle.hpp): stat and status texts parse,
// names with spaces and parentheses included; a text that is not one gives nothing, never an
// exception; a process that is gone reads as unknown. Only the parsing and the arithmetic are
// checked here: CPU figures are measured by the bench, never asserted.
#include "bench/idle.hpp"

#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <string>

using namespace kvferry::bench;

TEST_CASE("a /proc stat line gives the thread's name and its user and system ticks") {
  const std::string line =
    "4242 (caf.multiplexer) S 4240 4240 100 34816 4240 4194368 1234 0 5 0 "
    "317 95 0 0 20 0 12 0 98765 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 4096 "
    "17922 0 0 0 17 1 0 0 0 0 0\n";
  auto s = parse_proc_stat(line);
  REQUIRE(s);
  CHECK(s->comm == "caf.multiplexer");
  CHECK(s->user_ticks == 317);
  CHECK(s->system_ticks == 95);
}

TEST_CASE("a name with spaces and parentheses does not shift the fields") {
  auto s = parse_proc_stat("7 (a (b) c) ) R 1 7 7 0 -1 4194304 0 0 0 0 11 22 0 0 20 0 1 0 5");
  REQUIRE(s);
  CHECK(s->comm == "a (b) c) ");
  CHECK(s->user_ticks == 11);
  CHECK(s->system_ticks == 22);
}

TEST_CASE("a text that is not a stat line gives nothing") {
  CHECK_FALSE(parse_proc_stat(""));
  CHECK_FALSE(parse_proc_stat("no parentheses 1 2 3"));
  CHECK_FALSE(parse_proc_stat("1 (short) S 1 2 3"));  // cut before utime
  CHECK_FALSE(parse_proc_stat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 -5 3"));  // utime not a count
  CHECK_FALSE(parse_proc_stat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 99999999999999999999999 3"));
  CHECK_FALSE(parse_proc_stat(")1 (x"));
}

TEST_CASE("context switches are the voluntary and involuntary ones of a status text") {
  const std::string status =
    "Name:\tkvferry-ucx\nState:\tS (sleeping)\nThreads:\t1\n"
    "voluntary_ctxt_switches:\t1200\nnonvoluntary_ctxt_switches:\t34\n";
  CHECK(parse_context_switches(status) == 1234u);
  CHECK_FALSE(parse_context_switches("Name:\tx\nvoluntary_ctxt_switches:\t5\n"));
  CHECK_FALSE(parse_context_switches(""));
  // A key that merely ends like the one wanted is not it.
  CHECK_FALSE(parse_context_switches("xvoluntary_ctxt_switches:\t5\nnonvoluntary_ctxt_switches:\t1\n"));
}

TEST_CASE("usage between two samples: per cent of one core, per thread name, busiest first") {
  const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  process_sample before, after;
  before.user_ticks = 10;
  before.system_ticks = 5;
  after.user_ticks = 10 + static_cast<std::uint64_t>(hz);  // one second of user time
  after.system_ticks = 5;
  before.threads[1] = {"worker", 100, 1000};
  after.threads[1] = {"worker", 100 + static_cast<std::uint64_t>(hz / 2), 1500};
  before.threads[2] = {"worker", 0, 0};
  after.threads[2] = {"worker", 0, 100};
  after.threads[3] = {"fresh", static_cast<std::uint64_t>(hz / 4), 40};  // started meanwhile
  before.threads[4] = {"gone", 50, 50};                                   // ended meanwhile
  auto u = usage_between(before, after, 10.0);
  CHECK(u.cpu_percent == doctest::Approx(10.0));
  CHECK(u.user_s == doctest::Approx(1.0));
  CHECK(u.system_s == doctest::Approx(0.0));
  CHECK(u.switches_per_s == doctest::Approx(64.0));  // (500 + 100 + 40) / 10 s
  REQUIRE(u.names.size() == 2);
  CHECK(u.names[0].name == "worker");
  CHECK(u.names[0].threads == 2);
  CHECK(u.names[0].cpu_percent == doctest::Approx(5.0));
  CHECK(u.names[1].name == "fresh");
  CHECK(u.names[1].cpu_percent == doctest::Approx(2.5));
  // Counters that went backwards (a reused thread id) count as nothing, never as a wrap.
  process_sample back = before;
  back.user_ticks = 0;
  CHECK(usage_between(before, back, 1.0).cpu_percent == 0.0);
  CHECK(usage_between(before, after, 0.0).cpu_percent == 0.0);
}

TEST_CASE("this process reads, and a process that is gone reads as unknown") {
  auto self = sample_process(::getpid());
  REQUIRE(self);
  CHECK_FALSE(self->threads.empty());
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0)
    ::_exit(0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);  // reaped: its pid names nothing now
  CHECK_FALSE(sample_process(child));
}
