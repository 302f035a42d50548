#include "tests/support/fault_plan.hpp"

#include <algorithm>
#include <condition_variable>
#include <stdexcept>
#include <thread>

namespace kvferry::transport {

void fault_plan::add(fault_rule rule) {
  std::lock_guard<std::mutex> guard{mtx_};
  rules_.push_back(std::move(rule));
}

const fault_rule* fault_plan::next(const std::string& op) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto pos = std::find(ops_.begin(), ops_.end(), op);
  if (pos == ops_.end()) {
    ops_.push_back(op);
    calls_.push_back(0);
    pos = ops_.end() - 1;
  }
  auto n = ++calls_[static_cast<std::size_t>(pos - ops_.begin())];
  for (auto& r : rules_) {
    if (r.op == op && (r.nth == 0 || r.nth == n)) {
      ++applied_;
      return &r;
    }
  }
  return nullptr;
}

void fault_plan::hold(std::function<void()> resume) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    held_.push_back(std::move(resume));
  }
  held_cv_.notify_all();
}

bool fault_plan::wait_held(std::uint64_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> guard{mtx_};
  return held_cv_.wait_for(guard, timeout, [&] { return held_.size() >= count; });
}

std::vector<std::function<void()>> fault_plan::take_held() {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<std::function<void()>> out;
  out.swap(held_);
  return out;
}

void fault_plan::release_held() {
  for (auto& resume : take_held())
    resume();
}

std::uint64_t fault_plan::held() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return held_.size();
}

std::uint64_t fault_plan::applied() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return applied_;
}

namespace {

class faulty_engine final : public engine {
 public:
  faulty_engine(std::unique_ptr<engine> real, std::shared_ptr<fault_plan> plan)
      : real_(std::move(real)), plan_(std::move(plan)) {}

  ~faulty_engine() override {
    // Held operations still run (their completion must come exactly once), then delayed ones
    // finish, then the real engine tears down.
    plan_->release_held();
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      stopping_ = true;  // delayed operations go on at once: teardown does not wait them out
      threads.swap(delayed_);
    }
    stop_cv_.notify_all();
    for (auto& t : threads)
      t.join();
  }

  std::vector<std::uint8_t> worker_address() const override { return real_->worker_address(); }
  result<std::shared_ptr<memory_registration>> register_memory(void* p, std::size_t n) override {
    return real_->register_memory(p, n);
  }
  result<std::shared_ptr<memory_registration>> allocate_memory(std::size_t n) override {
    return real_->allocate_memory(n);
  }
  result<std::shared_ptr<memory_registration>> register_device_memory(void* p,
                                                                      std::size_t n) override {
    return real_->register_device_memory(p, n);
  }
  void connect(std::uint64_t peer, std::vector<std::uint8_t> address) override {
    real_->connect(peer, std::move(address));
  }
  void disconnect(std::uint64_t peer) override { real_->disconnect(peer); }

  std::uint64_t put(put_batch batch, completion_fn done) override {
    const fault_rule* rule = plan_->next("put");
    if (!rule)
      return forward(std::move(batch), std::move(done));
    switch (rule->action) {
      case fault_action::throw_std:
        throw std::runtime_error("injected fault: put threw std::runtime_error");
      case fault_action::throw_other:
        throw 42;  // deliberately not a std::exception
      case fault_action::fail:
        done(rule->code, "injected fault: put failed");
        return 0;
      case fault_action::delay:
      case fault_action::hold: {
        auto id = reserve_id();
        auto resume = [this, id, batch = std::move(batch), done = std::move(done)]() mutable {
          bind(id, real_->put(std::move(batch), std::move(done)));
        };
        if (rule->action == fault_action::hold) {
          plan_->hold(std::move(resume));
        } else {
          std::lock_guard<std::mutex> guard{mtx_};
          // The injected delay: the operation goes on once `delay_ms` passed, or at teardown.
          delayed_.emplace_back([this, ms = rule->delay_ms, resume = std::move(resume)]() mutable {
            {
              std::unique_lock<std::mutex> lock{mtx_};
              stop_cv_.wait_for(lock, std::chrono::milliseconds{ms}, [this] { return stopping_; });
            }
            resume();
          });
        }
        return id;
      }
    }
    return forward(std::move(batch), std::move(done));
  }

  void cancel(std::uint64_t op_id) override {
    std::uint64_t real_id = 0;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      auto it = std::find_if(ids_.begin(), ids_.end(), [&](auto& p) { return p.first == op_id; });
      if (it != ids_.end())
        real_id = it->second;
    }
    // A held or delayed operation is not in UCX yet: like a late completion, it still runs
    // when resumed, and its completion is what ends it.
    if (real_id != 0)
      real_->cancel(real_id);
  }

  std::vector<std::string> endpoint_transports(std::uint64_t peer) override {
    return real_->endpoint_transports(peer);
  }
  engine_stats stats() const override { return real_->stats(); }
  std::shared_ptr<receive_windows> windows() const override { return real_->windows(); }
  void replace_worker(std::string reason) override { real_->replace_worker(std::move(reason)); }

 private:
  std::uint64_t forward(put_batch batch, completion_fn done) {
    auto id = reserve_id();
    bind(id, real_->put(std::move(batch), std::move(done)));
    return id;
  }
  std::uint64_t reserve_id() {
    std::lock_guard<std::mutex> guard{mtx_};
    auto id = next_id_++;
    ids_.emplace_back(id, 0);
    return id;
  }
  void bind(std::uint64_t id, std::uint64_t real_id) {
    std::lock_guard<std::mutex> guard{mtx_};
    for (auto& p : ids_)
      if (p.first == id)
        p.second = real_id;
  }

  std::unique_ptr<engine> real_;
  std::shared_ptr<fault_plan> plan_;
  std::mutex mtx_;
  std::vector<std::thread> delayed_;
  std::condition_variable stop_cv_;  // wakes delayed operations at teardown
  bool stopping_ = false;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ids_;  // ours -> the real engine's
  std::uint64_t next_id_ = 1;
};

}  // namespace

std::unique_ptr<engine> make_faulty_engine(std::unique_ptr<engine> real,
                                           std::shared_ptr<fault_plan> plan) {
  return std::make_unique<faulty_engine>(std::move(real), std::move(plan));
}

namespace {

class faulty_copier final : public gpu::copy_engine {
 public:
  faulty_copier(std::shared_ptr<gpu::copy_engine> real, std::shared_ptr<fault_plan> plan)
      : real_(std::move(real)), plan_(std::move(plan)) {}
  std::uint64_t submit(std::vector<copy_op> segments, gpu::copy_done_fn done) override {
    const fault_rule* rule = plan_->next("copy");
    if (!rule || rule->action != fault_action::fail)
      return real_->submit(std::move(segments), std::move(done));
    // Nothing to copy: the real engine still completes it, on its thread, in its order.
    return real_->submit({}, [code = rule->code, done = std::move(done)](errc, const std::string&) {
      if (done)
        done(code, "injected fault: copy failed");
    });
  }
  std::size_t pending() const override { return real_->pending(); }
  bool wait_idle(std::chrono::milliseconds timeout) const override {
    return real_->wait_idle(timeout);
  }
  std::string name() const override { return real_->name(); }

 private:
  std::shared_ptr<gpu::copy_engine> real_;
  std::shared_ptr<fault_plan> plan_;
};

}  // namespace

std::shared_ptr<gpu::copy_engine> make_faulty_copier(std::shared_ptr<gpu::copy_engine> real,
                                                     std::shared_ptr<fault_plan> plan) {
  return std::make_shared<faulty_copier>(std::move(real), std::move(plan));
}

}  // namespace kvferry::transport
