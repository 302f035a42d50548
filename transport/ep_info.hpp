// Reading what UCX really chose for an endpoint. Internal to transport/.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvferry::transport {

// Parses the text ucp_ep_print_info writes (UCX 1.13) and returns the transports ("posix",
// "sysv", "cma", "tcp", ...) of the lanes that carry RMA: the lanes listed as put[N]/get[N] or
// tagged rma#/rma_bw#. Without any RMA lane UCX emulates puts with active messages, so the
// active-message lanes (am, am_bw#) are returned instead. Each name appears once, in lane order.
std::vector<std::string> rma_transports_from_ep_info(std::string_view text);

}  // namespace kvferry::transport
