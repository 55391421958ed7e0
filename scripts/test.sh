#!/usr/bin/env bash
# Sets up, builds and runs every test (unit, integration through the real
# server with C++, Python and Node clients). Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd "${ATTN_BUILD_DIR:-build}"
ctest --output-on-failure -j "${ATTN_TEST_JOBS:-2}" "$@"
