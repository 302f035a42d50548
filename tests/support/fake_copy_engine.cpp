#include "tests/support/fake_copy_engine.hpp"

#include <cstring>

namespace kvferry::testing {

fake_copy_engine::~fake_copy_engine() {
  std::vector<std::uint64_t> open;
  for (auto& c : copies())
    if (!c.completed)
      open.push_back(c.ticket);
  for (auto t : open)
    complete(t, errc::stopped);
}

std::uint64_t fake_copy_engine::submit(std::vector<copy_op> segments, gpu::copy_done_fn done) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto ticket = static_cast<std::uint64_t>(copies_.size() + 1);
  copies_.push_back(submitted_copy{ticket, std::move(segments), false});
  callbacks_.push_back(std::move(done));
  return ticket;
}

std::size_t fake_copy_engine::pending() const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::size_t n = 0;
  for (auto& c : copies_)
    n += c.completed ? 0 : 1;
  return n;
}

bool fake_copy_engine::complete(std::uint64_t ticket, errc code) {
  gpu::copy_done_fn done;
  std::vector<copy_op> segments;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (ticket == 0 || ticket > copies_.size() || copies_[ticket - 1].completed)
      return false;
    copies_[ticket - 1].completed = true;
    segments = copies_[ticket - 1].segments;
    done = std::move(callbacks_[ticket - 1]);
  }
  if (code == errc::none)
    for (auto& s : segments)
      std::memcpy(ptr_of(s.dst.addr), ptr_of(s.src), s.dst.bytes);
  if (done)
    done(code, code == errc::none ? std::string{} : "failed by the test");
  return true;
}

std::size_t fake_copy_engine::complete_all() {
  std::size_t n = 0;
  for (auto& c : copies())
    if (!c.completed && complete(c.ticket))
      ++n;
  return n;
}

std::vector<submitted_copy> fake_copy_engine::copies() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return copies_;
}

}  // namespace kvferry::testing
