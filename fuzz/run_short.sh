#!/usr/bin/env bash
# Runs every built libFuzzer target for SECONDS each over a scratch copy of its seed corpus
# (fuzz/corpus/<target>; the repository's corpus is never written). Fails if any target finds a
# crash, a sanitizer report, a timeout or an out-of-memory; its reproducer stays in the scratch
# directory printed. usage: fuzz/run_short.sh TARGET_BINARY_DIR SECONDS [TARGET]
#   e.g. fuzz/run_short.sh build-fuzz/fuzz 30    (run under `nice -n 15` on a shared machine)
# With TARGET, only that one; exit 77 (the suite's "skipped") when it is not built there.
set -u
if [[ $# -lt 2 || $# -gt 3 || ! $2 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 TARGET_BINARY_DIR SECONDS [TARGET]" >&2
  exit 2
fi
only=${3:-}
if [[ -n $only && ! -x $1/$only ]]; then
  echo "skipped: $only is not built in $1 (bash .ci/bootstrap test builds it with clang-14)"
  exit 77
fi
if [[ ! -d $1 ]]; then
  echo "usage: $0 TARGET_BINARY_DIR SECONDS [TARGET]: no directory $1" >&2
  exit 2
fi
bin_dir=$(cd "$1" && pwd)
seconds=$2
corpus_root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/corpus
scratch=$(mktemp -d "${TMPDIR:-/tmp}/kvferry-fuzz.XXXXXX")

targets=()
for f in "$bin_dir"/fuzz_*; do
  name=$(basename "$f")
  [[ -n $only && $name != "$only" ]] && continue
  [[ -f $f && -x $f && $name != fuzz_gen_* ]] && targets+=("$name")
done
if [[ ${#targets[@]} -eq 0 ]]; then
  echo "no fuzz targets in $bin_dir" >&2
  exit 2
fi

failed=()
for t in "${targets[@]}"; do
  work=$scratch/$t
  mkdir -p "$work/corpus" "$work/artifacts"
  [[ -d $corpus_root/$t ]] && cp -r "$corpus_root/$t/." "$work/corpus/"
  "$bin_dir/$t" -max_total_time="$seconds" -timeout=60 -report_slow_units=30 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1
  rc=$?
  summary=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$work/log" | tail -1)
  execs=$(grep -E '^stat::number_of_executed_units' "$work/log" | awk '{print $2}')
  speed=$(grep -E '^stat::average_exec_per_sec' "$work/log" | awk '{print $2}')
  # slow-unit-* files are only notes (a loaded machine makes any input slow); anything else the
  # fuzzer wrote there (crash-, leak-, oom-, timeout-) is a finding.
  findings=$(ls -A "$work/artifacts" | grep -v '^slow-unit-')
  if [[ $rc -ne 0 || -n $findings ]]; then
    failed+=("$t")
    echo "FAIL $t (exit $rc): reproducer(s) in $work/artifacts, log $work/log"
    grep -E 'ERROR: |SUMMARY: |invariant violated|^    #[0-9]+ ' "$work/log" | head -25
  else
    echo "ok   $t: ${execs:-?} executions, ${speed:-?} exec/s; ${summary:-no DONE line}"
  fi
done

if [[ ${#failed[@]} -ne 0 ]]; then
  echo "fuzzing found problems in: ${failed[*]} (scratch kept: $scratch)"
  exit 1
fi
rm -rf "$scratch"
exit 0
