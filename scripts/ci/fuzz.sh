#!/usr/bin/env bash
# CI stage: builds the libFuzzer targets with clang-14 (ASan + UBSan) in
# build-fuzz/ and runs each for a bounded time, starting from its checked-in
# seed corpus (tests/fuzz/corpus*); prints libFuzzer's final statistics
# (executions) per target and the stage's wall time.
#   scripts/ci/fuzz.sh                     60 s per target
#   FUZZ_SECONDS=600 scripts/ci/fuzz.sh    longer runs
#   FUZZ_TARGETS="request" scripts/ci/fuzz.sh   some targets only
#   FAST=1 scripts/ci/fuzz.sh              skipped (never when CI=true)
# A crash fails the stage; the input is saved as build-fuzz/crashes/<target>/
# crash-* (replay: build-fuzz/tests/fuzz/<target>_fuzzer <file>). New inputs
# found stay in build-fuzz/corpus/<target>/ (not checked in).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
if [ "${FAST:-0}" = "1" ] && [ "${CI:-}" != "true" ]; then
  echo "fuzz: skipped (FAST=1)"
  exit 0
fi
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
TARGETS="${FUZZ_TARGETS:-safetensors config request}"
BUILD_DIR="${ATTN_FUZZ_BUILD_DIR:-build-fuzz}"
step() { echo "fuzz: $1 ($(($(date +%s) - start)) s)"; }

step "configure + build with clang++-14 in $BUILD_DIR"
CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD_DIR" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATTN_BUILD_SERVER=OFF \
  -DATTN_BUILD_FUZZERS=ON >/dev/null
bins=()
for t in $TARGETS; do bins+=("${t}_fuzzer"); done
cmake --build "$BUILD_DIR" -j "${ATTN_JOBS:-$(nproc)}" --target "${bins[@]}"

export ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
summary=()
failed=0
for t in $TARGETS; do
  seeds=tests/fuzz/corpus_$t
  dict=tests/fuzz/$t.dict
  [ "$t" = safetensors ] && seeds=tests/fuzz/corpus
  work="$BUILD_DIR/corpus/$t"
  crashes="$BUILD_DIR/crashes/$t"
  log="$BUILD_DIR/fuzz-$t.log"
  mkdir -p "$work" "$crashes"
  args=(-max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$crashes/")
  [ -f "$dict" ] && args+=(-dict="$dict")
  step "$t: ${SECONDS_PER_TARGET} s from $seeds"
  t0=$(date +%s)
  rc=0
  "$BUILD_DIR/tests/fuzz/${t}_fuzzer" "${args[@]}" "$work" "$seeds" \
    >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  line="$t: ${execs:-?} executions in $(($(date +%s) - t0)) s, ${cov:-cov: ?}"
  if [ "$rc" -ne 0 ]; then
    failed=1
    line="$line, FAILED (exit $rc; log $log)"
    tail -60 "$log"
  fi
  echo "fuzz: $line"
  summary+=("$line")
done
printf 'fuzz: %s\n' "${summary[@]}"
step "done"
exit "$failed"
