#include "cli/child_process.hpp"

#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace kvferry::cli {

child_process::child_process(const std::vector<std::string>& argv) {
  int in_pipe[2], out_pipe[2];
  if (argv.empty() || pipe2(in_pipe, O_CLOEXEC) != 0)
    return;
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    ::close(in_pipe[0]);
    ::close(in_pipe[1]);
    return;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in_pipe[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ) == 0)
    pid_ = pid;
  posix_spawn_file_actions_destroy(&fa);
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  in_fd_ = in_pipe[1];
  out_fd_ = out_pipe[0];
  signal(SIGPIPE, SIG_IGN);
}

child_process::~child_process() {
  close_stdin();
  if (running() && !wait(std::chrono::milliseconds{3000})) {
    kill_now(SIGKILL);
    wait(std::chrono::milliseconds{3000});
  }
  if (out_fd_ >= 0)
    ::close(out_fd_);
}

std::optional<std::string> child_process::read_line(std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      auto line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      until - std::chrono::steady_clock::now());
    if (left.count() <= 0 || out_fd_ < 0)
      return std::nullopt;
    pollfd p{out_fd_, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR)
      continue;
    if (rc <= 0)
      return std::nullopt;
    char buf[4096];
    auto n = ::read(out_fd_, buf, sizeof(buf));
    if (n <= 0)
      return std::nullopt;  // EOF: the child closed its stdout (exited)
    buffer_.append(buf, static_cast<std::size_t>(n));
  }
}

std::optional<std::string> child_process::wait_for_line(const std::string& prefix,
                                                        std::chrono::milliseconds timeout) {
  return first_line_where(
    [&](const std::string& line) { return line.compare(0, prefix.size(), prefix) == 0; }, timeout);
}

std::optional<std::string> child_process::wait_for_message(std::string_view kind,
                                                           std::chrono::milliseconds timeout) {
  return first_line_where(
    [&](const std::string& line) { return protocol::kind_of(line) == kind; }, timeout);
}

std::optional<std::string> child_process::first_line_where(
  const std::function<bool(const std::string&)>& wanted, std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      until - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return std::nullopt;
    auto line = read_line(left);
    if (!line)
      return std::nullopt;
    if (wanted(*line))
      return line;
  }
}

bool child_process::write_line(const std::string& line) {
  if (in_fd_ < 0)
    return false;
  auto text = line + "\n";
  return ::write(in_fd_, text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

void child_process::close_stdin() {
  if (in_fd_ >= 0) {
    ::close(in_fd_);
    in_fd_ = -1;
  }
}

std::optional<int> child_process::wait(std::chrono::milliseconds timeout) {
  if (status_ || !running())
    return status_;
  auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int st = 0;
    auto rc = ::waitpid(pid_, &st, WNOHANG);
    if (rc == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      return status_;
    }
    if (rc < 0 || std::chrono::steady_clock::now() >= until)
      return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
}

void child_process::kill_now(int sig) {
  if (running() && !status_)
    ::kill(pid_, sig);
}

std::string self_executable() {
  char buf[4096];
  auto n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0)
    return {};
  return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace kvferry::cli
