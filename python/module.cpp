// The Python module kvferry._kvferry: the public C++ API (include/kvferry) for Python, nothing
// more. Python never sees CAF or UCX. Every call that can wait (start, connect, register, wait,
// wait_released, wait_events, cancel, stop) releases the GIL while it waits.
#include <kvferry/kvferry.hpp>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace py = pybind11;
using namespace kvferry;

namespace {

// kvferry.Error(code, message): the Python side of an errc (code is its lower-case name).
py::object error_type;

[[noreturn]] void raise(errc code, const std::string& message) {
  PyErr_SetObject(error_type.ptr(), py::make_tuple(to_string(code), message).ptr());
  throw py::error_already_set();
}

template <class T>
T value_or_raise(result<T> r) {
  if (!r)
    raise(r.error().code, r.error().message);
  return std::move(r.value());
}

// Runs `call` (a node call returning result<T>) with the GIL released; its error raises.
template <class F>
auto unlocked_or_raise(F&& call) {
  std::optional<decltype(call())> r;
  {
    py::gil_scoped_release unlocked;
    r.emplace(call());
  }
  return value_or_raise(std::move(*r));
}

std::chrono::milliseconds to_ms(std::optional<double> seconds, double fallback) {
  double s = seconds.value_or(fallback);
  if (!(s >= 0) || s > 1e7)
    throw py::value_error("timeout must be between 0 and 1e7 seconds, got " + std::to_string(s));
  return std::chrono::milliseconds{static_cast<std::int64_t>(std::llround(s * 1000))};
}

// A configuration from None (defaults), a dict (keys of node_config, any values: they are read
// as strings, like --set) or a path to a TOML file. KVFERRY_* environment variables apply too.
node_config config_from(const py::object& spec) {
  config_sources src;
  src.environment = kvferry_environment();
  if (spec.is_none()) {
  } else if (py::isinstance<py::dict>(spec)) {
    for (auto item : spec.cast<py::dict>()) {
      auto value = item.second;
      std::string text;
      if (py::isinstance<py::bool_>(value))
        text = value.cast<bool>() ? "true" : "false";
      else if (py::isinstance<py::bytes>(value))  // e.g. layout_tag: opaque bytes
        text = value.cast<std::string>();
      else
        text = py::str(value).cast<std::string>();
      src.overrides.emplace_back(py::str(item.first).cast<std::string>(), text);
    }
  } else if (py::isinstance<py::str>(spec) || py::hasattr(spec, "__fspath__")) {
    src.file = py::str(spec.attr("__fspath__")()).cast<std::string>();
  } else {
    throw py::type_error("a node configuration is None, a dict or a path to a TOML file");
  }
  return value_or_raise(load_node_config(src));
}

// Spans: an N x 3 array of unsigned integers (region, offset, bytes), or a sequence of
// 3-tuples.
std::vector<block_span> spans_from(const py::object& spans) {
  std::vector<block_span> out;
  if (py::isinstance<py::array>(spans)) {
    auto a = py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>::ensure(spans);
    if (!a || a.ndim() != 2 || a.shape(1) != 3)
      throw py::value_error("spans must be an N x 3 array of (region, offset, bytes)");
    auto v = a.unchecked<2>();
    out.reserve(static_cast<std::size_t>(v.shape(0)));
    for (py::ssize_t i = 0; i < v.shape(0); ++i) {
      if (v(i, 0) > UINT32_MAX)
        throw py::value_error("span " + std::to_string(i) + ": region id out of range");
      out.push_back({static_cast<region_id>(v(i, 0)), v(i, 1), v(i, 2)});
    }
    return out;
  }
  for (auto item : spans) {
    auto t = py::reinterpret_borrow<py::sequence>(item);
    if (t.size() != 3)
      throw py::value_error("each span is (region, offset, bytes)");
    out.push_back({t[0].cast<region_id>(), t[1].cast<std::uint64_t>(), t[2].cast<std::uint64_t>()});
  }
  return out;
}

// Memory to register: (pointer, size), a writable buffer (numpy array, bytearray, memoryview),
// or an object with data_ptr() (a torch tensor: data_ptr() and nbytes, or element_size() *
// numel()). The caller keeps the object alive for the node's lifetime.
std::pair<void*, std::size_t> memory_of(const py::object& obj, std::optional<std::size_t> size) {
  if (size) {
    if (!py::isinstance<py::int_>(obj))
      throw py::type_error("register(ptr, size): ptr must be an integer address");
    return {reinterpret_cast<void*>(obj.cast<std::uintptr_t>()), *size};
  }
  if (py::hasattr(obj, "data_ptr")) {
    auto ptr = obj.attr("data_ptr")().cast<std::uintptr_t>();
    std::size_t bytes = py::hasattr(obj, "nbytes")
                          ? obj.attr("nbytes").cast<std::size_t>()
                          : obj.attr("element_size")().cast<std::size_t>() *
                              obj.attr("numel")().cast<std::size_t>();
    if (py::hasattr(obj, "is_contiguous") && !obj.attr("is_contiguous")().cast<bool>())
      throw py::value_error("a tensor to register must be contiguous");
    return {reinterpret_cast<void*>(ptr), bytes};
  }
  py::buffer_info info = py::reinterpret_borrow<py::buffer>(obj).request(/*writable=*/true);
  py::ssize_t expected = info.itemsize;
  for (py::ssize_t i = info.ndim - 1; i >= 0; --i) {
    if (info.strides[static_cast<std::size_t>(i)] != expected)
      throw py::value_error("a buffer to register must be contiguous");
    expected *= info.shape[static_cast<std::size_t>(i)];
  }
  return {info.ptr, static_cast<std::size_t>(info.size * info.itemsize)};
}

py::dict result_dict(const transfer_result& r) {
  py::dict d;
  d["status"] = to_string(r.status);
  d["code"] = to_string(r.code);
  d["message"] = r.message;
  d["bytes"] = r.bytes;
  d["queue_us"] = r.timing.queue_us;
  d["first_byte_us"] = r.timing.first_byte_us;
  d["transfer_us"] = r.timing.transfer_us;
  d["transport"] = r.transport;
  return d;
}

py::object optional_result(const std::optional<transfer_result>& r) {
  return r ? py::object(result_dict(*r)) : py::object(py::none());
}

py::list events_list(const std::vector<transfer_event>& evs) {
  py::list out;
  for (auto& e : evs) {
    py::dict d;
    d["request_id"] = e.request_id;
    switch (e.kind) {
      case event_kind::completed:
        d["kind"] = "completed";
        break;
      case event_kind::released:
        d["kind"] = "released";
        break;
      case event_kind::layer_landed:
        d["kind"] = "layer_landed";
        d["layer"] = e.layer;
        d["layers"] = e.layers;
        break;
    }
    d["result"] = result_dict(e.result);
    out.append(std::move(d));
  }
  return out;
}

py::dict health_dict(const health_snapshot& h) {
  py::dict d;
  d["healthy"] = h.healthy;
  d["reason"] = h.reason;
  d["stalled"] = h.stalled;
  d["network_stalled"] = h.network_stalled;
  d["tls_refused"] = h.tls_refused;
  d["ms_since_progress"] = h.ms_since_progress;
  d["in_flight"] = h.in_flight;
  d["succeeded"] = h.succeeded;
  d["failed"] = h.failed;
  d["cancelled"] = h.cancelled;
  d["unreleased"] = h.unreleased;
  d["poisoned"] = h.poisoned;
  d["parked_fetches"] = h.parked_fetches;
  d["peers"] = h.peers;
  d["quarantine_full"] = h.quarantine_full;
  d["restarts"] = h.restarts;
  d["worker_replacements"] = h.worker_replacements;
  d["writes_refused"] = h.writes_refused;
  d["lost_wakeups"] = h.lost_wakeups;
  d["bytes_sent"] = h.bytes_sent;
  d["bytes_received"] = h.bytes_received;
  return d;
}

// The Python Node: owns the C++ node; stop() (or leaving a with-block) stops it.
class py_node {
 public:
  explicit py_node(const py::object& spec) {
    auto cfg = config_from(spec);
    node_ = unlocked_or_raise([&] { return node::start(cfg); });
  }

  node& get() {
    if (!node_)
      raise(errc::stopped, "the node was stopped");
    return *node_;
  }

  void stop(std::optional<double> drain_s) {
    if (!node_)
      return;
    auto drain = to_ms(drain_s, 1.0);
    py::gil_scoped_release unlocked;
    node_->stop(drain);
    node_.reset();
  }

 private:
  std::unique_ptr<node> node_;
};

}  // namespace

PYBIND11_MODULE(_kvferry, m) {
  m.doc() = "kvferry: moves KV-cache blocks between prefill and decode workers (C++ core).";
  error_type = py::module_::import("kvferry.errors").attr("Error");

  py::class_<transfer_handle>(m, "Transfer", "One transfer as the engine sees it (a value).")
    .def_property_readonly("request_id", &transfer_handle::request_id)
    .def_property_readonly(
      "status", [](const transfer_handle& h) { return std::string{to_string(h.status())}; },
      "pending, in_flight, succeeded, failed or cancelled (never blocks)")
    .def_property_readonly("released", &transfer_handle::released,
                           "True once the request's memory may be reused (never blocks)")
    .def_property_readonly(
      "result", [](const transfer_handle& h) { return optional_result(h.result()); },
      "the terminal result as a dict (status, code, message, bytes), or None")
    .def(
      "wait",
      [](const transfer_handle& h, std::optional<double> timeout) {
        auto ms = to_ms(timeout, 30.0);
        std::optional<transfer_result> r;
        {
          py::gil_scoped_release unlocked;
          r = h.wait_for(ms);
        }
        return optional_result(r);
      },
      py::arg("timeout") = py::none(),
      "Waits at most timeout seconds (default 30) for the terminal result; None if it did not come.")
    .def(
      "wait_released",
      [](const transfer_handle& h, std::optional<double> timeout) {
        auto ms = to_ms(timeout, 30.0);
        py::gil_scoped_release unlocked;
        return h.wait_released(ms);
      },
      py::arg("timeout") = py::none(),
      "Waits at most timeout seconds for the released event; True once the memory may be reused.")
    .def_property_readonly("layers_landed", &transfer_handle::layers_landed,
                           "Receive side of a layer-wise send: how many layers have landed")
    .def(
      "wait_layer",
      [](const transfer_handle& h, std::uint32_t layer, std::optional<double> timeout) {
        auto ms = to_ms(timeout, 30.0);
        py::gil_scoped_release unlocked;
        return h.wait_layer(layer, ms);
      },
      py::arg("layer"), py::arg("timeout") = py::none(),
      "Receive side of a layer-wise send: waits at most timeout seconds (default 30) for that "
      "layer to land; True once it has, False on timeout or if the transfer ended without it.");

  py::class_<py_node>(m, "Node", "One kvferry node (see kvferry.Node for the Python face).")
    .def(py::init<const py::object&>(), py::arg("config") = py::none())
    .def_property_readonly("port", [](py_node& n) { return n.get().port(); })
    .def_property_readonly("epoch", [](py_node& n) { return n.get().epoch(); })
    .def_property_readonly(
      "metrics_port", [](py_node& n) { return n.get().metrics_port(); },
      "Port of the /metrics and /healthz endpoint (config metrics_listen); 0 while off.")
    .def(
      "register",
      [](py_node& n, const py::object& memory, std::optional<std::size_t> size,
         std::optional<std::string> given_kind) {
        // A torch tensor says where it lives; UCX must never be handed device memory as host.
        const bool on_device = py::hasattr(memory, "is_cuda") && memory.attr("is_cuda").cast<bool>();
        const std::string kind = given_kind.value_or(on_device ? "cuda" : "host");
        if (kind != "host" && kind != "cuda")
          throw py::value_error("kind is 'host' or 'cuda'");
        if (on_device && kind == "host")
          throw py::value_error("a CUDA tensor is device memory: register it with kind='cuda' "
                                "(or leave kind out)");
        auto [ptr, bytes] = memory_of(memory, size);
        auto& nd = n.get();
        auto mk = kind == "cuda" ? memory_kind::cuda : memory_kind::host;
        return unlocked_or_raise([&] { return nd.register_region(ptr, bytes, mk); });
      },
      py::arg("memory"), py::arg("size") = py::none(), py::arg("kind") = py::none())
    .def(
      "allocate",
      [](py_node& n, std::size_t bytes) {
        auto& nd = n.get();
        return unlocked_or_raise([&] { return nd.allocate_region(bytes); });
      },
      py::arg("bytes"))
    .def(
      "region_address",
      [](py_node& n, region_id r) {
        auto* p = n.get().region_base(r);
        if (!p)
          raise(errc::unknown_region, "region " + std::to_string(r) + " is not registered");
        return reinterpret_cast<std::uintptr_t>(p);
      },
      py::arg("region"))
    .def(
      "connect",
      [](py_node& n, const std::string& host, std::uint16_t port) {
        auto& nd = n.get();
        return unlocked_or_raise([&] { return nd.connect(host, port); }).value;
      },
      py::arg("host"), py::arg("port"))
    .def(
      "send",
      [](py_node& n, const std::string& id, const py::object& spans, std::uint32_t deadline_ms,
         bool stage, std::uint64_t bound_to, const std::vector<std::uint32_t>& layers) {
        transfer_options o;
        o.deadline_ms = deadline_ms;
        o.stage_through_pool = stage;
        o.bound_to = peer_id{bound_to};
        o.layer_blocks = layers;
        auto blocks = spans_from(spans);
        auto& nd = n.get();
        py::gil_scoped_release unlocked;
        return nd.send(id, blocks, o);
      },
      py::arg("request_id"), py::arg("spans"), py::arg("deadline_ms") = 0,
      py::arg("stage") = false, py::arg("bound_to") = 0,
      py::arg("layers") = std::vector<std::uint32_t>{},
      "Offers spans under request_id; bound_to=peer (from connect() to the decode node) lets "
      "only that node fetch it, and fails the offer at once if the node goes. layers=[n0, n1, "
      "...] streams it layer by layer: layer i is the next n_i spans, sent once layer_ready() "
      "marks it; the receiver gets a layer_landed event per layer.")
    .def(
      "layer_ready",
      [](py_node& n, const std::string& id, std::uint32_t layer) {
        auto err = n.get().layer_ready(id, layer);
        if (err.code != errc::none)
          raise(err.code, err.message);
      },
      py::arg("request_id"), py::arg("layer"),
      "Marks a layer of a layer-wise send written: it goes out as soon as the peer fetched. "
      "Never blocks.")
    .def(
      "receive",
      [](py_node& n, const std::string& id, std::uint64_t peer, const py::object& spans,
         std::uint32_t deadline_ms,
         const std::vector<std::pair<std::uint32_t, std::uint32_t>>& ranges) {
        transfer_options o;
        o.deadline_ms = deadline_ms;
        for (auto& [first, count] : ranges)
          o.fetch_ranges.push_back(block_range{first, count});
        auto blocks = spans_from(spans);
        auto& nd = n.get();
        py::gil_scoped_release unlocked;
        return nd.receive(id, peer_id{peer}, blocks, o);
      },
      py::arg("request_id"), py::arg("peer"), py::arg("spans"), py::arg("deadline_ms") = 0,
      py::arg("ranges") = std::vector<std::pair<std::uint32_t, std::uint32_t>>{},
      "Fetches request_id from peer into spans; ranges=[(first, count), ...] fetches only those "
      "blocks of the offer.")
    .def(
      "cancel",
      [](py_node& n, const std::string& id) {
        auto& nd = n.get();
        cancel_result r;
        {
          py::gil_scoped_release unlocked;
          r = nd.cancel(id);
        }
        return std::string{to_string(r)};
      },
      py::arg("request_id"))
    .def(
      "disconnect",
      [](py_node& n, std::uint64_t peer) {
        auto code = n.get().disconnect(peer_id{peer});
        if (code != errc::none)
          raise(code, "peer " + std::to_string(peer) + " is not connected");
      },
      py::arg("peer"),
      "Forgets peer: its id no longer works; transfers running with it run to their end.")
    .def(
      "decline",
      [](py_node& n, const std::string& id, std::uint64_t peer) {
        auto& nd = n.get();
        return std::string{
          to_string(unlocked_or_raise([&] { return nd.decline(id, peer_id{peer}); }))};
      },
      py::arg("request_id"), py::arg("peer"),
      "Tells peer this node will not fetch request_id: it releases the offer at once.")
    .def("poll", [](py_node& n) { return events_list(n.get().poll()); })
    .def(
      "wait_events",
      [](py_node& n, std::optional<double> timeout) {
        auto ms = to_ms(timeout, 1.0);
        auto& nd = n.get();
        std::vector<transfer_event> evs;
        {
          py::gil_scoped_release unlocked;
          evs = nd.wait_events(ms);
        }
        return events_list(evs);
      },
      py::arg("timeout") = py::none())
    .def("health", [](py_node& n) { return health_dict(n.get().health()); })
    .def(
      "metrics", [](py_node& n) { return n.get().metrics(); },
      "What GET /metrics serves: Prometheus text of the counters and latency histograms.")
    .def("stop", &py_node::stop, py::arg("drain") = py::none());

  m.def(
    "config_keys", [] { return node_config_keys(); },
    "Every configuration key, in documentation order.");
}
