"""Warm-up before ready, through the real attn_server at its default
--threads: with the default config.json "warmup" the first request (small,
with attention weights, the path that JIT-compiles oneDNN's softmax) costs
at most 3x the steady state, also after the server sat idle; with
"warmup": [] the same first request is far slower, which shows what the
warm-up buys. Answers match PyTorch either way.
"""
import os
import statistics
import tempfile
import time
import unittest

import numpy as np
import torch

import attnserve
import server_harness as h

D_MODEL = 64
HEADS = 4
STEADY_CALLS = 15
# The team the server may use: its default (the hardware threads), at least 2
# so that a 1-core machine tests the same thing.
TEAM = max(2, os.cpu_count() or 1)
IDLE_S = 1.0


class WarmupTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        torch.manual_seed(11)
        cls.mha = torch.nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True).eval()
        exporter = h.import_exporter()
        exporter.export_module(cls.mha, cls.tmp.name, "warm", version=1)
        exporter.export_module(cls.mha, cls.tmp.name, "cold", version=1,
                               config_extra={"warmup": []})
        cls.rng = np.random.default_rng(5)
        cls.x = h.random_array(cls.rng, 1, 16, D_MODEL)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def first_and_steady(self, model):
        # Default --threads, with a team of at least 2: a call this small
        # runs on the executor thread alone, so it never pays for waking a
        # team that slept while the server was idle.
        server = h.ServerProcess(self.tmp.name, ["--threads=%d" % TEAM])
        try:
            server.start()
            client = attnserve.Client(server.target)
            if model == "warm":
                self.assertIn("warmed up model 'warm' version 1 with 2 shape(s)",
                              server.stderr_text())
            self.assertNotIn("warmed up model 'cold'", server.stderr_text())

            def call():
                r = client.attend(self.x, model=model, return_attention_weights=True,
                                  timeout=60)
                with torch.no_grad():
                    t = torch.from_numpy(self.x)
                    out, w = self.mha(t, t, t, need_weights=True,
                                      average_attn_weights=False)
                np.testing.assert_allclose(r.output, out.numpy(), rtol=1e-4, atol=1e-4)
                np.testing.assert_allclose(r.attention_weights, w.numpy(),
                                           rtol=1e-4, atol=1e-4)
                return r.timing.compute_us
            first = call()
            steady = statistics.median(call() for _ in range(STEADY_CALLS))
            # Idle long past OpenMP's spin-wait, so that a team would sleep.
            time.sleep(IDLE_S)
            after_idle = call()
            client.close()
        except BaseException:
            server._kill()
            raise
        server.stop()
        print(f"{model}: first {first} us, steady median {steady} us, "
              f"ratio {first / max(steady, 1):.1f}, after {IDLE_S} s idle "
              f"{after_idle} us")
        return first, max(steady, 1), after_idle

    def test_first_request_costs_what_later_ones_do(self):
        first, steady, after_idle = self.first_and_steady("warm")
        self.assertLessEqual(first, 3 * steady)
        self.assertLessEqual(after_idle, 3 * steady)

    def test_without_warmup_the_first_request_pays_for_primitives(self):
        first, steady, _ = self.first_and_steady("cold")
        # Here (AVX2, small shapes) primitive creation costs ~3-4x a call;
        # on AVX-512 machines the softmax JIT alone took 46 ms.
        self.assertGreater(first, 1.5 * steady)


if __name__ == "__main__":
    unittest.main(verbosity=2)
