// core/process_identity: a same-host peer's process, and the proof that it has ended (F20: a
// receive into UCX-allocated memory it mapped is released once it has).
#include "core/process_identity.hpp"

#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

using namespace kvferry;

TEST_CASE("this process names this boot, pid namespace and pid, and is not gone") {
  const auto& self = own_process();
  CHECK(self.pid == static_cast<std::uint32_t>(::getpid()));
  CHECK(!self.boot_id.empty());
  CHECK(self.pid_ns != 0);
  CHECK(self.start_ticks != 0);
  CHECK(process_checkable(self));
  CHECK(!process_gone(self));
}

TEST_CASE("a child is gone once it exited, as a zombie and once reaped, and a reused pid is told apart") {
  int go[2];
  REQUIRE(::pipe(go) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // waits for a byte, then exits (async-signal-safe calls only)
    char c;
    ::close(go[1]);
    (void)!::read(go[0], &c, 1);
    ::_exit(0);
  }
  ::close(go[0]);
  auto id = identity_of(static_cast<std::uint32_t>(child));
  REQUIRE(id.pid == static_cast<std::uint32_t>(child));
  CHECK(process_checkable(id));
  CHECK(!process_gone(id));  // running
  // The same pid with another start time: a later process under a reused pid, so ours is gone.
  auto reused = id;
  reused.start_ticks += 1;
  CHECK(process_gone(reused));
  // Exited and not yet reaped: a zombie, whose mappings are gone.
  CHECK(::write(go[1], "x", 1) == 1);
  siginfo_t info{};
  REQUIRE(::waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOWAIT) == 0);
  CHECK(process_gone(id));
  REQUIRE(::waitpid(child, nullptr, 0) == child);
  CHECK(process_gone(id));  // reaped: no such pid
  ::close(go[1]);
}

TEST_CASE("nothing is proven about a process of another host or pid namespace, or an unknown one") {
  auto other = own_process();
  other.pid = 0x7ffffff0;  // no such pid here...
  CHECK(process_gone(other));
  auto elsewhere = other;
  elsewhere.boot_id = "another-host";  // ...but on another host it may well run
  CHECK(!process_checkable(elsewhere));
  CHECK(!process_gone(elsewhere));
  auto other_ns = other;
  other_ns.pid_ns += 1;  // or in another pid namespace (a container)
  CHECK(!process_gone(other_ns));
  CHECK(!process_gone(process_identity{}));  // a peer that did not say
}
