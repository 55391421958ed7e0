#!/usr/bin/env bash
# Throughput and latency of attn.v1 vs KServe v2 gRPC vs v2 REST (binary
# tensors) vs v2 REST (JSON data), in one run against one attn_server (demo
# model, d_model 256, 16 query tokens), closed loop at concurrency 1 and 64.
# Prints a Markdown table with ratios to attn.v1 (README, "Open Inference
# Protocol"). The four protocols run interleaved, ROUNDS times (default 3),
# and the table gives each one's median over the rounds, with the range of
# its per-round ratio to attn.v1, so that drift of a shared machine shows.
# Usage: scripts/bench_protocols.sh [build dir] [seconds per step] [rounds]
set -euo pipefail
BUILD="${1:-build}"
SECONDS_PER_STEP="${2:-5}"
ROUNDS="${3:-3}"
TMP="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
HTTP_PORT="$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$BUILD/server/attn_server" --host=127.0.0.1 --port=0 --metrics_port=0 \
  --http_port="$HTTP_PORT" >"$TMP/server.out" 2>"$TMP/server.err" &
SERVER_PID=$!
for _ in $(seq 1 200); do
  grep -q "listening on" "$TMP/server.out" && break
  sleep 0.1
done
TARGET="$(grep -o '127.0.0.1:[0-9]*' "$TMP/server.out" | head -1)"
[ -n "$TARGET" ] || { cat "$TMP/server.err"; exit 1; }
for round in $(seq 1 "$ROUNDS"); do
  for protocol in attn v2 http http_json; do
    "$BUILD/client/loadgen/attn_loadgen" --target="$TARGET" \
      --http_target="127.0.0.1:$HTTP_PORT" --protocol="$protocol" --seq=16 \
      --sweep=concurrency=1,64 --duration="${SECONDS_PER_STEP}s" --warmup=1s \
      --quiet --json="$TMP/$protocol.$round.json" >/dev/null
  done
done
/usr/bin/python3 - "$TMP" "$ROUNDS" <<'PY'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
names = {"attn": "attn.v1 (gRPC)", "v2": "KServe v2 gRPC", "http": "KServe v2 REST, binary",
         "http_json": "KServe v2 REST, JSON"}
runs = {p: [json.load(open(f"{tmp}/{p}.{r}.json"))["steps"] for r in range(1, rounds + 1)]
        for p in names}
med = statistics.median
print(f"{rounds} interleaved rounds; medians, and the range of the per-round ratio")
print("| protocol | concurrency | req/s | vs attn.v1 (range) | p50 ms | p99 ms | errors |")
print("|---|---:|---:|---:|---:|---:|---:|")
for i, label in enumerate(s["label"] for s in runs["attn"][0]):
    base = [r[i]["requests_per_second"] for r in runs["attn"]]
    for p, name in names.items():
        steps = [r[i] for r in runs[p]]
        rps = [s["requests_per_second"] for s in steps]
        ratios = [a / b for a, b in zip(rps, base)]
        p50 = med(s["latency_us"]["p50"] for s in steps) / 1e3
        p99 = med(s["latency_us"]["p99"] for s in steps) / 1e3
        errors = sum(s["errors"] for s in steps)
        print(f"| {name} | {label.split('=')[1]} | {med(rps):.0f} | "
              f"{med(rps) / med(base):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) | "
              f"{p50:.2f} | {p99:.2f} | {errors} |")
PY
