// What kvferry does with CAF values a peer may have built. CAF 0.17 renders them unchecked: a
// caf::duration with an out-of-range unit, decoded from the wire inside a message or an error's
// context, crashes its to_string (fuzz/README.md). So:
//  - an error that may come from a peer (an answer, a DOWN or exit reason) is described by its
//    category and code, never by rendering its context (describe_error);
//  - a message an actor does not expect is dropped without being printed, and its sender, if it
//    asked, gets sec::unexpected_message (drop_unexpected_quietly; CAF's default prints it);
//  - an actor address a peer named may be gone by the time it is read (its node disconnected
//    and CAF dropped the proxy): it is monitored only if it still names an actor
//    (monitor_if_alive; CAF 0.17's monitor() of such an address dereferences a null actor).
#pragma once

#include <string>

namespace caf {
class actor_addr;
class error;
class scheduled_actor;
}  // namespace caf

namespace kvferry {

// The code's name (kvferry's errc, CAF's sec and exit_reason; else the category and number),
// then the context when it holds only strings: ": text, text". "no error" for an empty one.
std::string describe_error(const caf::error& err);

// Replaces `self`'s default handler (CAF's print_and_drop) with a quiet drop, logged at debug.
void drop_unexpected_quietly(caf::scheduled_actor* self);

// Monitors `whom` if it still names an actor (a DOWN follows its end, at once if it has ended
// already); false, and nothing monitored, if nothing is left of it.
bool monitor_if_alive(caf::scheduled_actor* self, const caf::actor_addr& whom);

}  // namespace kvferry
