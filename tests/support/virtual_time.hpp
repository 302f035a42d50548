// virtual_time: a doctest fixture that runs CAF actors on one thread, in an order the test
// decides, under a clock that moves only when the test says.
//
//   testing::virtual_time vt;                          // or derive a rig from it
//   auto t = vt.track(spawn_transport_actor(vt.system(), core));  // killed at teardown
//   auto r = vt.request<put_done>(t, put_atom::value, req);  // nothing runs yet
//   vt.run();                                          // every queued message; no timer fires
//   engine->complete(engine->last_put().op);           // queues op_done, on this thread
//   vt.run();  CHECK(r->value() == bytes);
//   vt.advance_time(99ms); vt.run();                   // a 100 ms delayed_send has not fired
//   vt.advance_time(1ms);  vt.run();                   // now it has, and was handled
//
// How a race is driven: every source of messages is the test thread. Actors only run inside
// run()/dispatch_one()/dispatch_to(); timers only fire inside advance_time()/fire_next_timeout();
// a fake engine's completion (tests/support/fake_engine.hpp) runs its callback, which queues a
// message, inside the engine's complete(). So "the deadline passes while the puts are in
// flight, then the engine reports the cancel" is written exactly in that order, and the test can
// look at every actor's observable state between any two steps. To interleave inside one step,
// queue several messages first (complete the engine op AND advance the clock), then pick who
// goes first with dispatch_to(actor).
//
// Why not CAF's own test DSL (caf/test/dsl.hpp, test_coordinator_fixture + expect/allow): it is
// written for CAF's unit-test engine, not doctest. Its fixture constructor parses
// caf::test::engine::argc()/argv() (only set by CAF's test main), and its checks report through
// CAF_CHECK/CAF_FAIL into that engine, so mixing it with doctest means running two test
// frameworks' bookkeeping in one binary. Its run() also fires every pending timeout whenever
// the mailboxes are empty, which is the opposite of "deadlines fire only when the test says".
// What we need from it is plain CAF classes: caf::scheduler::test_coordinator (selected with
// scheduler.policy = testing) and its caf::detail::test_actor_clock. This fixture drives those
// directly and reports through doctest.
//
// CAF 0.17 facts this relies on (each tried against Debian's libcaf 0.17.6; the first three are
// exercised by tests/actors/virtual_time_tests.cpp):
//   - spawn() only queues the new actor: the function that builds its behaviour (and any
//     delayed_send in it) runs at its first dispatch, i.e. in the next run().
//   - delayed_send/request timeouts/`after` timeouts go to the test clock. advance_time(d) fires
//     every timer due at or before now+d (a timer of N ms does not fire after N-1 ms, does after
//     N) by queueing its message; the receiver handles it in the next run().
//   - A request with caf::infinite registers no timer; one with a timeout is answered with
//     sec::request_timeout only when advance_time() passes it. An answered request removes its
//     timer. A request timer keeps the requester alive (strong reference) until it fires.
//   - anon_send from the test thread queues the receiver; nothing else may send into this
//     system from another thread (the coordinator's job queue is not synchronised): no real UCX
//     engine, no CPU copy engine thread (gpu::make_cpu_copy_engine: staged sends need a fake
//     copier first), no middleman (none is loaded). Use fakes that call back on the test thread.
//   - Down and exit messages are ordinary queued messages: after a kill, monitors hear of it in
//     the next run(). exit_reason::kill cannot be trapped by an exit handler.
//   - caf::scoped_actor works for send(), and for receive() of what is already in its mailbox
//     after run(), but request(...).receive(...) blocks the only thread that could answer:
//     use request<T>() here (an event-based probe actor) instead.
//   - Actors that read std::chrono::steady_clock themselves see wall-clock time, not this clock.
#pragma once

#include "kvferry/errc.hpp"

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace kvferry::testing {

// The answer to virtual_time::request<T>(): empty until the probe that made the request got its
// answer (so: at the earliest after the next run()).
template <class T>
class reply {
 public:
  bool answered() const noexcept { return answers_ > 0; }
  bool ok() const noexcept { return value_.has_value(); }
  // How many answers came: CAF delivers at most one per request, so 0 or 1.
  int answers() const noexcept { return answers_; }
  const T& value() const {
    if (!value_)
      throw std::logic_error("reply::value(): " + describe());
    return *value_;
  }
  const caf::error& error() const {
    if (!error_)
      throw std::logic_error("reply::error(): " + describe());
    return *error_;
  }
  // kvferry's code of an error answer; errc::none when there is none (yet); errc::internal_error
  // for CAF's own errors (compare error() with a caf::sec for those).
  errc code() const {
    if (!error_)
      return errc::none;
    if (error_->category() != caf::atom("kvferry"))
      return errc::internal_error;
    return static_cast<errc>(error_->code());
  }
  // For failure messages: "not answered", "value", or the rendered error.
  std::string describe() const {
    if (error_)
      return caf::to_string(*error_);
    return value_ ? "a value" : "not answered";
  }

  // Called by the probe.
  void set_value(T x) {
    ++answers_;
    value_ = std::move(x);
  }
  void set_error(caf::error e) {
    ++answers_;
    error_ = std::move(e);
  }

 private:
  int answers_ = 0;
  std::optional<T> value_;
  std::optional<caf::error> error_;
};

// What an actor made by virtual_time::spawn_recorder() received, in order.
struct recorder {
  caf::actor actor;
  std::shared_ptr<std::vector<caf::message>> inbox;
};

class virtual_time {
 public:
  using clock_type = caf::detail::test_actor_clock;

  // `configure` runs before the system starts (message types, error categories, options).
  explicit virtual_time(const std::function<void(caf::actor_system_config&)>& configure = {});
  // Kills every tracked actor, drops every pending timer (teardown never advances the clock),
  // runs until idle, and fails the test if any actor still runs then (e.g. a reference cycle
  // keeps it alive): the system is then leaked rather than left to hang in its destructor.
  virtual ~virtual_time();
  virtual_time(const virtual_time&) = delete;
  virtual_time& operator=(const virtual_time&) = delete;

  caf::actor_system& system() noexcept { return *sys_; }
  caf::scheduler::test_coordinator& scheduler() noexcept { return *sched_; }
  clock_type& clock() noexcept { return sched_->clock(); }

  // -- running (never moves the clock) -----------------------------------------------------------

  // Dispatches messages, one at a time in FIFO order over the actors that have some, until no
  // actor has one. Returns how many. Fails the test past `limit` (a livelock).
  std::size_t run(std::size_t limit = 1'000'000);
  // Dispatches exactly one message (the first actor in line handles its next one); false if
  // every mailbox is empty.
  bool dispatch_one();
  // Dispatches the next message of `h` first, ahead of the others; false if it has none.
  template <class Handle>
  bool dispatch_to(const Handle& h) {
    return queued(h) && sched_->prioritize(h) && sched_->try_run_once();
  }
  // Dispatches every message but those of `held`, until only `held` has some (what it was sent
  // stays in its mailbox, as in a busy actor). Returns how many.
  template <class Handle>
  std::size_t run_except(const Handle& held) {
    auto* skip = dynamic_cast<caf::resumable*>(caf::actor_cast<caf::abstract_actor*>(held));
    return sched_->run_jobs_filtered([skip](caf::resumable* job) { return job != skip; });
  }
  // True if `h` has messages waiting.
  template <class Handle>
  bool queued(const Handle& h) const {
    auto* ptr = dynamic_cast<caf::resumable*>(caf::actor_cast<caf::abstract_actor*>(h));
    return ptr != nullptr &&
           std::find(sched_->jobs.begin(), sched_->jobs.end(), ptr) != sched_->jobs.end();
  }
  // How many actors have messages waiting.
  std::size_t busy_actors() const noexcept { return sched_->jobs.size(); }
  bool idle() const noexcept { return sched_->jobs.empty(); }

  // -- virtual time ------------------------------------------------------------------------------

  // Moves the clock forward by `d` and fires every timer due by then (their messages are queued,
  // not handled: run() next). Returns how many fired.
  std::size_t advance_time(caf::timespan d);
  // advance_time(d), then run(). Returns the messages handled.
  std::size_t advance_and_run(caf::timespan d);
  // Moves the clock to the earliest pending timer (if it lies ahead) and fires it; false if none.
  bool fire_next_timeout();
  std::size_t pending_timeouts() const;
  // Virtual time until the earliest pending timer (zero if overdue); nullopt if none.
  std::optional<caf::timespan> next_timeout_in() const;
  // Virtual time since this fixture started.
  caf::timespan now() const;

  // -- talking to actors -------------------------------------------------------------------------

  // Queues a message without a sender (the receiver runs in the next run()).
  template <class Handle, class... Ts>
  void send(const Handle& to, Ts&&... xs) {
    caf::anon_send(to, std::forward<Ts>(xs)...);
  }

  // Asks `to` through a new (tracked) probe actor and returns the slot its answer lands in. The
  // request itself is sent when the probe first runs, i.e. in the next run(). `T` is the answer
  // type (checked against a typed actor's interface at compile time).
  template <class T, class Handle, class... Ts>
  std::shared_ptr<const reply<T>> request(const Handle& to, Ts&&... xs) {
    return request_impl<T>(caf::infinite, to, std::forward<Ts>(xs)...);
  }
  // The same with a request timeout, in virtual time (sec::request_timeout when it passes).
  template <class T, class Handle, class... Ts>
  std::shared_ptr<const reply<T>> request_within(caf::timespan timeout, const Handle& to,
                                                 Ts&&... xs) {
    return request_impl<T>(caf::duration{timeout}, to, std::forward<Ts>(xs)...);
  }

  // Spawns with system().spawn() and tracks the actor. Give a function at least one argument
  // after the self pointer: CAF 0.17's init_fun_factory dereferences a null
  // shared_ptr<std::tuple<>> when there is none (harmless in practice, but UBSan stops there).
  template <class... Ts>
  auto spawn(Ts&&... xs) {
    return track(sys_->spawn(std::forward<Ts>(xs)...));
  }
  // Remembers `h` (weakly: it does not keep the actor alive) to kill it at teardown.
  template <class Handle>
  Handle track(Handle h) {
    tracked_.push_back(caf::actor_cast<caf::actor_addr>(h));
    return h;
  }
  // Queues an exit message (exit_reason::kill cannot be trapped); monitors hear of the death in
  // the next run().
  template <class Handle>
  void kill(const Handle& h, caf::exit_reason reason = caf::exit_reason::kill) {
    caf::anon_send_exit(h, reason);
  }
  // A tracked actor that keeps every message it receives (a request to it is answered with an
  // empty message). A stand-in for a peer, an anchor, a monitor target.
  recorder spawn_recorder();

 private:
  template <class T, class Handle, class... Ts>
  std::shared_ptr<const reply<T>> request_impl(caf::duration timeout, const Handle& to,
                                               Ts&&... xs) {
    auto slot = std::make_shared<reply<T>>();
    auto args = std::make_tuple(std::decay_t<Ts>(std::forward<Ts>(xs))...);
    // The slot is a spawn argument, not a capture: see the note on spawn() below.
    spawn(
      [timeout, to, args](caf::event_based_actor* self, std::shared_ptr<reply<T>> slot) {
        // Anything else the probe is sent (a layer-wise send's progress goes to the fetching
        // actor) stays in its mailbox, unanswered: CAF 0.17 answers an unexpected message with
        // an error message, which ends a sender that has no error handler.
        self->set_default_handler(caf::skip);
        std::apply(
          [&](const auto&... a) {
            self->request(to, timeout, a...)
              .then([slot](T& x) { slot->set_value(std::move(x)); },
                    [slot](caf::error& e) { slot->set_error(std::move(e)); });
          },
          args);
      },
      slot);
    return slot;
  }

  caf::actor_system_config cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  caf::scheduler::test_coordinator* sched_ = nullptr;
  clock_type::time_point start_;
  std::vector<caf::actor_addr> tracked_;
};

}  // namespace kvferry::testing
