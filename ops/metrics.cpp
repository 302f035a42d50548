#include "ops/metrics.hpp"

#include <cstdio>

namespace kvferry::ops {

std::string escape_label(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

namespace {

class writer {
 public:
  // # HELP and # TYPE, once per metric family.
  void family(const char* name, const char* type, const char* help) {
    out_ += "# HELP kvferry_";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE kvferry_";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void sample(const std::string& name, const std::string& labels, std::uint64_t v) {
    line(name, labels, std::to_string(v));
  }
  void sample(const std::string& name, const std::string& labels, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6f", v);
    line(name, labels, buf);
  }
  // A family with one sample and no labels.
  void single(const char* name, const char* type, const char* help, std::uint64_t v) {
    family(name, type, help);
    sample(name, "", v);
  }
  void histogram(const std::string& name, const std::string& labels, const latency_counts& c) {
    std::uint64_t cumulative = 0;
    auto with = [&labels](const std::string& le) {
      return labels.empty() ? "le=\"" + le + "\"" : labels + ",le=\"" + le + "\"";
    };
    for (std::size_t i = 0; i < latency_bounds_us.size(); ++i) {
      cumulative += c.buckets[i];
      char le[32];
      std::snprintf(le, sizeof le, "%g", static_cast<double>(latency_bounds_us[i]) / 1e6);
      sample(name + "_bucket", with(le), cumulative);
    }
    cumulative += c.buckets[latency_bounds_us.size()];
    sample(name + "_bucket", with("+Inf"), cumulative);
    sample(name + "_sum", labels, static_cast<double>(c.sum_us) / 1e6);
    sample(name + "_count", labels, c.count);
  }
  std::string take() { return std::move(out_); }

 private:
  void line(const std::string& name, const std::string& labels, const std::string& value) {
    out_ += "kvferry_";
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      out_ += labels;
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }
  std::string out_;
};

}  // namespace

std::string prometheus_text(const metrics_input& in) {
  const auto& h = in.health;
  writer w;
  w.family("node_info", "gauge", "This node: its name and epoch (the value is always 1).");
  char epoch[32];
  std::snprintf(epoch, sizeof epoch, "%#llx", static_cast<unsigned long long>(in.epoch));
  w.sample("node_info", "node=\"" + escape_label(in.node_name) + "\",epoch=\"" + epoch + "\"",
           std::uint64_t{1});
  w.single("healthy", "gauge", "1 while the node is healthy (/healthz answers 200), else 0.",
           h.healthy ? 1 : 0);
  w.single("stalled", "gauge", "1 while transfers are moving and none progressed for "
                               "progress_deadline_ms.", h.stalled ? 1 : 0);
  w.single("network_stalled", "gauge",
           "1 while CAF's network thread has not run for network_stall_ms.",
           h.network_stalled ? 1 : 0);
  w.single("quarantine_full", "gauge", "1 while unreleased + poisoned reach quarantine_budget.",
           h.quarantine_full ? 1 : 0);
  w.single("ms_since_progress", "gauge",
           "Milliseconds since a request ended or a moving transfer stepped.",
           h.ms_since_progress);

  w.family("transfers_total", "counter", "Requests that reached a terminal state, by side and "
                                         "outcome.");
  auto outcomes = [&w](const char* side, const side_metrics& m) {
    std::string s = std::string{"side=\""} + side + "\",outcome=";
    w.sample("transfers_total", s + "\"succeeded\"", m.succeeded);
    w.sample("transfers_total", s + "\"failed\"", m.failed);
    w.sample("transfers_total", s + "\"cancelled\"", m.cancelled);
  };
  outcomes("send", in.send);
  outcomes("receive", in.receive);
  w.single("transfers_in_flight", "gauge", "Requests not yet terminal.", h.in_flight);
  w.single("transfers_unreleased", "gauge",
           "Terminal requests whose memory is not released yet (quarantined).", h.unreleased);
  w.single("staging_slots_poisoned", "gauge", "Staging slots taken out of service for good.",
           h.poisoned);
  w.single("parked_fetches", "gauge", "Peers' fetches waiting for their send().",
           h.parked_fetches);
  w.family("bytes_total", "counter", "Bytes moved by successful transfers, by direction.");
  w.sample("bytes_total", "direction=\"sent\"", h.bytes_sent);
  w.sample("bytes_total", "direction=\"received\"", h.bytes_received);
  w.single("peers", "gauge", "Peers this node connected to.", in.peers);
  w.single("restarts_total", "counter", "Child actors restarted by the supervisor.", h.restarts);
  w.single("worker_replacements_total", "counter", "Wedged UCX workers replaced.",
           h.worker_replacements);
  w.single("writes_refused_total", "counter",
           "Peers' data messages refused: no receive window open for them.", h.writes_refused);
  w.single("lost_wakeups_total", "counter", "Times the transport found work no wake-up "
                                            "announced.", h.lost_wakeups);
  w.single("tls_refused_total", "counter", "TLS peers refused.", h.tls_refused);

  w.family("queue_wait_seconds", "histogram",
           "From send()/receive() until the request's data started to move.");
  w.histogram("queue_wait_seconds", "side=\"send\"", in.send.queue);
  w.histogram("queue_wait_seconds", "side=\"receive\"", in.receive.queue);
  w.family("transfer_seconds", "histogram",
           "From the start of a request's data movement until its terminal state.");
  w.histogram("transfer_seconds", "side=\"send\"", in.send.transfer);
  w.histogram("transfer_seconds", "side=\"receive\"", in.receive.transfer);
  return w.take();
}

}  // namespace kvferry::ops
