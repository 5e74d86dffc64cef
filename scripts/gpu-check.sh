#!/usr/bin/env bash
# The one command for a GPU machine: build if needed, run the multi-GPU
# tests at every world size the machine has (2, 4, 8), compute-sanitizer
# (memcheck, racecheck) on a few sizes, and arnorm-bench; a short table last.
#
#   scripts/gpu-check.sh [all|tests|sanitize|bench] [extra arnorm-bench flags]
#
# BUILD (default build) is the build folder; OUT (default out) receives the
# logs and the benchmark JSON; STEP_TIMEOUT (default 600 s) bounds each step;
# WORLDS (default: 2, 4 and 8 where the machine has them) picks the world
# sizes of the tests and the benchmark, e.g. WORLDS=4 on a 4-GPU machine.
# SHARED_WORLDS (default 2 4 8) are the world sizes larger than the machine
# that the tests still run, with ranks taking turns on the GPUs
# (--share-gpus: protocols and results, no timing, no NCCL); SHARED_WORLDS=
# turns that off. On one H200 (0.9.0) the three take about 100, 183 and 298 s
# and `tests` as a whole about 13 minutes; where one call is limited to 10
# minutes, run `SHARED_WORLDS= ... tests`, the shared worlds, `sanitize` and
# `bench` in separate calls.
# NVLink multicast stays off throughout.
set -uo pipefail
mode=${1:-all}
shift || true
BUILD=${BUILD:-build}
OUT=${OUT:-out}
mkdir -p "$OUT"
# shellcheck source=scripts/gpu-env.sh
. "$(dirname "$0")/gpu-env.sh"
if [ ! -x "$BUILD/tests/arnorm-gpu-tests" ] || [ ! -x "$BUILD/tools/bench/arnorm-bench" ]; then
  echo "== building in $BUILD"
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release && cmake --build "$BUILD" -j "$(nproc)" || exit 1
fi
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
echo "== $ngpu GPU(s): $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sort | uniq -c | xargs)"
# World sizes to run: 2, 4 and 8 where the machine has them; on a one-GPU
# machine world 1 (every kernel and result check, no peer traffic), so a
# kernel change can be checked there before a multi-GPU machine is had.
worlds=""
for w in ${WORLDS:-2 4 8}; do [ "$w" -le "$ngpu" ] && worlds="$worlds $w"; done
[ "$ngpu" -eq 1 ] && worlds=1 && echo "== one GPU: world size 1 only (nothing crosses NVLink; tests that need a peer skip)"
[ -n "$worlds" ] || { echo "== no world size in WORLDS='${WORLDS:-}' fits $ngpu GPU(s)"; exit 2; }
summary=()
status=0
note() { summary+=("$1"); }
# True when the log shows at least $2 (default 1) tests passed: a binary that
# skipped everything (fewer GPUs visible to CUDA than nvidia-smi lists) or a
# filter that matched less than it should exits 0 and must not count as PASS.
passed() {
  local n
  n=$(grep -Eo '^\[  PASSED  \] [0-9]+' "$1" | head -1 | grep -Eo '[0-9]+$')
  [ "${n:-0}" -ge "${2:-1}" ]
}

run_tests() {
  for w in $worlds; do
    # First in a fresh process: every launch-time query of the library
    # (occupancy, kernel loading) then happens inside a global-mode capture.
    log="$OUT/gpu-tests-w$w-capture-first.log"
    echo "== GPU tests, world $w, calls captured first in a fresh process (log: $log)"
    if timeout "${STEP_TIMEOUT:-600}" "$BUILD/tests/arnorm-gpu-tests" --world "$w" \
        --gtest_filter='AddRmsNorm.GlobalCaptureOfEveryRoute' > "$log" 2>&1 && grep -q '^\[       OK \] AddRmsNorm.GlobalCapture' "$log"
    then r=PASS; else r=FAIL; status=1; fi  # (a filter that matched nothing would pass)
    grep -E '^\[  (PASSED|FAILED) |FAILURE' "$log" | tail -3
    note "tests   world $w, global capture first in a process: $r"
    log="$OUT/gpu-tests-w$w.log"
    echo "== GPU tests, world $w (log: $log)"
    if timeout "${STEP_TIMEOUT:-600}" "$BUILD/tests/arnorm-gpu-tests" --world "$w" > "$log" 2>&1 && passed "$log"; then r=PASS; else r=FAIL; status=1; fi
    grep -E '^\[  (PASSED|FAILED) |FAILURE|tests ran' "$log" | tail -5
    note "tests   world $w: $r ($(grep -Eo '[0-9]+ tests? from [0-9]+ test suites? ran' "$log" | head -1)$(grep -Eo 'SKIPPED \] [0-9]+ tests?' "$log" | head -1 | sed 's/SKIPPED \]/; skipped/'))"
    # Every two-shot call over the sentinel protocol (small calls and narrow
    # rows included), so that its kernels meet every shape the suite has,
    # and a missing peer (ZZ_Timeout: rows poisoned, the error named).
    log="$OUT/gpu-tests-w$w-sentinel.log"
    echo "== GPU tests, world $w, ARNORM_PROTOCOL=sentinel (log: $log)"
    if ARNORM_PROTOCOL=sentinel timeout "${STEP_TIMEOUT:-600}" "$BUILD/tests/arnorm-gpu-tests" --world "$w" \
        --gtest_filter='AllReduce.*:AddRmsNorm.*:ZZ_Timeout.*' > "$log" 2>&1 && passed "$log"; then r=PASS; else r=FAIL; status=1; fi
    grep -E '^\[  (PASSED|FAILED) |FAILURE|tests ran' "$log" | tail -5
    note "tests   world $w, sentinel everywhere: $r ($(grep -Eo '[0-9]+ tests? from [0-9]+ test suites? ran' "$log" | head -1))"
  done
  # Ranks at the same instant on one GPU (threads of one process, every world
  # size from 2 to 8), repeated with fresh inputs: on a one-GPU machine the only runs
  # where ranks race at all.
  log="$OUT/gpu-tests-concurrent.log"
  echo "== GPU tests, ranks as threads on one GPU, 5 repeats (log: $log)"
  if timeout "${STEP_TIMEOUT:-600}" "$BUILD/tests/arnorm-gpu-tests" --world 1 --gtest_repeat=5 \
      --gtest_filter='CommInProcess.ConcurrentRanksOnOneGpu' > "$log" 2>&1 &&
      [ "$(grep -c '^\[       OK \] CommInProcess.Concurrent' "$log")" -eq 5 ]; then r=PASS; else r=FAIL; status=1; fi
  grep -E '^\[  FAILED  \]' "$log" | head -3
  note "tests   concurrent ranks on one GPU, 5 repeats: $r ($(grep -c '^\[       OK \] CommInProcess.Concurrent' "$log") passed)"
  for w in ${SHARED_WORLDS-2 4 8}; do
    [ "$w" -gt "$ngpu" ] || continue
    log="$OUT/gpu-tests-w$w-shared.log"
    echo "== GPU tests, world $w on $ngpu GPU(s), ranks taking turns (log: $log)"
    if timeout "${STEP_TIMEOUT:-600}" "$BUILD/tests/arnorm-gpu-tests" --world "$w" --share-gpus > "$log" 2>&1 && passed "$log"; then r=PASS; else r=FAIL; status=1; fi
    grep -E '^\[  (PASSED|FAILED) |FAILURE|tests ran' "$log" | tail -5
    note "tests   world $w on $ngpu GPU(s), shared: $r ($(grep -Eo '[0-9]+ tests? from [0-9]+ test suites? ran' "$log" | head -1)$(grep -Eo 'SKIPPED \] [0-9]+ tests?' "$log" | head -1 | sed 's/SKIPPED \]/; skipped/'))"
  done
}

run_sanitizer() {
  [ "$ngpu" -ge 1 ] || { note "sanitize: skipped (no GPU)"; return; }
  # World 2: on two GPUs, or on one GPU with the ranks taking turns.
  local w=2 share=""
  [ "$ngpu" -ge 2 ] || share=--share-gpus
  local filter='AllReduce.InPlace:AllReduce.MisalignedPointers:AllReduce.GraphCaptureAndReplay:AllReduce.ChunkedBeyondWorkspace:AddRmsNorm.NoResidual*:AddRmsNorm.ChunkedBeyondWorkspace:AddRmsNorm.GraphReplay*:AddRmsNorm.BatchInvarianceWideRows:AddRmsNorm.RowSlotsReusedWithinOneCall:AllReduce.CallsCapturedOnTwoStreamsAreOrdered'
  # The sanitizer runs around each rank (ARNORM_LAUNCH_WRAPPER): around the
  # launcher alone it instruments nothing but the launcher. Each rank prints
  # its own summary, so a run with fewer summaries than ranks checked less
  # than it claims and fails. API errors are NCCL's own probing
  # (cudaFuncGetAttributes on kernels built for other GPUs); memory and race
  # errors are what this run looks for.
  for tool in memcheck racecheck; do
    log="$OUT/sanitize-$tool.log"
    echo "== compute-sanitizer $tool, world $w${share:+ on one GPU} (log: $log)"
    if ARNORM_TEST_BARRIER_SECONDS=900 ARNORM_LAUNCH_WRAPPER="compute-sanitizer --tool $tool --report-api-errors no --error-exitcode 9" \
        timeout "${STEP_TIMEOUT:-600}" "$BUILD/tests/arnorm-gpu-tests" --world "$w" $share --gtest_filter="$filter" > "$log" 2>&1 &&
        passed "$log" 10; then r=PASS; else r=FAIL; status=1; fi  # (10 entries in the filter: none may vanish)
    local summaries
    summaries=$(grep -cE '(ERROR|RACECHECK) SUMMARY' "$log")
    if [ "$summaries" -ne "$w" ]; then r="FAIL ($summaries sanitizer summaries for $w ranks)"; status=1; fi
    grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED' "$log" | sort | uniq -c | head -6
    note "sanitize $tool, world $w${share:+ on one GPU}: $r ($(grep -Eo '(ERROR|RACECHECK) SUMMARY: [0-9]+ [a-z]+' "$log" | sort | uniq -c | xargs))"
  done
}

run_bench() {
  for w in $worlds; do
    echo "== arnorm-bench, world $w"
    if timeout "${STEP_TIMEOUT:-600}" "$BUILD/tools/bench/arnorm-bench" -g "$w" -J "$OUT/bench-w$w.json" "$@" 2>&1 | tee "$OUT/bench-w$w.txt"; then r=PASS; else r=FAIL; status=1; fi
    note "bench   world $w: $r (table in $OUT/bench-w$w.txt)"
  done
}

case "$mode" in
  tests) run_tests ;;
  sanitize) run_sanitizer ;;
  bench) run_bench "$@" ;;
  all) run_tests; run_sanitizer; run_bench "$@" ;;
  *) echo "usage: $0 [all|tests|sanitize|bench] [arnorm-bench flags]"; exit 2 ;;
esac
echo
echo "== summary"
printf '  %s\n' "${summary[@]}"
exit $status
