#include "tests/support/fake_engine.hpp"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <utility>

namespace kvferry::testing {

namespace {

// A registration the fake engine hands out: the memory is real (caller's, or calloc'ed here),
// the rkey is fake_rkey(its 1-based index).
class fake_registration final : public transport::memory_registration {
 public:
  fake_registration(void* base, std::size_t bytes, bool owned, std::uint32_t index)
      : base_(base), bytes_(bytes), owned_(owned) {
    rkey_ = fake_rkey(index);
  }
  ~fake_registration() override {
    if (owned_)
      std::free(base_);
  }
  void* base() const noexcept override { return base_; }
  std::size_t bytes() const noexcept override { return bytes_; }
  const std::vector<std::uint8_t>& packed_rkey() const noexcept override { return rkey_; }
  bool ucx_allocated() const noexcept override { return owned_; }

 private:
  void* base_;
  std::size_t bytes_;
  bool owned_;
  std::vector<std::uint8_t> rkey_;
};

}  // namespace

std::vector<std::uint8_t> fake_worker_address(std::uint32_t tag) {
  std::vector<std::uint8_t> out{0x00};  // version 1, no flags; the 8-byte uuid follows
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<std::uint8_t>(i < 4 ? tag >> (8 * i) : 0xF0 + i));
  out.push_back(0xFF);  // no devices
  return out;
}

std::vector<std::uint8_t> fake_rkey(std::uint32_t tag) {
  std::vector<std::uint8_t> out(9, 0);  // md map 0 (no memory domain), memory type host
  out.push_back(0);                      // the system device, then two 3-byte distance entries
  out.insert(out.end(), {0, static_cast<std::uint8_t>(tag), static_cast<std::uint8_t>(tag >> 8)});
  out.insert(out.end(),
             {1, static_cast<std::uint8_t>(tag >> 16), static_cast<std::uint8_t>(tag >> 24)});
  return out;
}

fake_engine::fake_engine(transport::peer_error_fn on_peer_error)
    : on_peer_error_(std::move(on_peer_error)) {}

fake_engine::~fake_engine() {
  complete_where(pending(), errc::stopped,
                 "the fake transport engine stopped with puts outstanding");
}

// -- transport::engine ----------------------------------------------------------------------------

std::vector<std::uint8_t> fake_engine::worker_address() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return fake_worker_address(0xFA4E0000u + static_cast<std::uint32_t>(replacements_.size()));
}

result<std::shared_ptr<transport::memory_registration>> fake_engine::register_memory(
    void* ptr, std::size_t bytes) {
  if (ptr == nullptr || bytes == 0)
    return {errc::invalid_argument, "fake engine: cannot register an empty range"};
  std::lock_guard<std::mutex> guard{mtx_};
  auto index = static_cast<std::uint32_t>(++registrations_);
  return std::shared_ptr<transport::memory_registration>{
    std::make_shared<fake_registration>(ptr, bytes, false, index)};
}

result<std::shared_ptr<transport::memory_registration>> fake_engine::allocate_memory(
    std::size_t bytes) {
  if (bytes == 0)
    return {errc::invalid_argument, "fake engine: cannot allocate 0 bytes"};
  void* mem = std::calloc(1, bytes);
  if (mem == nullptr)
    return {errc::out_of_memory, "fake engine: calloc of " + std::to_string(bytes) + " failed"};
  std::lock_guard<std::mutex> guard{mtx_};
  auto index = static_cast<std::uint32_t>(++registrations_);
  return std::shared_ptr<transport::memory_registration>{
    std::make_shared<fake_registration>(mem, bytes, true, index)};
}

void fake_engine::connect(std::uint64_t peer, std::vector<std::uint8_t> worker_address) {
  std::lock_guard<std::mutex> guard{mtx_};
  connects_.push_back(connect_call{peer, std::move(worker_address)});
  if (std::find(connected_.begin(), connected_.end(), peer) == connected_.end())
    connected_.push_back(peer);
}

void fake_engine::disconnect(std::uint64_t peer) {
  std::lock_guard<std::mutex> guard{mtx_};
  disconnects_.push_back(peer);
  connected_.erase(std::remove(connected_.begin(), connected_.end(), peer), connected_.end());
}

std::uint64_t fake_engine::put(transport::put_batch batch, transport::completion_fn done) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (throw_next_put_) {
    auto what = std::move(*throw_next_put_);
    throw_next_put_.reset();
    throw std::runtime_error(what);
  }
  record r;
  r.put.op = records_.size() + 1;
  for (auto& o : batch.ops)
    r.put.bytes += o.dst.bytes;
  r.put.batch = std::move(batch);
  r.done = std::move(done);
  records_.push_back(std::move(r));
  return records_.back().put.op;
}

void fake_engine::cancel(std::uint64_t op_id) {
  std::lock_guard<std::mutex> guard{mtx_};
  cancels_.push_back(op_id);
  if (auto* r = find_locked(op_id); r != nullptr && !r->put.completed)
    r->put.cancel_requested = true;
}

std::vector<std::string> fake_engine::endpoint_transports(std::uint64_t peer) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (std::find(connected_.begin(), connected_.end(), peer) == connected_.end())
    return {};
  return transports_;
}

transport::engine_stats fake_engine::stats() const {
  std::lock_guard<std::mutex> guard{mtx_};
  transport::engine_stats s;
  s.ops_started = records_.size();
  s.ops_completed = completed_;
  s.ops_in_flight = records_.size() - completed_;
  s.bytes_put = bytes_put_;
  s.peers = connected_.size();
  s.worker_replacements = replacements_.size();
  return s;
}

void fake_engine::replace_worker(std::string reason) {
  std::lock_guard<std::mutex> guard{mtx_};
  replacements_.push_back(std::move(reason));
}

// -- what was posted ------------------------------------------------------------------------------

fake_engine::record* fake_engine::find_locked(std::uint64_t op) {
  return op == 0 || op > records_.size() ? nullptr : &records_[op - 1];
}

const fake_engine::record* fake_engine::find_locked(std::uint64_t op) const {
  return op == 0 || op > records_.size() ? nullptr : &records_[op - 1];
}

std::vector<posted_put> fake_engine::puts() const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<posted_put> out;
  out.reserve(records_.size());
  for (auto& r : records_)
    out.push_back(r.put);
  return out;
}

std::optional<posted_put> fake_engine::find(std::uint64_t op) const {
  std::lock_guard<std::mutex> guard{mtx_};
  if (auto* r = find_locked(op))
    return r->put;
  return std::nullopt;
}

posted_put fake_engine::last_put() const {
  std::lock_guard<std::mutex> guard{mtx_};
  if (records_.empty())
    throw std::logic_error("fake engine: no put was posted");
  return records_.back().put;
}

std::vector<std::uint64_t> fake_engine::pending() const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<std::uint64_t> out;
  for (auto& r : records_)
    if (!r.put.completed)
      out.push_back(r.put.op);
  return out;
}

std::size_t fake_engine::pending_count() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return records_.size() - completed_;
}

bool fake_engine::cancel_requested(std::uint64_t op) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto* r = find_locked(op);
  return r != nullptr && r->put.cancel_requested;
}

std::vector<std::uint64_t> fake_engine::cancel_calls() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return cancels_;
}

// -- the test completes ---------------------------------------------------------------------------

std::size_t fake_engine::complete_where(const std::vector<std::uint64_t>& ops, errc code,
                                        const std::string& detail) {
  std::vector<transport::completion_fn> callbacks;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    for (auto op : ops) {
      auto* r = find_locked(op);
      if (r == nullptr || r->put.completed)
        continue;
      r->put.completed = true;
      r->put.outcome = code;
      r->put.detail = detail;
      ++completed_;
      if (code == errc::none)
        bytes_put_ += r->put.bytes;
      callbacks.push_back(std::move(r->done));
      r->done = nullptr;
    }
  }
  for (auto& cb : callbacks)
    if (cb)
      cb(code, detail);
  return callbacks.size();
}

bool fake_engine::complete(std::uint64_t op, errc code, const std::string& detail) {
  return complete_where({op}, code, detail) == 1;
}

bool fake_engine::fail(std::uint64_t op, errc code, const std::string& detail) {
  if (code == errc::none)
    throw std::invalid_argument("fake_engine::fail needs an error code, not errc::none");
  return complete(op, code, detail);
}

std::size_t fake_engine::complete_all(errc code, const std::string& detail) {
  return complete_where(pending(), code, detail);
}

std::size_t fake_engine::fail_peer(std::uint64_t peer, errc code, const std::string& detail) {
  std::vector<std::uint64_t> ops;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    for (auto& r : records_)
      if (!r.put.completed && r.put.batch.peer == peer)
        ops.push_back(r.put.op);
  }
  return complete_where(ops, code, detail);
}

void fake_engine::peer_error(std::uint64_t peer, errc code, const std::string& detail) {
  if (on_peer_error_)
    on_peer_error_(peer, code, detail);
}

// -- other calls seen -----------------------------------------------------------------------------

std::vector<connect_call> fake_engine::connects() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return connects_;
}

std::vector<std::uint64_t> fake_engine::disconnects() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return disconnects_;
}

std::vector<std::string> fake_engine::worker_replacements() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return replacements_;
}

std::size_t fake_engine::registrations() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return registrations_;
}

// -- knobs ----------------------------------------------------------------------------------------

void fake_engine::throw_on_next_put(std::string what) {
  std::lock_guard<std::mutex> guard{mtx_};
  throw_next_put_ = std::move(what);
}

void fake_engine::set_endpoint_transports(std::vector<std::string> names) {
  std::lock_guard<std::mutex> guard{mtx_};
  transports_ = std::move(names);
}

}  // namespace kvferry::testing
