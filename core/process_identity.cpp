#include "core/process_identity.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <sstream>

namespace kvferry {

namespace {

std::string read_line(const std::string& path) {
  std::string all;
  if (!read_small_file(path, &all))
    return {};
  return all.substr(0, all.find('\n'));
}

// /proc/<pid>/stat: the state letter and starttime (field 22), read after the last ')' (the
// command name may hold spaces and parentheses). False if the process does not exist.
bool read_stat(std::uint32_t pid, char* state, std::uint64_t* start_ticks) {
  std::string all;
  if (!read_small_file("/proc/" + std::to_string(pid) + "/stat", &all))
    return false;
  auto close = all.rfind(')');
  if (close == std::string::npos)
    return false;
  std::istringstream rest{all.substr(close + 1)};
  std::string field;
  rest >> field;  // field 3: state
  if (field.empty())
    return false;
  *state = field[0];
  for (int i = 4; i <= 22 && rest >> field; ++i) {
    if (i == 22) {
      *start_ticks = std::strtoull(field.c_str(), nullptr, 10);
      return true;
    }
  }
  return false;
}

// Entries of /proc/<pid>/task: the threads not yet gone (a zombie leader stays listed).
std::size_t threads_listed(std::uint32_t pid) {
  std::size_t n = 0;
  if (DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/task").c_str())) {
    while (dirent* e = ::readdir(d))
      n += e->d_name[0] != '.' ? 1 : 0;
    ::closedir(d);
  }
  return n;
}

}  // namespace

bool read_small_file(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  out->clear();
  char buf[4096];
  bool ok = true;
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      out->append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    ok = n == 0;
    break;
  }
  ::close(fd);
  return ok;
}

process_identity identity_of(std::uint32_t pid) {
  process_identity p;
  p.boot_id = read_line("/proc/sys/kernel/random/boot_id");
  struct stat ns {};
  if (::stat("/proc/self/ns/pid", &ns) == 0)
    p.pid_ns = static_cast<std::uint64_t>(ns.st_ino);
  char state = 0;
  p.pid = read_stat(pid, &state, &p.start_ticks) ? pid : 0;  // none (or no /proc): unknown
  return p;
}

const process_identity& own_process() {
  static const process_identity self = identity_of(static_cast<std::uint32_t>(::getpid()));
  return self;
}

bool process_checkable(const process_identity& p) {
  const auto& self = own_process();
  return p.pid != 0 && self.pid != 0 && !p.boot_id.empty() && p.boot_id == self.boot_id &&
         p.pid_ns != 0 && p.pid_ns == self.pid_ns;
}

bool process_gone(const process_identity& p) {
  if (!process_checkable(p))
    return false;
  char state = 0;
  std::uint64_t start = 0;
  if (!read_stat(p.pid, &state, &start))
    return true;  // no such process here
  if (start != p.start_ticks)
    return true;  // the pid names a later process
  // A leader that exited stays a zombie until its other threads are gone too.
  return (state == 'Z' || state == 'X') && threads_listed(p.pid) <= 1;
}

}  // namespace kvferry
