"""--max_inflight_bytes through the real attn_server: a burst of concurrent
large requests is admitted up to the budget and the rest get
RESOURCE_EXHAUSTED at once (with a message naming the flag), answers of the
admitted ones match PyTorch, peak RSS stays under budget + weights + 512 MiB,
every reservation is returned (a request needing nearly the whole budget
succeeds after the burst), and the server goes on serving.
"""
import concurrent.futures
import os
import tempfile
import threading
import unittest

import grpc
import numpy as np
import torch

import attnserve
import server_harness as h

MIB = 1 << 20
D_MODEL = 64
HEADS = 4
# Requests of [B, 16, 64] fp32: large in bytes (B * 4 KiB), cheap to compute.
# The server holds about 4x the message (message, decoded input, output and
# its encoding).
SEQ = 16
BURST_BATCH = 1024          # 4 MiB message, ~16 MiB held
BURST_CALLS = 24
BIG_BATCH = 2300            # 9 MiB message, ~36 MiB held: fits only alone
HUGE_BATCH = 4000           # ~62 MiB held: more than the whole budget
BUDGET = 40 * MIB           # two burst requests at once
CALL_TIMEOUT_S = 120


class MemoryBudgetTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        torch.manual_seed(7)
        cls.mha = torch.nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True).eval()
        h.import_exporter().export_module(
            cls.mha, cls.tmp.name, "wide", version=1,
            config_extra={"max_sequence_length": 64})
        cls.server = h.ServerProcess(
            cls.tmp.name, extra_args=["--max_inflight_bytes", str(BUDGET),
                                      # the test sends batches far longer than one sequence
                                      "--max_receive_message_bytes", str(256 * MIB)])
        cls.target = cls.server.start()
        cls.client = attnserve.Client(cls.target)
        cls.rng = np.random.default_rng(3)

    @classmethod
    def tearDownClass(cls):
        h.tear_down_class(cls)

    def tearDown(self):
        self.assertTrue(self.server.alive(),
                        f"server died; stderr:\n{self.server.stderr_text()}")

    def reference(self, x):
        with torch.no_grad():
            t = torch.from_numpy(x)
            return self.mha(t, t, t, need_weights=False)[0].numpy()

    def test_receive_limit_derives_from_the_models(self):
        # "wide": max_sequence_length 64 x d_model 64 needs less than gRPC's
        # 4 MiB default, so the derived limit is 4 MiB.
        with h.running_server(self.tmp.name) as target, attnserve.Client(target) as client:
            fits = h.random_array(self.rng, 900, SEQ, D_MODEL)       # 3.5 MiB
            np.testing.assert_allclose(client.attend(fits, model="wide",
                                                     timeout=CALL_TIMEOUT_S).output,
                                       self.reference(fits), atol=1e-4, rtol=0)
            too_big = h.random_array(self.rng, 1100, SEQ, D_MODEL)   # 4.3 MiB
            with self.assertRaises(grpc.RpcError) as ctx:
                client.attend(too_big, model="wide", timeout=CALL_TIMEOUT_S)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        # running_server has stopped it; its log named the limit and its source.

    def test_startup_log_names_the_receive_limit(self):
        self.assertIn("requests up to 256 MiB accepted (--max_receive_message_bytes",
                      self.server.stderr_text())

    def test_startup_log_names_the_limit(self):
        self.assertIn(f"limited to {BUDGET // MIB} MiB (--max_inflight_bytes)",
                      self.server.stderr_text())

    def test_request_larger_than_the_budget_is_refused_whole(self):
        x = h.random_array(self.rng, HUGE_BATCH, SEQ, D_MODEL)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.client.attend(x, model="wide", timeout=CALL_TIMEOUT_S)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("more than the whole in-flight budget", ctx.exception.details())
        self.assertIn("--max_inflight_bytes", ctx.exception.details())

    def test_burst_is_bounded_and_every_reservation_returns(self):
        x = h.random_array(self.rng, BURST_BATCH, SEQ, D_MODEL)
        expected = self.reference(x)
        codes, details = [], []
        lock = threading.Lock()
        start = threading.Barrier(BURST_CALLS)

        def call(_):
            start.wait()
            try:
                out = self.client.attend(x, model="wide", timeout=CALL_TIMEOUT_S).output
                np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
                with lock:
                    details.append(e.details())
            with lock:
                codes.append(code)

        with concurrent.futures.ThreadPoolExecutor(BURST_CALLS) as pool:
            list(pool.map(call, range(BURST_CALLS)))
        ok = codes.count(grpc.StatusCode.OK)
        exhausted = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        print(f"burst of {BURST_CALLS}: {ok} OK, {exhausted} RESOURCE_EXHAUSTED")
        self.assertEqual(ok + exhausted, BURST_CALLS, codes)
        self.assertGreaterEqual(ok, 1)
        self.assertGreaterEqual(exhausted, 1, "the burst never reached the budget")
        for d in details:
            self.assertIn("server memory budget is full", d)
            self.assertIn(f"--max_inflight_bytes={BUDGET}", d)

        # Every reservation came back: one request needing most of the
        # budget fits again, repeatedly.
        big = h.random_array(self.rng, BIG_BATCH, SEQ, D_MODEL)
        for _ in range(3):
            out = self.client.attend(big, model="wide", timeout=CALL_TIMEOUT_S).output
            np.testing.assert_allclose(out, self.reference(big), rtol=1e-4, atol=1e-4)

        weights_bytes = 4 * (4 * D_MODEL * D_MODEL + 4 * D_MODEL)
        hwm = h.proc_status_bytes(self.server.proc.pid, "VmHWM")
        bound = BUDGET + weights_bytes + 512 * MIB
        print(f"peak RSS {hwm / MIB:.0f} MiB, bound {bound / MIB:.0f} MiB")
        self.assertLess(hwm, bound)

    def test_stream_requests_share_the_budget(self):
        x = h.random_array(self.rng, BIG_BATCH, SEQ, D_MODEL)
        request = attnserve.Client.build_request(x, model="wide")
        results = list(self.client.attend_stream([request] * 4, timeout=CALL_TIMEOUT_S,
                                                 raise_errors=False))
        self.assertEqual(len(results), 4)
        # The stream reads ahead, so later requests may find the budget full
        # (answered in-stream with RESOURCE_EXHAUSTED); the first always fits.
        self.assertNotIsInstance(results[0], grpc.RpcError)
        for r in results:
            if isinstance(r, grpc.RpcError):
                self.assertEqual(r.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, r.details())
            else:
                np.testing.assert_allclose(r.output, self.reference(x), rtol=1e-4, atol=1e-4)


if __name__ == "__main__":
    unittest.main(verbosity=2)
