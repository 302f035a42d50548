#!/usr/bin/env bash
# Verifies model/transfer.pml exhaustively with spin for small instances and checks that each
# mutant is caught. Exit status non-zero on any property violation, incomplete search (memory
# bound or depth limit), or a mutant that is NOT caught.
#
#   model/verify.sh            (from any directory; needs spin and gcc)
#   KEEP=1 model/verify.sh     keeps the work directory (pan sources, trails)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
model="$here/transfer.pml"
work="$(mktemp -d "${TMPDIR:-/tmp}/kvferry-model.XXXXXX")"
if [[ "${KEEP:-0}" != 1 ]]; then trap 'rm -rf "$work"' EXIT; else echo "work dir: $work"; fi
cp "$model" "$work/transfer.pml"
cd "$work"

MEM=2048        # MiB: pan stops (and we fail) rather than use more
DEPTH=100000    # search depth limit (the deepest run is about 400 steps)
JOBS=${JOBS:-2} # builds and searches run this many at a time
failed=0
start_all=$SECONDS

# Instances (spin -D flags). See README.md.
ONE="-DNREQ=1"                                                    # everything, one request
LIVE="-DNREQ=1 -DALLOW_STOP_P=0 -DALLOW_STOP_D=0"                 # for the liveness LTL
STAGED="-DNREQ=1 -DSTAGED=1 -DCHUNKS=2 -DALLOW_STOP_D=0"         # two chunks, 2 gathered while 1 is put
TWO_STOP="-DNREQ=2 -DALLOW_DEADLINE=2 -DALLOW_CANCEL_S=0 -DALLOW_CANCEL_R=0 -DALLOW_KILL=0 -DALLOW_STOP_D=0"
TWO_KILL="-DNREQ=2 -DALLOW_DEADLINE=2 -DALLOW_CANCEL_S=0 -DALLOW_CANCEL_R=0 -DALLOW_STOP_P=0 -DALLOW_STOP_D=0"

# job NAME "SPIN_FLAGS" "GCC_FLAGS" "PAN_ARGS": spin -a, gcc, pan, in b_NAME/ (log: b_NAME/run.log)
job() {
  local name=$1 sflags=$2 cflags=$3 args=$4
  mkdir -p "b_$name"
  cd "b_$name"
  if ! spin -a $sflags ../transfer.pml >spin.log 2>&1; then cp spin.log run.log; return; fi
  if ! gcc -w "-DMEMLIM=$MEM" $cflags -o pan pan.c >gcc.log 2>&1; then cp gcc.log run.log; return; fi
  ./pan -m$DEPTH $args >run.log 2>&1 || true
}

# runs the queued jobs, $JOBS at a time
queue=()
add() { queue+=("$1|$2|$3|$4"); }
run_all() {
  local entry n=0
  for entry in "${queue[@]}"; do
    IFS='|' read -r name sflags cflags args <<<"$entry"
    (job "$name" "$sflags" "$cflags" "$args") &
    n=$((n + 1))
    if (( n >= JOBS )); then wait -n || true; n=$((n - 1)); fi
  done
  wait || true
}

num() { grep -Eo "$2" "$1" | head -1 | grep -Eo '[0-9][0-9.e+]*' | head -1 || true; }

# check LABEL NAME: errors 0 and a complete search
check() {
  local label=$1 log="b_$2/run.log" ok=1 errs
  errs=$(num "$log" 'errors: *[0-9]+')
  [[ "$errs" == 0 ]] || ok=0
  grep -q "State-vector" "$log" || ok=0
  grep -qE "Search not completed|reached -DMEMLIM bound|max search depth too small" "$log" && ok=0
  printf '  %-34s states %9s  transitions %9s  depth %4s  %6ss  %s\n' "$label" \
    "$(num "$log" '[0-9.e+]+ states, stored')" "$(num "$log" '[0-9.e+]+ transitions')" \
    "$(num "$log" 'depth reached *[0-9]+')" "$(num "$log" 'elapsed time *[0-9.e+]+')" \
    "$([[ $ok == 1 ]] && echo ok || echo FAIL)"
  if [[ $ok != 1 ]]; then
    failed=1
    grep -E "pan:|rror|violated|Search not|MEMLIM|too small" "$log" | head -5 | sed 's/^/      /'
  fi
}

# caught LABEL NAME: the search must report an error (a planted bug); the run fails if not.
caught() {
  local label=$1 log="b_$2/run.log" errs
  errs=$(num "$log" 'errors: *[0-9]+')
  if [[ -n "$errs" && "$errs" != 0 ]]; then
    printf '  %-34s caught: %s\n' "$label" \
      "$(grep -Eo 'assertion violated|invalid end state|acceptance cycle' "$log" | head -1)"
  else
    printf '  %-34s NOT CAUGHT\n' "$label"; failed=1
  fi
}

# Unoptimised throughout: gcc -O2 spends about 10 s on each pan.c to save about 2 s of search
# (measured on 2 cores), so -O0 halves the whole check.
SEARCH="-O0 -DSAFETY"      # searches that must complete
O0="-O0 -DSAFETY -DNOCLAIM" # mutants stop at their first error
add one_safety "$ONE" "$SEARCH -DNOCLAIM" ""
add staged "$STAGED" "$SEARCH -DNOCLAIM" ""
add two_stop "$TWO_STOP" "$SEARCH -DNOCLAIM" ""
add two_kill "$TWO_KILL" "$SEARCH -DNOCLAIM" ""
add one_p4 "$ONE" "$SEARCH" "-N p4_stop"
add live "$LIVE" "-O0" "-a -N p1_settles"
MUTANTS="MUTANT_RELEASE_EARLY MUTANT_RESOLVE_TWICE MUTANT_RECV_RELEASE_ON_DOWN
         MUTANT_IGNORE_PEER_DOWN MUTANT_STOP_NO_RELEASE MUTANT_POST_RETIRED"
STAGED_MUTANTS="MUTANT_SLOT_BACK_EARLY MUTANT_IDLE_IGNORES_COPY"   # planted in the staged instance
for m in $MUTANTS; do add "$m" "$ONE -D$m" "$O0" ""; done
for m in $STAGED_MUTANTS; do add "$m" "$STAGED -D$m" "$O0" ""; done
add strict "$ONE -DSTRICT_QUARANTINE" "$SEARCH -DNOCLAIM" ""
add crash "$ONE -DALLOW_TRANSPORT_CRASH=1" "$SEARCH -DNOCLAIM" ""

echo "kvferry transfer model: $(spin -V | head -1); $JOBS jobs at a time"
run_all

echo "properties (each: errors 0, search complete):"
check "one: P1-P4 (assertions, end states)" one_safety
check "one: ltl p4_stop" one_p4
check "live: ltl p1_settles (acceptance)" live
(cd b_live && ./pan -m$DEPTH -N p1_resolve_once >run1.log 2>&1 || true)
mkdir -p b_live1 && mv b_live/run1.log b_live1/run.log
check "live: ltl p1_resolve_once" live1
check "staged: P1-P4" staged
check "two-stop: P1-P4" two_stop
check "two-kill: P1-P4" two_kill
check "crash: P1-P4 (transport crashes)" crash
check "strict: no needless quarantine" strict
echo "mutants (each must be caught):"
for m in $MUTANTS $STAGED_MUTANTS; do caught "$m" "$m"; done

echo "total: $((SECONDS - start_all)) s"
if [[ $failed != 0 ]]; then
  echo "FAILED (rerun with KEEP=1 to keep the logs and trails)"
  exit 1
fi
echo "PASSED"
