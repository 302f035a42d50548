#!/usr/bin/env python3
"""Where one request's time goes, hop by hop (a build with -DKVFERRY_HOP_TRACE=ON).

Usage: bench/hops.py [DIR]   (default: $HOP_TRACE_DIR or /tmp)

Reads every hops.<pid> file in DIR (core/hop_trace.hpp: one per process of a bench run), merges
them into one time line, and cuts it into requests at each node::receive. Meaningful for
requests run one at a time (`kvferry bench ... --concurrency 1`). For each request that passed
every point, each step is the time from the first record of one point to the first record of
the next; the median, 90th and 99th percentile of each step are printed, in microseconds.
Standard library only.
"""

import glob
import os
import sys

# The points of core/hop_trace.hpp in the order a receive passes them; d: decode, p: prefill.
CHAIN = [(1, "api_receive", "d"), (2, "receiver_admit", "d"), (3, "recv_started", "d"),
         (4, "fetch_sent", "d"), (5, "fetch_at_sender", "p"), (6, "fetch_at_owner", "p"),
         (7, "put_at_transport", "p"), (8, "put_at_engine", "p"), (9, "put_posting", "p"),
         (10, "data_arrived", "d"), (11, "batch_done", "p"), (12, "answer_at_receive", "d"),
         (13, "receive_finished", "d")]


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HOP_TRACE_DIR", "/tmp")
    records = []
    for path in glob.glob(os.path.join(folder, "hops.*")):
        with open(path) as f:
            for line in f:
                point, ns = line.split()
                records.append((int(ns), int(point)))
    if not records:
        sys.exit(f"no hops.* files in {folder} (build with -DKVFERRY_HOP_TRACE=ON, run a bench)")
    records.sort()
    requests, current = [], None
    for ns, point in records:
        if point == 1:
            if current:
                requests.append(current)
            current = [(point, ns)]
        elif current is not None:
            current.append((point, ns))
    if current:
        requests.append(current)
    firsts = []
    for r in requests:
        seen = {}
        for point, ns in r:
            seen.setdefault(point, ns)
        if all(p in seen for p, _, _ in CHAIN):
            firsts.append(seen)
    if not firsts:
        sys.exit("no request passed every point (were requests run one at a time?)")
    print(f"{len(requests)} requests, {len(firsts)} passed every point")
    print(f"{'from':<24} {'to':<24} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9}")
    rows = [(a, b) for a, b in zip(CHAIN, CHAIN[1:])] + [(CHAIN[0], CHAIN[-1])]
    for (pa, na, sa), (pb, nb, sb) in rows:
        steps = [(f[pb] - f[pa]) / 1000 for f in firsts]
        print(f"{na + ' (' + sa + ')':<24} {nb + ' (' + sb + ')':<24} "
              f"{percentile(steps, .5):9.1f} {percentile(steps, .9):9.1f} "
              f"{percentile(steps, .99):9.1f}")


if __name__ == "__main__":
    main()
