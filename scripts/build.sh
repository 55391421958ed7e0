#!/usr/bin/env bash
# Configures and builds attnserve into build/ (Release). Extra arguments are
# passed to `cmake --build` (e.g. --target attn_server); ATTN_CMAKE_ARGS adds
# configure options (e.g. -DATTN_BUILD_TESTS=OFF, as the Dockerfile does).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${ATTN_BUILD_DIR:-build}"
JOBS="${ATTN_JOBS:-$(nproc)}"
# shellcheck disable=SC2086  # ATTN_CMAKE_ARGS is a list of options
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${ATTN_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" "$@"
