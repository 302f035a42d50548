// A child process with pipes to its stdin and stdout: the demo starts its prefill node with it,
// the integration tests their nodes. No CAF here.
#pragma once

#include "cli/protocol.hpp"

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace kvferry::cli {

class child_process {
 public:
  // Starts `argv[0]` with `argv` (stderr is inherited). Check running() afterwards.
  explicit child_process(const std::vector<std::string>& argv);
  ~child_process();  // closes stdin, waits briefly, then kills
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  bool running() const noexcept { return pid_ > 0; }
  pid_t pid() const noexcept { return pid_; }
  // Reads one line from the child's stdout, waiting at most `timeout`.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  // Reads lines until one starts with `prefix`; returns it (or nothing on timeout / EOF).
  std::optional<std::string> wait_for_line(const std::string& prefix,
                                           std::chrono::milliseconds timeout);
  bool write_line(const std::string& line);
  // Reads lines until a protocol message (cli/protocol.hpp) of kind `kind`, skipping any
  // other line; returns it (or nothing on timeout / EOF).
  std::optional<std::string> wait_for_message(std::string_view kind,
                                              std::chrono::milliseconds timeout);
  // The same, parsed: the next `Message`, or why there is none.
  template <class Message>
  protocol::parsed<Message> wait_for_message(std::chrono::milliseconds timeout) {
    auto line = wait_for_message(Message::name, timeout);
    if (!line)
      return protocol::parsed<Message>::failure(
        "no \"" + std::string{Message::name} + "\" message within " +
        std::to_string(timeout.count()) + " ms, or the process closed its output");
    return protocol::parse<Message>(*line);
  }
  template <class Message>
  bool send_message(const Message& m) {
    return write_line(protocol::to_line(m));
  }
  void close_stdin();
  // Waits at most `timeout` for the exit; the exit status, or nothing if still running.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  void kill_now(int sig = 9);

 private:
  std::optional<std::string> first_line_where(const std::function<bool(const std::string&)>& wanted,
                                              std::chrono::milliseconds timeout);

  pid_t pid_ = -1;
  int in_fd_ = -1;   // our end of the child's stdin
  int out_fd_ = -1;  // our end of the child's stdout
  std::string buffer_;
  std::optional<int> status_;
};

// The running executable's own path (/proc/self/exe).
std::string self_executable();

}  // namespace kvferry::cli
