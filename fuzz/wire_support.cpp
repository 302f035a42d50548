// What the wire harness and its seed generator need from the actor layer without linking it
// (kvferry_actors pulls in UCX, the transport and every actor).
#include "actors/messages.hpp"

namespace kvferry {

// CAF's stringification of the kvferry type-id block names child_kind; the real definition lives
// in actors/health_supervisor_actor.cpp. Weak: if that file is ever linked in, its copy wins.
__attribute__((weak)) const char* to_string(child_kind k) noexcept {
  switch (k) {
    case child_kind::transport: return "transport";
    case child_kind::pool: return "pool";
    case child_kind::sender: return "sender";
    case child_kind::receiver: return "receiver";
  }
  return "unknown";
}

}  // namespace kvferry
