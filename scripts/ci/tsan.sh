#!/usr/bin/env bash
# CI stage: ThreadSanitizer. Builds the kernel and service tests with
# -fsanitize=thread (GCC, ccache) in build-tsan/ and runs the batcher,
# kernel-concurrency, in-flight budget and service tests (ServiceTest: an
# in-process gRPC server with real clients); any TSan report fails the
# stage. Prints its wall time. ATTN_TSAN_TESTS='^BatcherTest\.' picks others.
#   scripts/ci/tsan.sh                 build + run (ctest -j ATTN_TEST_JOBS)
#   scripts/ci/tsan.sh -R Batcher      extra arguments go to ctest
#   FAST=1 scripts/ci/tsan.sh          skipped (never when CI=true)
# How the uninstrumented Debian libraries are handled (docs/ARCHITECTURE.md,
# "ThreadSanitizer"):
#   - Abseil: tests/tsan/absl_sync_annotations.cc, linked into every test
#     executable with -Wl,--wrap, tells TSan about absl::Mutex, CondVar,
#     Notification and BlockingCounter (no suppressions: our code's races
#     stay visible).
#   - gRPC, protobuf, and the Abseil libraries gRPC keeps its own errors in
#     (Status, strings, Cord, time zones): tests/tsan/suppressions.txt, each
#     entry commented.
#   - OpenMP: OMP_NUM_THREADS=1, so libgomp starts no worker threads (its
#     barriers are futexes TSan does not see); threads calling the kernel
#     concurrently are still checked. ConcurrencyTest.ThreadCountMayChange-
#     BetweenCalls sets team sizes itself, so libgomp's workers make TSan
#     report its barrier hand-offs: it is excluded (ATTN_TSAN_EXCLUDE).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
start=$(date +%s)
if [ "${FAST:-0}" = "1" ] && [ "${CI:-}" != "true" ]; then
  echo "tsan: skipped (FAST=1)"
  exit 0
fi
BUILD_DIR="${ATTN_TSAN_BUILD_DIR:-build-tsan}"
CXX_BIN="${CXX:-c++}"
step() { echo "tsan: $1 ($(($(date +%s) - start)) s)"; }

SAN="-fsanitize=thread -fno-omit-frame-pointer"
mkdir -p "$BUILD_DIR"
shim="$root/$BUILD_DIR/absl_sync_annotations.o"
step "annotation shim"
launcher=()
command -v ccache >/dev/null && launcher=(ccache)
"${launcher[@]}" "$CXX_BIN" -std=c++17 -O2 -g $SAN -Wall -Wextra \
  -c tests/tsan/absl_sync_annotations.cc -o "$shim.new"
if ! cmp -s "$shim.new" "$shim"; then
  mv "$shim.new" "$shim"
  # Linked through the linker flags, which ninja does not track: relink.
  rm -f "$BUILD_DIR/tests/service/service_tests" \
        "$BUILD_DIR/tests/kernels/kernel_tests"
else
  rm -f "$shim.new"
fi
mapfile -t wraps < <(nm "$shim" | sed -n 's/^[0-9a-f]* T __wrap_/-Wl,--wrap=/p')
[ "${#wraps[@]}" -gt 0 ] || { echo "tsan: no wrappers in $shim"; exit 1; }

step "configure + build service_tests kernel_tests in $BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$SAN" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" \
  -DATTN_EXTRA_LINK_OPTIONS="$(IFS=';'; echo "${wraps[*]};$shim")" >/dev/null
cmake --build "$BUILD_DIR" -j "${ATTN_JOBS:-$(nproc)}" \
  --target service_tests kernel_tests

step "run"
cd "$BUILD_DIR"
# halt_on_error=0: every report of a test is printed; TSan then exits 66, so
# ctest fails the test.
export TSAN_OPTIONS="suppressions=$root/tests/tsan/suppressions.txt:halt_on_error=0:exitcode=66:second_deadlock_stack=1:history_size=4:${TSAN_OPTIONS:-}"
export OMP_NUM_THREADS=1
ctest --output-on-failure -j "${ATTN_TEST_JOBS:-2}" --timeout 900 \
  -R "${ATTN_TSAN_TESTS:-^(BatcherTest|InflightBudgetTest|ConcurrencyTest|ServiceTest)\.}" \
  -E "${ATTN_TSAN_EXCLUDE:-ThreadCountMayChangeBetweenCalls}" "$@"
step "done"
