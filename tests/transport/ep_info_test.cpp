#include "transport/ep_info.hpp"

#include <doctest/doctest.h>

using kvferry::transport::rma_transports_from_ep_info;
using strings = std::vector<std::string>;

// Captured from UCX 1.13.1 (Debian), two workers in one process, PEER error mode.
static const char* const shm_info = R"(#
# UCP endpoint 
#
#               peer: <no debug data>
#                 lane[0]:  1:sysv/memory.0 md[1]           -> md[1]/sysv/sysdev[255] am am_bw#0 keepalive
#                 lane[1]:  2:posix/memory.0 md[2]          -> md[2]/posix/sysdev[255]
#
#                  put[0]: 0..<short>..4294967296..<bcopy>..(inf)
#                  get[0]: 0..<bcopy>..(inf)
#                  put[1]: 0..<short>..4294967296..<bcopy>..(inf)
#                  get[1]: 0..<bcopy>..(inf)
#
#                  rma_bw: mds #
)";

static const char* const tcp_info = R"(#
# UCP endpoint 
#
#               peer: <no debug data>
#                 lane[0]:  0:tcp/lo.0 md[0]                -> md[0]/tcp/sysdev[255] am am_bw#0 keepalive wireup
#
#
#                  rma_bw: mds #
)";

TEST_CASE("the shared-memory endpoint info yields the lanes that carry puts") {
  CHECK(rma_transports_from_ep_info(shm_info) == strings{"sysv", "posix"});
}

TEST_CASE("an endpoint without RMA lanes reports the active-message lane that emulates puts") {
  CHECK(rma_transports_from_ep_info(tcp_info) == strings{"tcp"});
}

TEST_CASE("lanes tagged rma_bw count as RMA lanes and proxies resolve to their target") {
  const char* text =
      "#                 lane[0]:  3:tcp/eth0.0 md[0]  -> md[0]/tcp am am_bw#0 wireup\n"
      "#                 lane[1]:  5:cma/memory.0 md[4] -> md[4]/cma rma_bw#0\n"
      "#                 lane[2]: proxy to lane[1]      -> md[4]/cma rma#0\n"
      "#                  rma_bw: mds [4] #\n";
  CHECK(rma_transports_from_ep_info(text) == strings{"cma"});
}

TEST_CASE("text without lanes yields no transports") {
  CHECK(rma_transports_from_ep_info("").empty());
  CHECK(rma_transports_from_ep_info("# UCP endpoint\n#\n").empty());
}
