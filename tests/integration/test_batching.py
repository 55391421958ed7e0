"""Dynamic batching end to end: 64 concurrent requests of mixed shapes
against a real attn_server with batching on. Every answer must equal the same
request served alone (within 1e-5), some answers must report
timing.batch_requests > 1, and the server's attn_batch_requests histogram
must have moved accordingly.

The "alone" answers come from the same server, one request at a time: an
idle executor dispatches at once, so each of them is a batch of one (checked).
"""
import os
import re
import socket
import tempfile
import unittest
import urllib.request

import numpy as np
import torch

import attnserve
from attn.v1 import attention_pb2_grpc
import grpc
import server_harness as h

D = 64
HEADS = 4
REQUESTS = 64
TOL = 1e-5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def histogram_totals(text, name, model):
    """(count, sum) of histogram `name` for `model` in Prometheus text."""
    totals = {}
    for suffix in ("count", "sum"):
        pattern = re.compile(rf'^{name}_{suffix}\{{([^}}]*)\}} (\S+)$', re.M)
        totals[suffix] = sum(float(value) for labels, value in pattern.findall(text)
                             if f'model="{model}"' in labels)
    return totals["count"], totals["sum"]


class BatchingTest(unittest.TestCase):

    def test_concurrent_requests_are_batched_and_equal_served_alone(self):
        torch.manual_seed(7)
        module = torch.nn.MultiheadAttention(D, HEADS, batch_first=True).eval()
        rng = np.random.default_rng(11)
        with tempfile.TemporaryDirectory() as repo:
            h.import_exporter().export_module(
                module, repo, "batched",
                config_extra={"batching": {"max_batch_requests": 64,
                                           "max_batch_tokens": 4096,
                                           "max_queue_delay_us": 20000}})
            metrics_port = free_port()
            with h.running_server(repo, [f"--metrics_port={metrics_port}",
                                         "--threads=1"]) as target:
                client = attnserve.Client(target)
                client.wait_ready(timeout=30)
                # Request 0 is long (2048 tokens: milliseconds of compute),
                # so the executor is surely busy while the others arrive,
                # however slowly this process sends them.
                requests = [client.build_request(h.random_array(rng, 1, 2048, D),
                                                 model="batched")]
                for i in range(1, REQUESTS):
                    batch = 1 + i % 2
                    seq = 1 + (i * 7) % 16
                    requests.append(client.build_request(
                        h.random_array(rng, batch, seq, D), model="batched",
                        causal=bool(i % 3 == 0),
                        return_attention_weights=bool(i % 4 == 0)))
                stub = attention_pb2_grpc.AttentionServiceStub(
                    grpc.insecure_channel(target))

                alone = []
                for request in requests:
                    response = stub.Attend(request, timeout=30)
                    self.assertEqual(response.timing.batch_requests, 1)
                    alone.append(response)

                url = f"http://127.0.0.1:{metrics_port}/metrics"
                with urllib.request.urlopen(url, timeout=10) as r:
                    count0, sum0 = histogram_totals(
                        r.read().decode(), "attn_batch_requests", "batched")

                # All 64 in flight at once: while the executor computes the
                # first, the others queue and are merged.
                futures = [stub.Attend.future(request, timeout=60) for request in requests]
                together = [f.result() for f in futures]

                with urllib.request.urlopen(url, timeout=10) as r:
                    count1, sum1 = histogram_totals(
                        r.read().decode(), "attn_batch_requests", "batched")
                client.close()

        batch_sizes = [r.timing.batch_requests for r in together]
        self.assertGreater(max(batch_sizes), 1, batch_sizes)
        self.assertTrue(all(1 <= b <= 64 for b in batch_sizes), batch_sizes)
        for i, (a, t) in enumerate(zip(alone, together)):
            out_a = attnserve.tensors.decode_tensor(a.output)
            out_t = attnserve.tensors.decode_tensor(t.output)
            self.assertEqual(out_a.shape, out_t.shape)
            np.testing.assert_allclose(out_t, out_a, rtol=0, atol=TOL,
                                       err_msg=f"request {i} output")
            self.assertEqual(a.HasField("attention_weights"),
                             t.HasField("attention_weights"))
            if a.HasField("attention_weights"):
                np.testing.assert_allclose(
                    attnserve.tensors.decode_tensor(t.attention_weights),
                    attnserve.tensors.decode_tensor(a.attention_weights),
                    rtol=0, atol=TOL, err_msg=f"request {i} weights")
        # The histogram saw every concurrent request, in fewer kernel calls.
        self.assertEqual(sum1 - sum0, REQUESTS)
        self.assertLess(count1 - count0, REQUESTS)
        self.assertGreaterEqual(count1 - count0, 1)


if __name__ == "__main__":
    unittest.main()
