// Records every hop point (core/hop_trace.hpp) in order for as many requests as argv[1] says,
// the way a traced node would, and exits: its file is what tests/hop_trace_test.sh reads.
#include "core/hop_trace.hpp"

#include <cstdlib>

int main(int argc, char** argv) {
  const int requests = argc > 1 ? std::atoi(argv[1]) : 1;
  for (int r = 0; r < requests; ++r)
    for (int p = kvferry::hop::api_receive; p <= kvferry::hop::receive_finished; ++p)
      kvferry::hop::record(static_cast<kvferry::hop::point>(p));
  return 0;
}
