"""Overload through the real attn_server: attn_loadgen first measures the
saturation throughput (closed loop), then offers 10x that rate in open loop
(intended send times, so a slow server cannot slow the offered load down).

Asserted, as the server promises in the README ("Overload"):
- excess requests are rejected, only with RESOURCE_EXHAUSTED (in-flight
  budget) or UNAVAILABLE (queue full), and fast: the median rejection is
  under a tenth of an admitted call's median latency, the p99 under that
  median itself (the issue's target is a 5 ms p99; tests assert ratios,
  the figures are printed);
- accepted throughput stays >= 80% of the saturation throughput;
- peak RSS stays under the in-flight budget + weights + 512 MiB;
- grpc.health.v1 answers every probe (every 50 ms), the slowest within a
  quarter of an admitted call's median latency (target: 100 ms);
- the server serves normally afterwards.
"""
import json
import os
import subprocess
import tempfile
import threading
import time
import unittest

import grpc
import numpy as np
import torch

import attnserve  # also puts the generated stubs (health_pb2) on sys.path
import health_pb2
import server_harness as h

LOADGEN = os.path.join(os.path.dirname(h.CLI), "loadgen", "attn_loadgen")
MIB = 1 << 20
# A wide layer: each call costs the executor far more than it costs gRPC to
# receive or reject it (1 MiB of transport against ~8.6 GFLOP of
# projections), so a rejection is cheap next to an admitted call, as with
# real models, and 10x the saturation rate stays within what the load
# generator can send from the same 2 cores. (With d_model 1024 x 256 tokens,
# 2 GFLOP a call, an AVX-512 CPU computed so fast that 10x its rate was
# ~450 MiB/s of requests: more than loopback gRPC carried on 2 shared cores,
# and rejections queued for seconds in the transport.) Saturation is
# measured at 16 in flight (within the budget).
D_MODEL = 4096
HEADS = 8
SEQ = 64                  # 1 MiB per request
BUDGET = 128 * MIB        # the bound asserted on RSS
OVERLOAD = 10             # offered rate / saturation throughput
SATURATION_S = 3
OVERLOAD_S = 10


def loadgen(target, tmp, name, *args):
    out = os.path.join(tmp, name + ".json")
    r = subprocess.run([LOADGEN, f"--target={target}", "--model=wide", f"--seq={SEQ}",
                        "--quiet",
                        f"--json={out}", *args],
                       capture_output=True, text=True, timeout=180)
    # A run with errors exits non-zero by design; the JSON is what we check.
    if not os.path.exists(out):
        raise AssertionError(f"attn_loadgen wrote no report: {r.stdout}{r.stderr}")
    with open(out) as f:
        report = json.load(f)
    return report["steps"][-1]


class OverloadTest(unittest.TestCase):

    def test_ten_times_the_sustainable_rate(self):
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(5)
            mha = torch.nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True).eval()
            h.import_exporter().export_module(mha, tmp, "wide", version=1)
            # One kernel thread: the other core is left to gRPC and the load
            # generator, as the README advises on 2 cores (with both cores
            # computing, 10x the faster saturation rate was more than the
            # shared cores could send, receive and reject).
            server = h.ServerProcess(tmp, ["--max_inflight_bytes", str(BUDGET),
                                           "--threads=1"])
            target = server.start()
            try:
                self.overload(server, target, tmp, mha)
            except BaseException:
                server._kill()
                raise
            server.stop()

    def overload(self, server, target, tmp, mha):
        pid = server.proc.pid
        rss_idle = h.proc_status_bytes(pid, "VmRSS")
        sat = loadgen(target, tmp, "saturation", "--concurrency=16",
                      "--warmup=1s", f"--duration={SATURATION_S}s")
        self.assertEqual(sat["errors"], 0, sat["status_counts"])
        saturation = sat["requests_per_second"]
        self.assertGreater(saturation, 0)

        stop = threading.Event()
        health_ms, health_errors, rss = [], [], [rss_idle]

        def probe():
            channel = grpc.insecure_channel(target)
            stub = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString)
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    r = stub(health_pb2.HealthCheckRequest(service=""),
                                   timeout=5)
                    health_ms.append((time.monotonic() - t0) * 1e3)
                    if r.status != health_pb2.HealthCheckResponse.SERVING:
                        health_errors.append(str(r.status))
                except grpc.RpcError as e:
                    health_errors.append(repr(e))
                rss.append(h.proc_status_bytes(pid, "VmRSS"))
                stop.wait(0.05)
            channel.close()

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            rate = OVERLOAD * saturation
            over = loadgen(target, tmp, "overload", f"--rate={rate:.0f}",
                           "--arrival=poisson", "--max_inflight=8192",
                           "--warmup=1s", f"--duration={OVERLOAD_S}s")
        finally:
            stop.set()
            prober.join(timeout=30)

        codes = over["status_counts"]
        rejected = over["errors"]
        print(f"overload: saturation {saturation:.0f} req/s; offered "
              f"{over['sent_per_second']:.0f} req/s (target {rate:.0f}); accepted "
              f"{over['requests_per_second']:.0f} req/s "
              f"({over['requests_per_second'] / saturation:.2f} of saturation); "
              f"codes {codes}; rejection p50/p99/max "
              f"{over['error_latency_us']['p50'] / 1e3:.2f}/"
              f"{over['error_latency_us']['p99'] / 1e3:.2f}/"
              f"{over['error_latency_us']['max'] / 1e3:.2f} ms; accepted p50/p99 "
              f"{over['latency_us']['p50'] / 1e3:.1f}/"
              f"{over['latency_us']['p99'] / 1e3:.1f} ms; health probes "
              f"{len(health_ms)}, max {max(health_ms, default=0):.1f} ms; "
              f"RSS idle {rss_idle / MIB:.0f} MiB, peak {max(rss) / MIB:.0f} MiB",
              flush=True)

        # The load really was 10x (a few late sends are tolerated).
        self.assertGreater(over["sent_per_second"], 0.8 * rate, over)
        self.assertGreater(rejected, 0, "10x the capacity and nothing rejected")
        self.assertEqual(set(codes) - {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE"},
                         set(), codes)
        # Rejections do not wait for compute: the typical one is far faster
        # than an admitted call, and even the slowest 1% beat the median
        # admitted call (on 2 shared cores a few wait for the CPU or for
        # their 1 MiB to cross loopback behind admitted requests).
        accepted_p50 = over["latency_us"]["p50"]
        self.assertLess(over["error_latency_us"]["p50"], accepted_p50 / 10,
                        over["error_latency_us"])
        self.assertLess(over["error_latency_us"]["p99"], accepted_p50,
                        over["error_latency_us"])
        self.assertGreaterEqual(over["requests_per_second"], 0.8 * saturation)
        self.assertEqual(health_errors, [])
        self.assertGreater(len(health_ms), 20)
        self.assertLess(max(health_ms) * 1e3, accepted_p50 / 4, sorted(health_ms)[-5:])
        self.assertLess(max(rss), rss_idle + BUDGET + 512 * MIB)

        # Served normally afterwards.
        x = np.random.default_rng(1).standard_normal((1, SEQ, D_MODEL), dtype=np.float32)
        with attnserve.Client(target) as client:
            out = client.attend(x, model="wide", timeout=30).output
        with torch.no_grad():
            t = torch.from_numpy(x)
            np.testing.assert_allclose(out, mha(t, t, t, need_weights=False)[0].numpy(),
                                       atol=1e-4, rtol=0)
        self.assertTrue(server.alive(), server.stderr_text())


if __name__ == "__main__":
    unittest.main(verbosity=2)
