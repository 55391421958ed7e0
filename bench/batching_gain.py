#!/usr/bin/python3
"""The gain of dynamic batching, measured against its limits (issue 4, item 5).
Not a ctest: it takes about two minutes and its figures are measurements.

Exports two models with tools/export_checkpoint.py into two repositories that
differ ONLY in config.json -> "batching" (on: the defaults below; off:
max_batch_requests 1, max_queue_delay_us 0), then, with the SAME attn_server
binary (--threads 1, see below) and attn_loadgen (closed loop, unary, 1 connection):

  1. weight reuse: model "big" (d_model 1024, 16 heads, 16 MB of weights),
     1-token requests, concurrency 64; off/on/on/off (ABBA, so that a drift in
     machine load hits both sides); gain = mean(on) / mean(off), >= 2 wanted;
  2. serving efficiency: model "small" (d_model 256, 4 heads), 16-token
     requests, concurrency 64, batching on (and off, for reference), against
     ideal = 1 / (1/echo_rps + 1/kernel_rps), where echo_rps is bench/grpc_floor
     (server process + client process, 16 KB request and 16 KB response = the
     fp32 query and output of a [1, 16, 256] request, concurrency 64) and
     kernel_rps = attn_bench's small_64x16_d256_h4_fp32 ForwardBatch case
     (same --threads) tokens/s / 16; >= 0.8 x ideal wanted;
  3. latency tax: "small", 16 tokens, concurrency 1, on/off/off/on: p50 on -
     p50 off must be <= max_queue_delay_us (and ~0: an idle executor
     dispatches at once);
and prints every figure: requests/s, p50/p99, the mean batch size seen by a
request (loadgen's timing.batch_requests mean) and the mean requests per
kernel call (the server's attn_batch_requests histogram: sum / count).

  bench/batching_gain.py --build build [--duration 3] [--threads 1]
      [--json out.json]

--threads (attn_server --threads and attn_bench --threads, always the same)
defaults to 1: on 2 cores shared by the server's gRPC threads, the load
generator and the kernel, a 2-thread OpenMP team is preempted mid-kernel and
waits at its barriers (measured: a lone 16-token d256 request computes in
~90 us at --threads 1 but ~300 us at --threads 2 inside the server, while
attn_bench, alone on the machine, is ~1.6x faster at 2 threads). With 1
thread the kernel owns one core and gRPC + load generator the other.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCHING_ON = {"max_batch_requests": 64, "max_batch_tokens": 4096,
               "max_queue_delay_us": 500}
BATCHING_OFF = {"max_batch_requests": 1, "max_queue_delay_us": 0}
MODELS = {"big": (1024, 16), "small": (256, 4)}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kwargs):
    print("  $ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)


def make_repositories(work):
    """Exports the models once; returns {"on": dir, "off": dir}."""
    base = os.path.join(work, "exported")
    for name, (d_model, heads) in MODELS.items():
        run(["/usr/bin/python3", os.path.join(ROOT, "tools", "export_checkpoint.py"),
             "--out", base, "--name", name, "--d-model", str(d_model),
             "--heads", str(heads), "--seed", "1"])
    repos = {}
    for mode, batching in (("on", BATCHING_ON), ("off", BATCHING_OFF)):
        repo = os.path.join(work, f"repo_{mode}")
        shutil.copytree(base, repo)
        for name in MODELS:
            path = os.path.join(repo, name, "config.json")
            with open(path) as f:
                config = json.load(f)
            config["batching"] = batching
            with open(path, "w") as f:
                json.dump(config, f)
        repos[mode] = repo
    return repos


class Server:
    def __init__(self, build, repo, threads):
        self.metrics_port = free_port()
        self.proc = subprocess.Popen(
            [os.path.join(build, "server", "attn_server"), "--host=127.0.0.1", "--port=0",
             f"--metrics_port={self.metrics_port}", f"--threads={threads}",
             f"--model_repository={repo}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        match = re.match(r"attn_server listening on (\S+)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"attn_server did not start: {line!r}")
        self.target = match.group(1).replace("0.0.0.0", "127.0.0.1")

    def batch_histogram(self, model):
        """(count, sum) of attn_batch_requests for `model`."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        out = []
        for suffix in ("count", "sum"):
            pattern = re.compile(rf"^attn_batch_requests_{suffix}\{{([^}}]*)\}} (\S+)$", re.M)
            out.append(sum(float(v) for labels, v in pattern.findall(text)
                           if f'model="{model}"' in labels))
        return tuple(out)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def loadgen(args, repo, model, seq, concurrency, label):
    server = Server(args.build, repo, args.threads)
    try:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            count0, sum0 = server.batch_histogram(model)
            run([os.path.join(args.build, "client", "loadgen", "attn_loadgen"),
                 f"--target={server.target}", f"--model={model}", f"--seq={seq}",
                 f"--concurrency={concurrency}", f"--duration={args.duration}s",
                 f"--warmup={args.warmup}s", f"--json={out.name}", "--quiet"])
            count1, sum1 = server.batch_histogram(model)
            with open(out.name) as f:
                step = json.load(f)["steps"][0]
    finally:
        server.stop()
    calls = count1 - count0
    result = {
        "label": label, "model": model, "seq": seq, "concurrency": concurrency,
        "rps": step["requests_per_second"], "errors": step["errors"],
        "p50_us": step["latency_us"]["p50"], "p99_us": step["latency_us"]["p99"],
        "batch_seen_by_request": step["server_timing_us"]["batch_requests_mean"],
        "requests_per_kernel_call": (sum1 - sum0) / calls if calls else 0.0,
        "queue_us_mean": step["server_timing_us"]["queue_mean"],
        "compute_us_mean": step["server_timing_us"]["compute_mean"],
    }
    print(f"  {label:<28} {result['rps']:9.0f} req/s  p50 {result['p50_us']:8.0f} us  "
          f"p99 {result['p99_us']:8.0f} us  batch/request {result['batch_seen_by_request']:5.1f}"
          f"  requests/kernel call {result['requests_per_kernel_call']:5.1f}"
          f"  errors {result['errors']}", flush=True)
    return result


def grpc_floor(args, concurrency):
    binary = os.path.join(args.build, "bench", "grpc_floor")
    server = subprocess.Popen([binary, "--mode=server", "--port=0",
                               "--response_bytes=16384"],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        target = re.match(r"grpc_floor listening on (\S+)", line).group(1)
        out = run([binary, "--mode=client", f"--target={target}",
                   f"--concurrency={concurrency}", "--request_bytes=16384",
                   "--response_bytes=16384", f"--duration_s={args.duration}",
                   f"--warmup_s={args.warmup}"])
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  grpc_floor c={concurrency}: {result['requests_per_second']:.0f} RPC/s "
          f"p50 {result['p50_us']:.0f} us p99 {result['p99_us']:.0f} us", flush=True)
    return result


def kernel_rps(args):
    out = run([os.path.join(args.build, "bench", "attn_bench"), "--json",
               "--filter", "^small_64x16_d256_h4_fp32$", "--threads", str(args.threads)])
    case = json.loads(out.stdout)[0]
    rps = case["tokens_per_second"] / 16
    print(f"  attn_bench {case['name']} ({case['api']}, {case['requests']} requests): "
          f"{case['tokens_per_second']:.0f} tokens/s = {rps:.0f} requests/s", flush=True)
    return rps, case


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1,
                        help="attn_server and attn_bench threads (see above)")
    parser.add_argument("--json", help="also write every figure here")
    args = parser.parse_args()

    report = {"batching_on": BATCHING_ON, "batching_off": BATCHING_OFF,
              "threads": args.threads, "duration_s": args.duration}
    with tempfile.TemporaryDirectory() as work:
        print("== models", flush=True)
        repos = make_repositories(work)

        print("== 1. weight reuse: big (d1024/h16), 1 token, concurrency 64", flush=True)
        runs = [loadgen(args, repos[m], "big", 1, 64, f"big c64 batching {m}")
                for m in ("off", "on", "on", "off")]
        on = [r for r in runs if r["label"].endswith(" on")]
        off = [r for r in runs if r["label"].endswith("off")]
        gain = statistics.mean(r["rps"] for r in on) / statistics.mean(r["rps"] for r in off)
        report["weight_reuse"] = {"runs": runs, "gain": gain, "target": 2.0,
                                  "met": gain >= 2.0}
        print(f"  => on/off = {gain:.2f}x (target >= 2): "
              f"{'MET' if gain >= 2.0 else 'NOT MET'}", flush=True)

        print("== 2. serving efficiency: small (d256/h4), 16 tokens, concurrency 64",
              flush=True)
        echo = grpc_floor(args, 64)
        krps, case = kernel_rps(args)
        served = [loadgen(args, repos["on"], "small", 16, 64, "small c64 batching on"),
                  loadgen(args, repos["off"], "small", 16, 64, "small c64 batching off")]
        ideal = 1.0 / (1.0 / echo["requests_per_second"] + 1.0 / krps)
        efficiency = served[0]["rps"] / ideal
        report["serving_efficiency"] = {
            "echo_rps": echo["requests_per_second"], "kernel_rps": krps,
            "ideal_rps": ideal, "server_rps": served[0]["rps"], "efficiency": efficiency,
            "target": 0.8, "met": efficiency >= 0.8, "runs": served, "echo": echo,
            "kernel": case}
        print(f"  => echo {echo['requests_per_second']:.0f}, kernel {krps:.0f}, ideal "
              f"{ideal:.0f}, server {served[0]['rps']:.0f} req/s = {efficiency:.2f} x ideal "
              f"(target >= 0.8): {'MET' if efficiency >= 0.8 else 'NOT MET'}", flush=True)

        print("== 3. latency tax: small, 16 tokens, concurrency 1", flush=True)
        echo1 = grpc_floor(args, 1)
        c1 = [loadgen(args, repos[m], "small", 16, 1, f"small c1 batching {m}")
              for m in ("on", "off", "off", "on")]
        p50_on = statistics.mean(r["p50_us"] for r in c1 if r["label"].endswith(" on"))
        p50_off = statistics.mean(r["p50_us"] for r in c1 if r["label"].endswith("off"))
        tax = p50_on - p50_off
        limit = BATCHING_ON["max_queue_delay_us"]
        report["latency_tax"] = {"runs": c1, "p50_on_us": p50_on, "p50_off_us": p50_off,
                                 "tax_us": tax, "limit_us": limit, "met": tax <= limit,
                                 "echo_c1": echo1}
        print(f"  => p50 on {p50_on:.0f} us, off {p50_off:.0f} us, difference {tax:.0f} us "
              f"(limit {limit} us): {'MET' if tax <= limit else 'NOT MET'}", flush=True)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
