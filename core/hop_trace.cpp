// Compiled only with -DKVFERRY_HOP_TRACE=ON (core/hop_trace.hpp).
#include "core/hop_trace.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>

namespace kvferry::hop {

namespace {

struct entry {
  int point;
  long long ns;
};

constexpr unsigned capacity = 1u << 20;

struct table {
  entry entries[capacity];
  std::atomic<unsigned> next{0};

  ~table() {
    const char* dir = std::getenv("HOP_TRACE_DIR");
    const std::string path = std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") +
                             "/hops." + std::to_string(static_cast<long>(getpid()));
    std::FILE* out = std::fopen(path.c_str(), "w");
    if (out == nullptr)
      return;
    const unsigned n = std::min(next.load(), capacity);
    for (unsigned i = 0; i < n; ++i)
      std::fprintf(out, "%d %lld\n", entries[i].point, entries[i].ns);
    std::fclose(out);
  }
};

table records;

}  // namespace

void record(point p) noexcept {
  const unsigned i = records.next.fetch_add(1, std::memory_order_relaxed);
  if (i >= capacity)
    return;
  records.entries[i] = entry{
    static_cast<int>(p),
    static_cast<long long>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count())};
}

}  // namespace kvferry::hop
