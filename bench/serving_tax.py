#!/usr/bin/python3
"""The serving-path tax at concurrency 1, and default --threads against
--threads 1, in one run (issue 15, item 5). Not a ctest: its figures are
measurements (tests/integration/test_threads_default.py is the test).

  bench/serving_tax.py --build build [--duration 2] [--rounds 3]
      [--server PATH] [--json out.json]

Measures, on the built-in demo model (d_model 256, 4 heads, fp32), with
16-token requests (a 16 KiB fp32 query in, a 16 KiB output back):
  echo     bench/grpc_floor, server and client processes, concurrency 1,
           16384-byte request and response: the gRPC floor;
  kernel   attn_bench's single_1x16_d256_h4_fp32 (one ForwardBatch call of
           one request, as the executor makes it), the faster of 1 and all
           hardware threads;
  servers  attn_server with the default --threads and with --threads 1,
           each driven by attn_loadgen --concurrency=1 --seq=16;
in `rounds` rounds, the order alternating (ABBA) so that a drift of the
machine's load hits every side alike; each figure is the median over the
rounds. tax = server p50 - echo p50 - kernel time: what the server adds to
an RPC and a kernel call (validation and decode, hand-off to the executor,
thread wake-ups, encode, completion). --server measures another attn_server
binary (e.g. an older build) against the same echo and kernel figures.
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAYLOAD_BYTES = 16 * 256 * 4  # [1, 16, 256] fp32
KERNEL_CASE = "single_1x16_d256_h4_fp32"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def echo_p50(build, duration):
    binary = os.path.join(build, "bench", "grpc_floor")
    server = subprocess.Popen([binary, "--mode=server", "--port=0",
                               f"--response_bytes={PAYLOAD_BYTES}"],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        match = re.match(r"grpc_floor listening on (\S+)", line)
        if not match:
            raise RuntimeError(f"grpc_floor did not start: {line!r}")
        out = subprocess.run(
            [binary, "--mode=client", f"--target={match.group(1)}", "--concurrency=1",
             f"--request_bytes={PAYLOAD_BYTES}", f"--response_bytes={PAYLOAD_BYTES}",
             f"--duration_s={duration}", "--warmup_s=0.5"],
            check=True, capture_output=True, text=True, timeout=duration + 60)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return json.loads(out.stdout.strip().splitlines()[-1])["p50_us"]


def kernel_us(build, threads):
    out = subprocess.run(
        [os.path.join(build, "bench", "attn_bench"), "--json", "--filter",
         f"^{KERNEL_CASE}$", "--threads", str(threads), "--min_time", "0.5"],
        check=True, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout)[0]["time_ms"] * 1e3


def serve(build, server_bin, threads_args, duration):
    """attn_loadgen at concurrency 1 against a fresh server: the step."""
    proc = subprocess.Popen(
        [server_bin, "--host=127.0.0.1", "--port=0", "--metrics_port=0"] + threads_args,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        match = re.match(r"attn_server listening on (\S+)", line)
        if not match:
            raise RuntimeError(f"attn_server did not start: {line!r}")
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run(
                [os.path.join(build, "client", "loadgen", "attn_loadgen"),
                 f"--target={match.group(1)}", "--concurrency=1", "--seq=16",
                 f"--duration={duration}s", "--warmup=1s", f"--json={out.name}",
                 "--quiet"],
                check=True, capture_output=True, text=True, timeout=duration + 120)
            with open(out.name) as f:
                step = json.load(f)["steps"][0]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    if step["errors"]:
        raise RuntimeError(f"attn_loadgen saw {step['errors']} errors")
    return {"p50_us": step["latency_us"]["p50"], "p99_us": step["latency_us"]["p99"],
            "rps": step["requests_per_second"],
            "compute_us": step["server_timing_us"]["compute_mean"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--server", help="attn_server binary (default: the build's)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write every figure here")
    args = parser.parse_args()
    server_bin = args.server or os.path.join(args.build, "server", "attn_server")
    cores = os.cpu_count() or 1

    kernel = {1: kernel_us(args.build, 1), cores: kernel_us(args.build, cores)}
    kernel_best = min(kernel.values())
    sides = {"default": [], "threads1": []}
    echoes = []
    for r in range(args.rounds):
        order = ["default", "threads1"] if r % 2 == 0 else ["threads1", "default"]
        echoes.append(echo_p50(args.build, args.duration))
        for side in order:
            flags = [] if side == "default" else ["--threads=1"]
            sides[side].append(serve(args.build, server_bin, flags, args.duration))
            print(f"  round {r + 1} {side:<9} p50 {sides[side][-1]['p50_us']:7.0f} us"
                  f"  {sides[side][-1]['rps']:6.0f} req/s", file=sys.stderr, flush=True)

    def med(side, key):
        return statistics.median(run[key] for run in sides[side])

    echo = statistics.median(echoes)
    report = {"cpu": cpu_name(), "cores": cores, "rounds": args.rounds,
              "duration_s": args.duration, "echo_p50_us": echo,
              "kernel_us": {str(k): v for k, v in kernel.items()},
              "kernel_best_us": kernel_best, "server": server_bin}
    print(f"serving tax, concurrency 1, demo model (d_model 256, 4 heads, fp32), "
          f"16 tokens; {cpu_name()}, {cores} cores; median of {args.rounds} rounds "
          f"of {args.duration:g} s")
    print(f"echo floor p50 (grpc_floor, {PAYLOAD_BYTES} B each way): {echo:7.0f} us")
    print(f"kernel alone ({KERNEL_CASE}): "
          + ", ".join(f"{v:.0f} us at {k} thread(s)" for k, v in kernel.items()))
    print(f"{'attn_server':<22}{'p50 us':>8}{'p99 us':>9}{'req/s':>8}"
          f"{'compute us':>12}{'tax us':>8}")
    for side, label in (("default", f"default ({cores} threads)"),
                        ("threads1", "--threads 1")):
        p50 = med(side, "p50_us")
        tax = p50 - echo - kernel_best
        report[side] = {"p50_us": p50, "p99_us": med(side, "p99_us"),
                        "rps": med(side, "rps"), "compute_us": med(side, "compute_us"),
                        "tax_us": tax, "runs": sides[side]}
        print(f"{label:<22}{p50:8.0f}{med(side, 'p99_us'):9.0f}{med(side, 'rps'):8.0f}"
              f"{med(side, 'compute_us'):12.0f}{tax:8.0f}")
    ratio = report["default"]["p50_us"] / report["threads1"]["p50_us"]
    report["default_over_threads1_p50"] = ratio
    print(f"default / --threads 1: p50 {ratio:.2f}x, req/s "
          f"{report['default']['rps'] / report['threads1']['rps']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
