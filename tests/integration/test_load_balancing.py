"""Client-side load balancing over 3 real servers on loopback: one Python
client with an "ipv4:A,B,C" target (round_robin + UNAVAILABLE retries) drives
closed-loop load; mid-run one server gets SIGTERM and another SIGKILL. Every
server must have served requests (from its own /metrics), and the client must
see zero failed requests. attn_cli and attn_loadgen (the C++ client) are
checked on the same kind of target.
"""
import os
import re
import signal
import socket
import subprocess
import threading
import time
import unittest
import urllib.request

import numpy as np

import attnserve
import server_harness as h

LOADGEN = os.path.join(os.path.dirname(h.CLI), "loadgen", "attn_loadgen")
_REQUESTS = re.compile(r'^attn_requests_total\{([^}]*)\} (\S+)$', re.M)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests_served(port):
    """Sum of attn_requests_total over its series, from the server's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(v) for labels, v in _REQUESTS.findall(text) if 'method="Attend"' in
               labels or "method" not in labels)


class LoadBalancingTest(unittest.TestCase):
    def setUp(self):
        # --metrics_port=0 turns metrics off: free ports (the last flag wins).
        self.ports = [free_port() for _ in range(3)]
        self.servers = [h.ServerProcess(extra_args=[f"--metrics_port={p}"])
                        for p in self.ports]
        # Registered before any start, so a failing setUp stops them too.
        self.addCleanup(self._kill_all)
        for s in self.servers:
            s.start()
        self.target = "ipv4:" + ",".join(s.target for s in self.servers)

    def _kill_all(self):
        for s in self.servers:
            s._kill()

    def test_round_robin_survives_sigterm_and_sigkill(self):
        x = np.random.default_rng(0).standard_normal((1, 16, 256), dtype=np.float32)
        with attnserve.Client(self.target) as client:
            expected = client.attend(x).output
            ok, failures, stop = [0], [], threading.Event()
            lock = threading.Lock()

            def worker():
                while not stop.is_set():
                    try:
                        out = client.attend(x, timeout=30).output
                        np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
                        with lock:
                            ok[0] += 1
                    except Exception as e:  # every failure is counted and asserted
                        with lock:
                            failures.append(repr(e))

            threads = [threading.Thread(target=worker) for _ in range(4)]
            for t in threads:
                t.start()
            counts = [0.0, 0.0, 0.0]
            # Client OKs at each replica's last scrape: a replica that is then
            # stopped may answer more calls, which no scrape can see.
            ok_at_scrape = [0, 0, 0]

            def scrape(alive):
                for i in alive:
                    with lock:
                        ok_at_scrape[i] = ok[0]
                    counts[i] = requests_served(self.ports[i])

            # Phase 1: all three serve.
            for _ in range(100):
                time.sleep(0.1)
                scrape([0, 1, 2])
                if min(counts) >= 20:
                    break
            # Phase 2: SIGTERM server 0 (graceful), load goes on.
            self.servers[0].proc.send_signal(signal.SIGTERM)
            self.assertEqual(self.servers[0].proc.wait(timeout=h.SHUTDOWN_TIMEOUT_S), 0,
                             self.servers[0].stderr_text())
            with lock:
                unseen = ok[0] - ok_at_scrape[0]
            before = ok[0]
            for _ in range(100):
                time.sleep(0.1)
                if ok[0] - before >= 50:
                    break
            scrape([1, 2])
            # Phase 3: SIGKILL server 1 (no drain at all), load goes on.
            self.servers[1].proc.send_signal(signal.SIGKILL)
            self.servers[1].proc.wait(timeout=h.SHUTDOWN_TIMEOUT_S)
            with lock:
                unseen += ok[0] - ok_at_scrape[1]
            before = ok[0]
            for _ in range(100):
                time.sleep(0.1)
                if ok[0] - before >= 50:
                    break
            stop.set()
            for t in threads:
                t.join(timeout=60)
            scrape([2])
        print(f"load_balancing: client ok={ok[0]} failed={len(failures)}; "
              f"per-replica Attend counts (server /metrics) = "
              f"{[int(c) for c in counts]}")
        self.assertEqual(failures, [], f"{len(failures)} failed requests")
        for i, c in enumerate(counts):
            self.assertGreater(c, 0, f"replica {i} received no traffic: {counts}")
        self.assertGreater(ok[0] - before, 0, "no requests after the SIGKILL")
        # Everything the client got is accounted for by the replicas, except
        # what the two stopped replicas answered after their last scrape
        # (bounded by the client's OKs in that window).
        self.assertGreaterEqual(sum(counts) + unseen, ok[0],
                                f"counts={counts} ok={ok[0]} unseen={unseen}")


    def test_cli_and_loadgen_on_multi_address_target(self):
        r = subprocess.run([h.CLI, "health", f"--target={self.target}"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "SERVING"), r.stderr)
        r = subprocess.run([LOADGEN, f"--target={self.target}", "--concurrency=3",
                            "--duration=2s", "--seq=16"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        counts = [requests_served(p) for p in self.ports]
        print(f"load_balancing: attn_loadgen per-replica counts = {[int(c) for c in counts]}")
        for i, c in enumerate(counts):
            self.assertGreater(c, 0, f"replica {i} got no attn_loadgen traffic: {counts}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
