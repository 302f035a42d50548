// process_identity: which process on which host, well enough to tell later that it has ended.
// A decode node asks each peer for it at connect(); when a same-host peer that maps this node's
// UCX-allocated memory goes away, its process being gone is the proof that nothing writes there
// any more (a dead process has no mappings), so those receives are released instead of
// quarantined (F20). Standard library and /proc only.
#pragma once

#include <cstdint>
#include <string>

namespace kvferry {

struct process_identity {
  std::string boot_id;          // /proc/sys/kernel/random/boot_id: the host's boot
  std::uint64_t pid_ns = 0;     // inode of /proc/self/ns/pid: whose pid numbers these are
  std::uint32_t pid = 0;        // 0: unknown (nothing can be proven about it)
  std::uint64_t start_ticks = 0;  // /proc/<pid>/stat starttime: tells a reused pid apart
};

// This process (computed once).
const process_identity& own_process();
// The process `pid` of this host and pid namespace now (pid 0 if there is none).
process_identity identity_of(std::uint32_t pid);

// The whole of a small file (a /proc file) with POSIX calls, never an exception: a /proc file
// of a process that exits while it is read fails with ESRCH, which std::ifstream turns into an
// exception. False when it cannot be read.
bool read_small_file(const std::string& path, std::string* out);

// True if `p` names a process of this host and pid namespace, about which process_gone can
// answer.
bool process_checkable(const process_identity& p);
// True only if `p` is provably a process of this host and pid namespace that has ended: no such
// pid, a pid now naming a process started at another time, or a zombie leader whose every other
// thread is gone (each thread drops the mappings before it is). False while any of its threads
// runs, when nothing can be said (process_checkable false), or for malformed values.
bool process_gone(const process_identity& p);

}  // namespace kvferry
