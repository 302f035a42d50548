// op_ledger: which copy and put operations the engines still hold, by token (the requester's
// actor id), kept beside the engines rather than in the transport actor, so that the proof of
// quiescence — the engine's completion callback — outlives a transport actor that crashed with
// operations in flight. Whoever must not reuse memory before an operation ended (a send-request
// whose transport died, the pool holding a dead holder's slot) asks when_quiescent. No CAF here.
//
//   posted(token) ─────────────> in flight (counted per token)
//   completed(token), last one ─> not in flight: every waiter runs, on the completing thread
//   when_quiescent(token, f) ───> f runs now if nothing of token is in flight, else at the end
//   retire(token, f) ──────────> the token's owner ended: nothing more of it is taken (posted
//                                answers false, so an operation still queued for the transport
//                                is refused, never started), and f runs as for when_quiescent
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace kvferry {

class op_ledger {
 public:
  // The transport is about to hand an operation of `token` to an engine (before the call: the
  // completion may come inside it). False: the token is retired; the operation must not start.
  [[nodiscard]] bool posted(std::uint64_t token) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (retired_.count(token) > 0)
      return false;
    ++ops_[token].count;
    return true;
  }

  // An operation of `token` completed (any outcome), or was never taken by the engine.
  void completed(std::uint64_t token) {
    std::vector<std::function<void()>> run;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      auto it = ops_.find(token);
      if (it == ops_.end())
        return;
      if (--it->second.count > 0)
        return;
      run = std::move(it->second.waiters);
      ops_.erase(it);
    }
    for (auto& f : run)
      f();
  }

  // Runs `then` once nothing of `token` is in flight: at once (on the caller's thread) if
  // nothing is, else on the thread that completes the last operation. `then` must only post
  // (send a message), never block.
  void when_quiescent(std::uint64_t token, std::function<void()> then) {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      auto it = ops_.find(token);
      if (it != ops_.end()) {
        it->second.waiters.push_back(std::move(then));
        return;
      }
    }
    then();
  }

  // The owner of `token` ended with its memory not yet proven quiescent: from now on nothing of
  // it starts, and once nothing of it is in flight `then` runs (as for when_quiescent). Tokens
  // are actor ids, never reused; a retired one is remembered (8 bytes) for the process's life,
  // since a message of its owner may wait in a transport's mailbox for any time.
  void retire(std::uint64_t token, std::function<void()> then) {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      retired_.insert(token);
    }
    when_quiescent(token, std::move(then));
  }

  bool in_flight(std::uint64_t token) const {
    std::lock_guard<std::mutex> guard{mtx_};
    return ops_.count(token) > 0;
  }

  // Tokens with operations in flight (tests, diagnostics).
  std::size_t size() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return ops_.size();
  }

 private:
  struct entry {
    std::uint32_t count = 0;
    std::vector<std::function<void()>> waiters;
  };
  mutable std::mutex mtx_;
  std::unordered_map<std::uint64_t, entry> ops_;
  std::unordered_set<std::uint64_t> retired_;
};

}  // namespace kvferry
