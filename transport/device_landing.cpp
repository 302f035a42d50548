#include "transport/device_landing.hpp"

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <utility>

namespace kvferry::transport {

namespace {

// Page-aligned, so that pinning covers whole pages of the buffer only.
constexpr std::size_t page = 4096;

std::string copy_error(errc code, const std::string& detail) {
  return "copying into device memory failed: " +
         (detail.empty() ? std::string{to_string(code)} : detail);
}

// Calls a finish, which must not throw; if one does, the others still hear.
void call(device_landing::finish_fn& f, const std::string& error) noexcept {
  try {
    if (f)
      f(error);
  } catch (...) {
  }
  f = nullptr;
}

void call_all(std::vector<device_landing::finish_fn>& finishes, const std::string& error) noexcept {
  for (auto& f : finishes)
    call(f, error);
  finishes.clear();
}

}  // namespace

// Memory of our own, page-aligned, pinned if the hook agreed; freed (unpinned first) with it.
struct device_landing::buffer {
  std::uint8_t* data = nullptr;
  std::size_t bytes = 0;
  bool pinned = false;
  bool pooled = true;  // false: one message larger than buffer_bytes, freed after its copy
  std::function<void(void*)> unpin;

  buffer(std::size_t n, bool in_pool) : bytes(n), pooled(in_pool) {
    data = static_cast<std::uint8_t*>(std::aligned_alloc(page, (n + page - 1) / page * page));
  }
  ~buffer() {
    if (data == nullptr)
      return;
    if (pinned && unpin)
      unpin(data);
    std::free(data);
  }
  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;
};

struct device_landing::pool {
  std::mutex mutex;
  std::condition_variable returned;
  std::vector<std::unique_ptr<buffer>> all;  // every pooled buffer
  std::vector<buffer*> free;
  std::size_t creating = 0;  // allocations under way (counted against `buffers`)
  stats counts;

  void give_back(buffer* b) {
    if (!b->pooled) {
      delete b;
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      free.push_back(b);
    }
    returned.notify_one();
  }
};

device_landing::device_landing(options o) : options_(std::move(o)), pool_(std::make_shared<pool>()) {
  if (options_.buffer_bytes == 0)
    options_.buffer_bytes = page;
  if (options_.buffers == 0)
    options_.buffers = 1;
}

device_landing::~device_landing() {
  // A batch never flushed has copies its windows wait for: end them rather than leave them.
  call_all(current_.finishes, "the transport engine stopped before the copy into device memory "
                              "started");
  if (current_.where != nullptr)
    pool_->give_back(current_.where);
}

void device_landing::append(std::uint64_t dst, const void* data, std::size_t length,
                            finish_fn finish) noexcept {
  if (current_.where != nullptr && current_.where->bytes - current_.used < length)
    flush();
  if (current_.where == nullptr) {
    try {
      if (length > options_.buffer_bytes) {
        // A message larger than a pooled buffer (none of ours sends one) gets one of its own.
        auto b = std::make_unique<buffer>(length, false);
        if (b->data != nullptr)
          current_.where = b.release();
      } else {
        std::unique_lock<std::mutex> lock(pool_->mutex);
        if (pool_->free.empty() && pool_->all.size() + pool_->creating < options_.buffers) {
          ++pool_->creating;
          lock.unlock();
          // Allocating and pinning (the driver maps the pages) happen outside the lock, once
          // per buffer: a copy's end may want the lock meanwhile.
          std::unique_ptr<buffer> b;
          try {
            b = std::make_unique<buffer>(options_.buffer_bytes, true);
            if (b->data != nullptr && options_.pin) {
              b->pinned = options_.pin(b->data, b->bytes);
              b->unpin = options_.unpin;
            }
          } catch (...) {
            b.reset();
          }
          lock.lock();
          --pool_->creating;
          if (b && b->data != nullptr) {
            pool_->all.push_back(std::move(b));
            ++pool_->counts.buffers_allocated;
            if (pool_->all.back()->pinned)
              ++pool_->counts.buffers_pinned;
            current_.where = pool_->all.back().get();
          }
        } else {
          ++pool_->counts.waiting;
          // Bounded by the copy engine: every buffer is in a copy, and each copy ends (with an
          // error at worst).
          pool_->returned.wait(lock, [&] { return !pool_->free.empty(); });
          --pool_->counts.waiting;
          current_.where = pool_->free.back();
          pool_->free.pop_back();
        }
      }
    } catch (...) {
      // No buffer (an allocation failed): the message is refused below.
    }
    if (current_.where == nullptr) {
      call(finish, "no memory for a " + std::to_string(length) +
                     "-byte data message on its way to device memory");
      return;
    }
  }
  try {
    // A segment is never queued without its finish: the copy must not write for a window that
    // was told this message failed.
    current_.segments.reserve(current_.segments.size() + 1);
    current_.finishes.reserve(current_.finishes.size() + 1);
  } catch (...) {
    call(finish, "no memory to keep a data message on its way to device memory");
    return;
  }
  std::memcpy(current_.where->data + current_.used, data, length);
  current_.segments.push_back(
    copy_op{addr_of(current_.where->data + current_.used), desc{dst, length, 0}});
  current_.finishes.push_back(std::move(finish));
  current_.used += length;
  std::lock_guard<std::mutex> lock(pool_->mutex);
  ++pool_->counts.messages;
}

void device_landing::flush() noexcept {
  if (current_.where == nullptr)
    return;
  batch b = std::move(current_);
  current_ = batch{};
  if (b.segments.empty()) {
    pool_->give_back(b.where);
    return;
  }
  // The batch's finishes and buffer travel with the copy, and the pool with them.
  struct travelling {
    std::shared_ptr<pool> owner;
    buffer* where = nullptr;
    std::vector<finish_fn> finishes;
  };
  std::shared_ptr<travelling> t;
  std::function<void(errc, const std::string&)> done;
  try {
    t = std::make_shared<travelling>();  // the batch moves in only once this succeeded
    t->owner = pool_;
    t->where = b.where;
    t->finishes = std::move(b.finishes);
    done = [t](errc code, const std::string& detail) {
      t->owner->give_back(t->where);
      call_all(t->finishes, code == errc::none ? std::string{} : copy_error(code, detail));
    };
  } catch (...) {
    // Nothing was handed over: nothing reads the buffer.
    call_all(t ? t->finishes : b.finishes, "no memory to start the copy into device memory");
    pool_->give_back(b.where);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(pool_->mutex);
    ++pool_->counts.copies;
  }
  try {
    options_.submit(std::move(b.segments), done);
  } catch (...) {
    // The copy engine took nothing (it threw before queueing): nothing reads the buffer.
    done(errc::transport_error, "the copy into device memory could not be started");
  }
}

device_landing::stats device_landing::counts() const {
  std::lock_guard<std::mutex> lock(pool_->mutex);
  stats s = pool_->counts;
  s.buffers_free = pool_->free.size();
  return s;
}

}  // namespace kvferry::transport
