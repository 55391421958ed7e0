#!/usr/bin/python3
"""Peer comparison: PyTorch nn.MultiheadAttention vs attn_bench, same run.

Runs `attn_bench --json` for the selected cases, then PyTorch's
nn.MultiheadAttention (batch_first, need_weights=False, causal mask where the
case is causal; bf16 cases convert the module and inputs to bfloat16) with
the same shapes and the same thread count, and prints tokens/s of both and
the ratio per case. The small-request case (64 requests of 16 tokens) is one
PyTorch call with batch 64: PyTorch has no ragged batching, so this is the
most favourable form for it.

Usage:
  /usr/bin/python3 bench/torch_peer.py --bench build/bench/attn_bench \
      [--threads 2] [--filter REGEX] [--min_time 1.0] [--json OUT.json]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch


def time_median(fn, min_time):
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 1000:
            break
    return statistics.median(times)


def torch_tokens_per_second(case, threads, min_time):
    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if case["dtype"] == "bf16" else torch.float32
    d, heads = case["d_model"], case["heads"]
    batch, seq = case["batch"], case["seq"]
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(d, heads, batch_first=True).eval()
    mha = mha.to(dtype)
    x = torch.randn(batch, seq, d, dtype=dtype)
    mask = None
    if case["causal"]:
        mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)

    def run():
        with torch.inference_mode():
            mha(x, x, x, need_weights=False, attn_mask=mask)

    return batch * seq / time_median(run, min_time)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", required=True, help="path to attn_bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--filter", default="")
    parser.add_argument("--min_time", type=float, default=1.0)
    parser.add_argument("--json", help="write the merged results here")
    args = parser.parse_args()

    cmd = [args.bench, "--json", "--threads", str(args.threads),
           "--min_time", str(args.min_time)]
    if args.filter:
        cmd += ["--filter", args.filter]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    cases = json.loads(proc.stdout)

    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    print(f"{'case':42s} {'attn tok/s':>12s} {'torch tok/s':>12s} "
          f"{'ratio':>7s}")
    for case in cases:
        t = torch_tokens_per_second(case, args.threads, args.min_time)
        case["torch_tokens_per_second"] = t
        case["ratio_vs_torch"] = case["tokens_per_second"] / t
        print(f"{case['name']:42s} {case['tokens_per_second']:12.0f} "
              f"{t:12.0f} {case['ratio_vs_torch']:7.2f}")
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(cases, f, indent=2)


if __name__ == "__main__":
    main()
