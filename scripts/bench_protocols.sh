#!/usr/bin/env bash
# Throughput and latency of attn.v1 vs KServe v2 gRPC vs v2 REST (binary
# tensors) vs v2 REST (JSON data), in one run against one attn_server (demo
# model, d_model 256, 16 query tokens), closed loop at concurrency 1 and 64.
# Prints a Markdown table with ratios to attn.v1 (README, "Open Inference
# Protocol"). Usage: scripts/bench_protocols.sh [build dir] [seconds per step]
set -euo pipefail
BUILD="${1:-build}"
SECONDS_PER_STEP="${2:-5}"
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
for protocol in attn v2 http http_json; do
  "$BUILD/client/loadgen/attn_loadgen" --target="$TARGET" \
    --http_target="127.0.0.1:$HTTP_PORT" --protocol="$protocol" --seq=16 \
    --sweep=concurrency=1,64 --duration="${SECONDS_PER_STEP}s" --warmup=1s \
    --quiet --json="$TMP/$protocol.json" >/dev/null
done
/usr/bin/python3 - "$TMP" <<'PY'
import json, sys
tmp = sys.argv[1]
names = {"attn": "attn.v1 (gRPC)", "v2": "KServe v2 gRPC", "http": "KServe v2 REST, binary",
         "http_json": "KServe v2 REST, JSON"}
runs = {p: json.load(open(f"{tmp}/{p}.json"))["steps"] for p in names}
print("| protocol | concurrency | req/s | vs attn.v1 | p50 ms | p99 ms | errors |")
print("|---|---:|---:|---:|---:|---:|---:|")
for i, label in enumerate(s["label"] for s in runs["attn"]):
    base = runs["attn"][i]["requests_per_second"]
    for p, name in names.items():
        s = runs[p][i]
        lat = s["latency_us"]
        print(f"| {name} | {label.split('=')[1]} | {s['requests_per_second']:.0f} | "
              f"{s['requests_per_second'] / base:.2f} | {lat['p50'] / 1e3:.2f} | "
              f"{lat['p99'] / 1e3:.2f} | {s['errors']} |")
PY
