// ucp_ep_print_info on UCX 1.13 prints, for example (shared memory, PEER error mode):
//
//   #                 lane[0]:  1:sysv/memory.0 md[1]  -> md[1]/sysv/sysdev[255] am am_bw#0 keepalive
//   #                 lane[1]:  2:posix/memory.0 md[2] -> md[2]/posix/sysdev[255]
//   #
//   #                  put[0]: 0..<short>..4294967296..<bcopy>..(inf)
//   #                  get[0]: 0..<bcopy>..(inf)
//   #                  put[1]: 0..<short>..4294967296..<bcopy>..(inf)
//
// and over TCP only a lane "0:tcp/lo.0 ... am am_bw#0 keepalive wireup" with no put[N] lines:
// UCX then emulates RMA with active messages on that lane.
#include "transport/ep_info.hpp"

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <sstream>

namespace kvferry::transport {

namespace {

struct lane_info {
  std::string transport;
  bool rma = false;  // tagged rma#N / rma_bw#N, or listed as put[N] / get[N]
  bool am = false;   // tagged am / am_bw#N
};

bool has_token(const std::string& tags, const std::string& prefix) {
  std::istringstream in(tags);
  std::string token;
  while (in >> token) {
    if (token == prefix || token.rfind(prefix + "#", 0) == 0) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::vector<std::string> rma_transports_from_ep_info(std::string_view text) {
  static const std::regex lane_re(
      R"(lane\[(\d+)\]:\s+(?:\d+:([A-Za-z0-9_]+)/\S*|proxy to lane\[(\d+)\])[^>]*->\s*\S*(.*))");
  static const std::regex rma_proto_re(R"(^#\s*(?:put|get)\[(\d+)\]:)");

  std::map<int, lane_info> lanes;
  std::set<int> rma_from_proto;
  std::map<int, int> proxies;

  std::istringstream in{std::string(text)};
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, lane_re)) {
      const int index = std::stoi(m[1]);
      lane_info& lane = lanes[index];
      if (m[2].matched) {
        lane.transport = m[2];
      } else {
        proxies[index] = std::stoi(m[3]);
      }
      const std::string tags = m[4];
      lane.rma = has_token(tags, "rma") || has_token(tags, "rma_bw");
      lane.am = has_token(tags, "am") || has_token(tags, "am_bw");
    } else if (std::regex_search(line, m, rma_proto_re)) {
      rma_from_proto.insert(std::stoi(m[1]));
    }
  }
  for (const auto& [index, target] : proxies) {
    auto it = lanes.find(target);
    if (it != lanes.end()) {
      lanes[index].transport = it->second.transport;
    }
  }
  for (int index : rma_from_proto) {
    auto it = lanes.find(index);
    if (it != lanes.end()) {
      it->second.rma = true;
    }
  }

  const bool any_rma = std::any_of(lanes.begin(), lanes.end(),
                                   [](const auto& entry) { return entry.second.rma; });
  std::vector<std::string> result;
  for (const auto& [index, lane] : lanes) {
    const bool carries = any_rma ? lane.rma : lane.am;
    if (carries && !lane.transport.empty() &&
        std::find(result.begin(), result.end(), lane.transport) == result.end()) {
      result.push_back(lane.transport);
    }
  }
  return result;
}

}  // namespace kvferry::transport
