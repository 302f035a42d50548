// FUZZ_CHECK(cond): an invariant of a fuzz target; a violation aborts, which libFuzzer reports
// as a finding with the input that caused it. Each target defines kFuzzTarget (its name).
#pragma once

#include <cstdio>
#include <cstdlib>

[[noreturn]] inline void fuzz_fail(const char* target, const char* what) {
  std::fprintf(stderr, "%s: invariant violated: %s\n", target, what);
  std::abort();
}

#define FUZZ_CHECK(cond)                 \
  do {                                   \
    if (!(cond))                         \
      fuzz_fail(kFuzzTarget, #cond);     \
  } while (false)
