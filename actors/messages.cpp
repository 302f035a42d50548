// The out-of-line parts of the message types (actors/messages.hpp). Kept apart from every actor
// so that tools which only decode messages (the fuzz targets) link this file alone.
#include "actors/messages.hpp"

namespace kvferry {

const char* to_string(child_kind k) noexcept {
  switch (k) {
    case child_kind::transport: return "transport";
    case child_kind::pool: return "pool";
    case child_kind::sender: return "sender";
    case child_kind::receiver: return "receiver";
  }
  return "unknown";
}

}  // namespace kvferry
