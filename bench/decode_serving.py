#!/usr/bin/python3
"""Serving decode rate against the kernel's step rate, in one run.

1. attn_bench's decode case (bench/decode_cases.h: d_model 2048, 16 heads,
   4 kv heads, 64 sessions x 2048 cached tokens, one new token each) gives
   the kernel's step rate in tokens/s for the chosen cache dtype.
2. The same layer, exported as a Llama-style checkpoint (GQA, RoPE), is
   served by a real attn_server; attn_loadgen --sessions 64 --context 2048
   prefills 64 sessions, then streams one-token steps for --duration.
3. Prints decode tokens/s, the ratio to the kernel rate, and from /metrics
   how many steps each batch merged (attn_batch_requests).

    /usr/bin/python3 bench/decode_serving.py [--build build] [--cache f32|bf16]
        [--sessions 64] [--context 2048] [--duration 10] [--threads N]

--threads is both attn_bench's and attn_server's (default: the server's
default). The server runs on 127.0.0.1 and is stopped at the end.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--cache", choices=("f32", "bf16"), default="f32")
    p.add_argument("--sessions", type=int, default=64)
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    os.environ.setdefault("ATTN_SERVER", os.path.join(a.build, "server", "attn_server"))
    os.environ.setdefault("ATTN_CLI", os.path.join(a.build, "client", "attn_cli"))
    os.environ.setdefault("ATTN_TOOLS_DIR", os.path.join(ROOT, "tools"))
    sys.path[:0] = [os.path.join(ROOT, "tests", "integration"), os.path.join(a.build, "python")]
    import server_harness as h  # noqa: E402 (needs the environment above)

    # attn_bench takes "--flag value"; attn_server takes "--flag=value".
    bench_threads = ["--threads", str(a.threads)] if a.threads > 0 else []
    server_threads = [f"--threads={a.threads}"] if a.threads > 0 else []
    bench = subprocess.run(
        [os.path.join(a.build, "bench", "attn_bench"), "--json", "--min_time", "2",
         "--filter", f"decode_.*_{a.cache}cache", *bench_threads],
        capture_output=True, text=True, check=True)
    kernel = json.loads(bench.stdout)[0]
    if "error" in kernel:
        raise SystemExit(f"attn_bench: {kernel['error']}")

    with tempfile.TemporaryDirectory() as repo:
        subprocess.run(
            ["/usr/bin/python3", os.path.join(ROOT, "tools", "export_checkpoint.py"),
             "--out", repo, "--name", "decode", "--d-model", "2048", "--heads", "16",
             "--kv-heads", "4", "--no-bias", "--naming", "llama", "--causal",
             "--rope-theta", "10000"], check=True, capture_output=True)
        config_path = os.path.join(repo, "decode", "config.json")
        with open(config_path) as f:
            config = json.load(f)
        config.update({"kv_cache_dtype": "bfloat16" if a.cache == "bf16" else "float32",
                       "max_sequence_length": 2 * a.context + 1024,
                       "sessions": {"max_sessions": a.sessions, "idle_timeout_s": 600}})
        with open(config_path, "w") as f:
            json.dump(config, f)
        # The sessions' whole contexts plus the steps, with room to spare.
        elem = 2 if a.cache == "bf16" else 4
        cache_bytes = int(a.sessions * (a.context + 4096) * 4 * 128 * 2 * elem * 1.25)
        metrics_port = h.free_port()
        server = h.ServerProcess(repo, [f"--kv_cache_bytes={cache_bytes}",
                                        f"--metrics_port={metrics_port}", *server_threads])
        target = server.start()
        try:
            load = subprocess.run(
                [os.path.join(a.build, "client", "loadgen", "attn_loadgen"),
                 f"--target={target}", "--model=decode", f"--sessions={a.sessions}",
                 f"--context={a.context}", f"--duration={a.duration:g}s",
                 "--recompute_requests=0", "--quiet"],
                capture_output=True, text=True, timeout=600)
            metrics = urllib.request.urlopen(
                f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).read().decode()
        finally:
            server.stop()
    if load.returncode != 0:
        raise SystemExit(f"attn_loadgen failed:\n{load.stdout}{load.stderr}")
    m = re.search(r"decode tokens/s ([\d.]+)", load.stdout)
    if not m:
        raise SystemExit(f"no decode rate in attn_loadgen's output:\n{load.stdout}")
    served = float(m.group(1))

    def metric_sum(name):
        total = 0.0
        for line in metrics.splitlines():
            if line.startswith(name) and 'model="decode"' in line:
                total += float(line.split()[-1])
        return total

    batches = metric_sum("attn_batch_requests_count")
    requests = metric_sum("attn_batch_requests_sum")
    rate = kernel["tokens_per_second"]
    print(f"kernel ({kernel['implementation']}, {kernel['threads']} threads): "
          f"{kernel['step_ms']:.2f} ms/step, {rate:.0f} tokens/s, "
          f"bw_efficiency {kernel['bw_efficiency']:.2f}")
    print(load.stdout.strip())
    print(f"served decode {served:.0f} tokens/s = {served / rate:.2f} x the kernel's "
          f"step rate; {requests:.0f} requests in {batches:.0f} batches "
          f"({requests / max(batches, 1):.1f} per batch, prefills included)")
    print(json.dumps({"cache": a.cache, "kernel_tokens_per_second": rate,
                      "served_tokens_per_second": served, "ratio": served / rate,
                      "requests_per_batch": requests / max(batches, 1)}))


if __name__ == "__main__":
    main()
