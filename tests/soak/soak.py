"""Soak test: a real attn_server under a mixed load of valid, invalid,
unknown-model, cancelled, deadline-expired and streaming requests at about
70% of its measured capacity, for SOAK_SECONDS (default 60; run 300 or more
by hand, see the README).

After a warm-up it checks that the server's resident memory grew by less
than 5%, that its open file descriptors and threads did not grow (gRPC's
on-demand pools excepted, within their cap of 2 per core), that it
never crashed, and that its attn_requests_total counters match what the
client saw, per status code.

  SOAK_SECONDS=300 ATTN_SERVER=build/server/attn_server \
    PYTHONPATH=build/python:tests/integration:tests/metrics \
    /usr/bin/python3 tests/soak/soak.py
"""
import collections
import os
import random
import statistics
import threading
import time
import unittest

import grpc
import numpy as np

import attnserve
import metrics_harness as mh

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
CALIBRATE_SECONDS = 3.0
WORKERS = 4
LOAD_FRACTION = 0.7
SAMPLE_EVERY_S = 1.0
D_MODEL = 256  # the built-in demo model

# Request kinds and their weights in the mix.
MIX = [("valid", 55), ("stream", 10), ("invalid", 10), ("unknown_model", 5),
       ("deadline", 10), ("cancelled", 10)]


# gRPC's own thread pools that start small and grow on demand (its executor
# up to 2 threads per core; its timer threads): a burst after warm-up may
# add threads there, which is not growth; both must stay within 2 per core.
GRPC_POOLS = ("default-executo", "grpc_global_tim")
GRPC_POOL_CAP = 2 * os.cpu_count()


def thread_names(pid):
    names = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names[f.read().strip()] += 1
        except FileNotFoundError:
            pass  # the thread ended meanwhile
    return names


def proc_stats(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    rss = int(fields["VmRSS"].split()[0]) * 1024
    threads = int(fields["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, threads, thread_names(pid)


class SoakTest(unittest.TestCase):

    def test_soak(self):
        server = mh.MetricsServer(None)
        try:
            self._soak(server)
        finally:
            server.stop()  # raises unless the server exits 0

    def _soak(self, server):
        client = attnserve.Client(server.target, retry=False)
        stub = client._stub
        rng = np.random.default_rng(0)
        valid = client.build_request(
            rng.standard_normal((1, 16, D_MODEL), dtype=np.float32), model="demo")
        slow = client.build_request(
            rng.standard_normal((4, 256, D_MODEL), dtype=np.float32), model="demo")
        invalid = client.build_request(
            rng.standard_normal((1, 4, D_MODEL - 1), dtype=np.float32), model="demo")
        unknown = client.build_request(
            rng.standard_normal((1, 4, D_MODEL), dtype=np.float32), model="no_such_model")
        pid = server.server.proc.pid

        # Capacity: closed loop of valid requests.
        done = [0]
        lock = threading.Lock()
        stop_at = time.monotonic() + CALIBRATE_SECONDS

        def closed_loop():
            while time.monotonic() < stop_at:
                stub.Attend(valid, timeout=30)
                with lock:
                    done[0] += 1
        threads = [threading.Thread(target=closed_loop) for _ in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        capacity = done[0] / CALIBRATE_SECONDS
        rate = LOAD_FRACTION * capacity
        print(f"capacity {capacity:.0f} req/s; soak at {rate:.0f} calls/s "
              f"for {SOAK_SECONDS:.0f} s")

        before, _ = mh.parse(server.scrape()[0])
        seen = collections.Counter()  # client-side status codes, per request

        def record(code):
            with lock:
                seen[code.name] += 1

        kinds = [k for k, _ in MIX]
        weights = [w for _, w in MIX]
        start = time.monotonic()
        end = start + SOAK_SECONDS
        interval = WORKERS / rate

        def worker(seed):
            r = random.Random(seed)
            next_at = time.monotonic()
            while True:
                next_at += interval
                now = time.monotonic()
                if now >= end:
                    return
                if next_at > now:
                    time.sleep(next_at - now)
                kind = r.choices(kinds, weights)[0]
                try:
                    if kind == "valid":
                        stub.Attend(valid, timeout=30)
                        record(grpc.StatusCode.OK)
                    elif kind == "invalid":
                        stub.Attend(invalid, timeout=30)
                        record(grpc.StatusCode.OK)
                    elif kind == "unknown_model":
                        stub.Attend(unknown, timeout=30)
                        record(grpc.StatusCode.OK)
                    elif kind == "deadline":
                        stub.Attend(slow, timeout=0.001)
                        record(grpc.StatusCode.OK)
                    elif kind == "cancelled":
                        future = stub.Attend.future(slow, timeout=30)
                        time.sleep(0.0005)
                        if future.cancel():
                            record(grpc.StatusCode.CANCELLED)
                        else:
                            future.result()
                            record(grpc.StatusCode.OK)
                    else:  # stream of 4 requests, answered in order
                        for response in stub.AttendStream(iter([valid] * 4), timeout=30):
                            code = response.error.code if response.HasField("error") else 0
                            record(grpc.StatusCode.OK if code == 0 else
                                   next(c for c in grpc.StatusCode if c.value[0] == code))
                except grpc.RpcError as e:
                    record(e.code())

        samples = []
        workers = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
        for t in workers:
            t.start()
        while time.monotonic() < end:
            self.assertTrue(server.server.alive(), server.server.stderr_text())
            samples.append((time.monotonic() - start, *proc_stats(pid)))
            time.sleep(SAMPLE_EVERY_S)
        for t in workers:
            t.join()
        samples.append((time.monotonic() - start, *proc_stats(pid)))
        self.assertTrue(server.server.alive(), server.server.stderr_text())

        # Resources after warm-up (the first third: allocator pools, gRPC
        # threads and primitive caches settle).
        warm = [s for s in samples if s[0] >= SOAK_SECONDS / 3]
        self.assertGreaterEqual(len(warm), 3, samples)
        # RSS moves with the requests in flight (request buffers are mmap'ed
        # and returned, see server/serving/malloc_tuning.h), by +-5 MiB at
        # ~1,400 calls/s: compare the floors (minimum) of the first and the
        # last quarter after warm-up. A leak raises the later floor; the
        # in-flight noise only adds spikes above it.
        quarter = max(3, len(warm) // 4)
        base_rss = min(s[1] for s in warm[:quarter])
        last_rss = min(s[1] for s in warm[-quarter:])
        growth = last_rss / base_rss - 1
        print(f"RSS after warm-up {base_rss / 2**20:.1f} MiB -> "
              f"{last_rss / 2**20:.1f} MiB ({100 * growth:+.2f}%); "
              f"fds {warm[0][2]} -> {warm[-1][2]}; threads {warm[0][3]} -> {warm[-1][3]}")
        print("samples (s, rss MiB, fds, threads):", [(round(s[0]), round(s[1] / 2**20, 1), s[2], s[3]) for s in samples])
        print("threads by name, first and last sample after warm-up:",
              dict(warm[0][4]), dict(warm[-1][4]))
        self.assertLess(growth, 0.05)
        # fds: the last samples against the first ones after warm-up.
        self.assertLessEqual(statistics.median(s[2] for s in warm[-3:]),
                             max(s[2] for s in warm[:3]), "fds")
        # Threads, by name: none grows, but gRPC's on-demand pools, which
        # stay within their cap.
        first_names = collections.Counter()
        for sample in warm[:quarter]:
            first_names |= sample[4]
        for name, count in warm[-1][4].items():
            if name in GRPC_POOLS:
                self.assertLessEqual(count, GRPC_POOL_CAP, name)
            else:
                self.assertLessEqual(count, first_names[name], name)

        # Counters against the client's counts.
        after, _ = mh.parse(server.scrape()[0])
        server_counts = collections.Counter()
        for key, v in after.items():
            if key[0] == "attn_requests_total":
                server_counts[dict(key[1])["code"]] += v - before.get(key, 0)
        server_counts = +server_counts
        print(f"client {dict(seen)}")
        print(f"server {dict((k, int(v)) for k, v in server_counts.items())}")
        for code in ("INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED",
                     "UNAVAILABLE", "INTERNAL", "UNKNOWN"):
            self.assertEqual(server_counts.get(code, 0), seen.get(code, 0), code)
        self.assertGreater(seen["OK"], 0)
        self.assertGreater(seen["INVALID_ARGUMENT"], 0)
        self.assertGreater(seen["NOT_FOUND"], 0)
        self.assertGreater(seen["DEADLINE_EXCEEDED"], 0)
        # A call the client cancelled, or whose deadline passed, may still
        # have finished on the server first (then counted OK there); a call
        # cancelled, or past its deadline, before its handler ran is not
        # counted at all (on a loaded machine many deadlines pass in the
        # client's or the server's queues).
        racy = seen["CANCELLED"] + seen["DEADLINE_EXCEEDED"]
        self.assertGreaterEqual(server_counts["OK"], seen["OK"])
        self.assertLessEqual(server_counts["OK"], seen["OK"] + racy)
        total_seen = sum(seen.values())
        total_server = sum(server_counts.values())
        self.assertLessEqual(total_server, total_seen)
        self.assertGreaterEqual(total_server, total_seen - racy)
        unexplained = set(server_counts) - {"OK", "CANCELLED", "DEADLINE_EXCEEDED",
                                            "INVALID_ARGUMENT", "NOT_FOUND"}
        self.assertFalse(unexplained, server_counts)


if __name__ == "__main__":
    unittest.main(verbosity=2)
