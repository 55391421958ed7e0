#!/usr/bin/python3
"""Throughput of attn_server with metrics on vs --metrics_port=0, in one run
(not a ctest: it takes minutes and its figure is a measurement).

Alternates on/off runs (ABBA order, so a drift in machine load hits both
sides alike). Each run starts a fresh server (demo model), drives it with
attn_loadgen (closed loop) and, when metrics are on, scrapes /metrics every
second meanwhile (15x as often as the shipped 15 s scrape interval). Also
reads the server's CPU time (/proc/PID/stat) around the measured window:
CPU per request is far less sensitive than throughput to other processes
competing for the cores. Prints each run, the ratio of the median
throughputs and the median of the per-pair ratios.

  tests/metrics/measure_overhead.py --build build [--pairs 4] [--seq 16]
      [--concurrency 4] [--duration 5s] [--threads 1]
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid`."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(args, metrics_on):
    metrics_port = free_port() if metrics_on else 0
    server = subprocess.Popen(
        [os.path.join(args.build, "server", "attn_server"), "--host=127.0.0.1",
         "--port=0", f"--metrics_port={metrics_port}", f"--threads={args.threads}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        target = re.match(r"attn_server listening on (\S+)", line).group(1)
        stop = threading.Event()
        scrapes = [0]

        def scrape():
            while not stop.wait(1.0):
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
                    r.read()
                scrapes[0] += 1
        loadgen = [os.path.join(args.build, "client", "loadgen", "attn_loadgen"),
                   f"--target={target}", f"--concurrency={args.concurrency}",
                   f"--seq={args.seq}", "--quiet"]
        # Warm up (primitives, connections) unmeasured, then measure with
        # the server's CPU time read around the measured run.
        subprocess.run(loadgen + ["--duration=1s", "--warmup=0s"], check=True,
                       stdout=subprocess.DEVNULL)
        if metrics_on:
            threading.Thread(target=scrape, daemon=True).start()
        with tempfile.NamedTemporaryFile(suffix=".json") as report:
            cpu0 = cpu_seconds(server.pid)
            subprocess.run(loadgen + [f"--duration={args.duration}", "--warmup=0s",
                                      f"--json={report.name}"], check=True,
                           stdout=subprocess.DEVNULL)
            cpu1 = cpu_seconds(server.pid)
            stop.set()
            step = json.load(open(report.name))["steps"][0]
        if step["errors"]:
            raise RuntimeError(f"{step['errors']} errors in a run")
        return step["requests_per_second"], (cpu1 - cpu0) / step["ok"] * 1e6, scrapes[0]
    finally:
        server.terminate()
        server.wait(timeout=60)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default="build")
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--seq", default="16")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--duration", default="5s")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    results = {True: [], False: []}
    cpu = {True: [], False: []}
    for i in range(args.pairs):
        order = (True, False) if i % 2 == 0 else (False, True)
        for on in order:
            rps, us, scrapes = run_once(args, on)
            results[on].append(rps)
            cpu[on].append(us)
            print(f"pair {i} metrics {'on ' if on else 'off'}: {rps:9.1f} req/s  "
                  f"server CPU {us:7.1f} us/request"
                  f"{f'  ({scrapes} scrapes)' if on else ''}", flush=True)
    on, off = statistics.median(results[True]), statistics.median(results[False])
    paired = statistics.median(a / b for a, b in zip(results[True], results[False]))
    print(f"median on {on:.1f} req/s, off {off:.1f} req/s, on/off = {on / off:.4f} "
          f"({(on / off - 1) * 100:+.2f}%); median of the per-pair ratios {paired:.4f}")
    con, coff = statistics.median(cpu[True]), statistics.median(cpu[False])
    print(f"server CPU per request: median on {con:.1f} us, off {coff:.1f} us, "
          f"on/off = {con / coff:.4f} ({(con / coff - 1) * 100:+.2f}%)")


if __name__ == "__main__":
    sys.exit(main())
