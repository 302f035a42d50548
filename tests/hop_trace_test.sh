#!/usr/bin/env bash
# Hop tracing (core/hop_trace.hpp, bench/hops.py), as a profiling build uses it:
#  1. a process with the recorder compiled in writes one "point ns" line per record, in order,
#     into $HOP_TRACE_DIR/hops.<pid> when it exits;
#  2. bench/hops.py merges two processes' files of known times, cuts them into requests at
#     node::receive, times each step from the first record of a point (a second data message
#     does not move it), and leaves out a request that missed a point.
# Usage: hop_trace_test.sh WRITER HOPS_PY
set -euo pipefail
writer=$1
hops=$2
python=$(command -v python3)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir "$tmp/recorded"
HOP_TRACE_DIR="$tmp/recorded" "$writer" 7
files=("$tmp"/recorded/hops.*)
[ ${#files[@]} -eq 1 ] && [ -f "${files[0]}" ] || fail "the writer left no hops.<pid> file"
lines=$(wc -l < "${files[0]}")
[ "$lines" -eq 91 ] || fail "expected 7 x 13 records, found $lines"
expected=$(for r in 1 2 3 4 5 6 7; do seq 1 13; done | tr '\n' ' ')
found=$(awk '{print $1}' "${files[0]}" | tr '\n' ' ')
[ "$found" = "$expected" ] || fail "points out of order: $found"
awk 'NR > 1 && $2 < last { exit 1 } { last = $2 }' "${files[0]}" || fail "time went backwards"
# Output captured first: grep -q would stop reading at its match, and under pipefail the writer's
# broken pipe would fail the test.
out=$("$python" "$hops" "$tmp/recorded")
grep -q '^7 requests, 7 passed every point$' <<< "$out" ||
  fail "hops.py did not count the 7 recorded requests"

# Two processes' files: decode points (d) and prefill points (p), microseconds after each
# request's start; request r starts at r ms. Request 10 has node::receive only.
mkdir "$tmp/known"
for r in $(seq 0 9); do
  base=$((r * 1000000))
  for pt in "1 0" "2 10" "3 20" "4 30" "10 100" "10 120" "12 200" "13 210"; do
    set -- $pt; echo "$1 $((base + $2 * 1000))"
  done >> "$tmp/known/hops.1"
  for pt in "5 50" "6 60" "7 70" "8 71" "9 80" "11 150"; do
    set -- $pt; echo "$1 $((base + $2 * 1000))"
  done >> "$tmp/known/hops.2"
done
echo "1 10000000" >> "$tmp/known/hops.1"
out=$("$python" "$hops" "$tmp/known")
echo "$out"
grep -q '^11 requests, 10 passed every point$' <<< "$out" || fail "counts"
check() {  # from to p50
  grep -Eq "^$1 +$2 +$3 " <<< "$out" || fail "step $1 -> $2 should take $3 us"
}
check 'fetch_sent \(d\)' 'fetch_at_sender \(p\)' 20.0
check 'put_posting \(p\)' 'data_arrived \(d\)' 20.0
check 'data_arrived \(d\)' 'batch_done \(p\)' 50.0
check 'batch_done \(p\)' 'answer_at_receive \(d\)' 50.0
check 'api_receive \(d\)' 'receive_finished \(d\)' 210.0
echo "hop tracing: records and merge as expected"
