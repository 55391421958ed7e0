"""/metrics of a real attn_server after real traffic: `promtool check metrics`
finds no problem, every counter moved by exactly what the clients saw, and
the label sets stay bounded."""
import math
import os
import socket
import tempfile
import time
import unittest

import grpc
import numpy as np

import attnserve
import metrics_harness as mh
import server_harness as h

CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
         "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
         "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
         "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
MODELS = ("m", "t", "q")


class MetricsFormatTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.capacity = mh.write_repository(cls.tmp.name)
        cls.launched_before = time.time()
        cls.server = mh.MetricsServer(cls.tmp.name)
        cls.launched_after = time.time()
        cls.client = attnserve.Client(cls.server.target, retry=False)  # counts exact codes

    @classmethod
    def tearDownClass(cls):
        h.tear_down_class(cls)

    def scrape(self):
        text, content_type = self.server.scrape()
        return mh.parse(text)[0]

    def promtool_check(self, text):
        result = mh.run([mh.PROMTOOL, "check", "metrics"], input=text)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual((result.stdout + result.stderr).strip(), "",
                         "promtool reported lint problems")

    def test_traffic_moves_counters_exactly(self):
        before = self.scrape()
        tally = mh.Tally(MODELS)
        mh.standard_traffic(self.client, tally, np.random.default_rng(0))
        text, content_type = self.server.scrape()
        self.assertTrue(content_type.startswith("text/plain"), content_type)
        after, types = mh.parse(text)
        self.promtool_check(text)

        # Requests: every (model, code) series moved by what the client saw,
        # including every series that must not have moved.
        for model in MODELS + ("unknown",):
            for code in CODES:
                delta = (mh.value(after, "attn_requests_total", model=model, code=code)
                         - mh.value(before, "attn_requests_total", model=model, code=code))
                self.assertEqual(delta, tally.codes[(model, code)],
                                 f"attn_requests_total{{model={model},code={code}}}")
        # Bounded labels: only the loaded models and "unknown".
        seen = {dict(k)["model"] for k in mh.select(after, "attn_requests_total")}
        self.assertEqual(seen, set(MODELS) | {"unknown"})

        def delta(name, **labels):
            return (mh.value(after, name, **labels)
                    - mh.value(before, name, **labels))

        for model in MODELS:
            # Tokens and kernel calls. Concurrent requests may be merged, so
            # the number of kernel calls is between 1 and the requests
            # computed, and the batch sizes add up to the requests computed.
            self.assertEqual(delta("attn_tokens_total", model=model), tally.tokens[model])
            calls = delta("attn_batch_requests_count", model=model)
            self.assertGreaterEqual(calls, min(1, tally.computed[model]))
            self.assertLessEqual(calls, tally.computed[model])
            self.assertEqual(delta("attn_batch_requests_sum", model=model),
                             tally.computed[model])
            self.assertEqual(delta("attn_batch_tokens_count", model=model), calls)
            self.assertEqual(delta("attn_batch_tokens_sum", model=model),
                             tally.tokens[model])
            self.assertEqual(delta("attn_compute_duration_seconds_count", model=model),
                             calls)
            # Queue and request latency: every request that was queued.
            self.assertEqual(delta("attn_queue_duration_seconds_count", model=model),
                             tally.executed[model])
            self.assertEqual(delta("attn_request_duration_seconds_count", model=model),
                             tally.executed[model])
            self.assertEqual(mh.value(after, "attn_queue_depth", model=model, version="1"), 0)
            self.assertEqual(mh.value(after, "attn_queue_capacity", model=model,
                                      version="1"), self.capacity[model])
            self.assertEqual(mh.value(after, "attn_model_ready", model=model, version="1"), 1)
            self.assertEqual(mh.value(after, "attn_model_load_failures_total", model=model),
                             0)
            # Histogram buckets are cumulative and end at +Inf == _count.
            buckets = sorted(
                ((float(dict(k)["le"]), v) for k, v in
                 mh.select(after, "attn_request_duration_seconds_bucket",
                           model=model).items()))
            self.assertAlmostEqual(buckets[0][0], 50e-6)
            self.assertEqual(buckets[-2][0], 10.0)
            self.assertTrue(math.isinf(buckets[-1][0]))
            self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets))
            self.assertEqual(buckets[-1][1], mh.value(
                after, "attn_request_duration_seconds_count", model=model))
        self.assertGreater(delta("attn_request_duration_seconds_sum", model="m"), 0)
        self.assertEqual(mh.value(after, "attn_inflight_requests"), 0)

        # Types.
        expected_types = {
            "attn_requests_total": "counter", "attn_tokens_total": "counter",
            "attn_model_load_failures_total": "counter",
            "attn_request_duration_seconds": "histogram",
            "attn_queue_duration_seconds": "histogram",
            "attn_compute_duration_seconds": "histogram",
            "attn_batch_requests": "histogram", "attn_batch_tokens": "histogram",
            "attn_inflight_requests": "gauge", "attn_queue_depth": "gauge",
            "attn_queue_capacity": "gauge", "attn_model_ready": "gauge",
            "attn_build_info": "gauge", "process_cpu_seconds_total": "counter",
            "process_resident_memory_bytes": "gauge", "process_open_fds": "gauge",
            "process_max_fds": "gauge", "process_start_time_seconds": "gauge",
            "process_virtual_memory_bytes": "gauge",
        }
        for name, kind in expected_types.items():
            self.assertEqual(types.get(name), kind, name)

    def test_build_info_and_process_metrics(self):
        samples = self.scrape()
        info = mh.select(samples, "attn_build_info")
        self.assertEqual(len(info), 1)
        labels, v = next(iter(info.items()))
        self.assertEqual(v, 1)
        labels = dict(labels)
        self.assertRegex(labels["version"], r"^\d+\.\d+\.\d+$")
        self.assertRegex(labels["grpc_version"], r"^\d+\.\d+")
        self.assertRegex(labels["onednn_version"], r"^\d+\.\d+\.\d+$")

        # Start time: between just before the launch and just after it
        # (clock ticks are 10 ms; one second of slack).
        start = mh.value(samples, "process_start_time_seconds")
        self.assertGreaterEqual(start, self.launched_before - 1)
        self.assertLessEqual(start, self.launched_after + 1)
        self.assertGreater(mh.value(samples, "process_resident_memory_bytes"), 1 << 20)
        self.assertGreater(mh.value(samples, "process_open_fds"), 3)
        self.assertGreaterEqual(mh.value(samples, "process_max_fds"),
                                mh.value(samples, "process_open_fds"))
        # CPU time never goes backwards and grows with work.
        # (Bounded: 200 requests of 4096 tokens are far more than one tick.)
        cpu0 = mh.value(samples, "process_cpu_seconds_total")
        rng = np.random.default_rng(1)
        query = mh.x(rng, 64, mh.MAX_SEQ, mh.D)
        for _ in range(200):
            self.client.attend(query, model="m", timeout=30)
            cpu1 = mh.value(self.scrape(), "process_cpu_seconds_total")
            if cpu1 > cpu0:
                break
        self.assertGreater(cpu1, cpu0)
        # Open fds follow the process: a new gRPC connection adds a socket.
        fds0 = mh.value(self.scrape(), "process_open_fds")
        extra = attnserve.Client(self.server.target, retry=False,  # its own connection
                                 options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            extra.wait_ready(timeout=10)
            fds1 = mh.value(self.scrape(), "process_open_fds")
        finally:
            extra.close()
        self.assertGreater(fds1, fds0)


class MetricsFlagTest(unittest.TestCase):

    def test_metrics_port_in_use_is_a_clear_error(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            server = h.ServerProcess(extra_args=[f"--metrics_port={port}"])
            with self.assertRaises(RuntimeError) as ctx:
                server.start()
            close_files(server)
        self.assertIn(f"127.0.0.1:{port}", str(ctx.exception))
        self.assertIn("metrics", str(ctx.exception))

    def test_metrics_port_out_of_range(self):
        server = h.ServerProcess(extra_args=["--metrics_port=70000"])
        with self.assertRaises(RuntimeError) as ctx:
            server.start()
        close_files(server)
        self.assertIn("--metrics_port is 70000", str(ctx.exception))

    def test_port_zero_disables_metrics(self):
        # The harness passes --metrics_port=0: the server listens on its
        # gRPC port only, and announces no metrics endpoint.
        server = h.ServerProcess()
        target = server.start()
        try:
            self.assertEqual(listening_ports(server.proc.pid),
                             {int(target.rsplit(":", 1)[1])})
            self.assertNotIn("Prometheus metrics on", server.stderr_text())
        finally:
            server.stop()

    def test_metrics_port_is_a_second_listener(self):
        with tempfile.TemporaryDirectory() as tmp:
            mh.write_repository(tmp)
            server = mh.MetricsServer(tmp)
            try:
                self.assertEqual(listening_ports(server.server.proc.pid),
                                 {int(server.target.rsplit(":", 1)[1]),
                                  server.metrics_port})
                self.assertIn(f"Prometheus metrics on http://127.0.0.1:"
                              f"{server.metrics_port}/metrics",
                              server.server.stderr_text())
            finally:
                server.stop()


def close_files(server):
    """Closes the pipes of a ServerProcess whose start() failed."""
    server.proc.stdout.close()
    server._stderr.close()


def listening_ports(pid):
    """TCP ports process `pid` listens on (its socket inodes in /proc/net)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports

if __name__ == "__main__":
    unittest.main()
