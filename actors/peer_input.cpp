#include "actors/peer_input.hpp"

#include "actors/log.hpp"
#include "kvferry/errc.hpp"

#include <caf/actor_addr.hpp>
#include <caf/actor_cast.hpp>
#include <caf/error.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scheduled_actor.hpp>
#include <caf/sec.hpp>
#include <spdlog/spdlog.h>

namespace kvferry {

namespace {

// The context's strings, ", "-joined, when it holds nothing else; empty otherwise.
std::string context_strings(const caf::error& err) {
  auto& ctx = err.context();
  std::string out;
  for (std::size_t i = 0; i < ctx.size(); ++i) {
    if (!ctx.match_element<std::string>(i))
      return {};
    out += (i == 0 ? "" : ", ") + ctx.get_as<std::string>(i);
  }
  return out;
}

}  // namespace

std::string describe_error(const caf::error& err) {
  if (!err)  // a peer may send an empty one: its category() must not be read
    return "no error";
  auto code = err.code();
  auto category = err.category();
  std::string out;
  if (category == caf::atom("kvferry"))
    out = std::string{"kvferry "} + to_string(static_cast<errc>(code));
  else if (category == caf::atom("system") &&
           code <= static_cast<std::uint8_t>(caf::sec::connection_timeout))
    out = caf::to_string(static_cast<caf::sec>(code));
  else if (category == caf::atom("exit") &&
           code <= static_cast<std::uint8_t>(caf::exit_reason::unreachable))
    out = caf::to_string(static_cast<caf::exit_reason>(code));
  else
    out = "error " + std::to_string(code) + " of category '" + caf::to_string(category) + "'";
  if (auto text = context_strings(err); !text.empty())
    out += ": " + text;
  return out;
}

void drop_unexpected_quietly(caf::scheduled_actor* self) {
  self->set_default_handler(
    [](caf::scheduled_actor* s, caf::message_view& x) -> caf::result<caf::message> {
      auto from = s->current_sender();
      logger()->debug("{} dropped a message of {} element(s) it does not expect, from {}",
                      s->name(), x.content().size(),
                      !from ? "nobody" : from->node() == s->node() ? "this node" : "a peer");
      return caf::sec::unexpected_message;
    });
}

bool monitor_if_alive(caf::scheduled_actor* self, const caf::actor_addr& whom) {
  auto alive = caf::actor_cast<caf::strong_actor_ptr>(whom);
  if (!alive)
    return false;
  self->monitor(alive);
  return true;
}

}  // namespace kvferry
