"""attn_cli against real servers: the built-in demo model and an exported
d_model-256 model whose weights PyTorch knows."""
import os
import subprocess
import tempfile
import unittest

import numpy as np
import torch

import attnserve
import server_harness as h

CLI_TIMEOUT_S = 60


def run_cli(*args):
    return subprocess.run([h.CLI, *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S)


def torch_mha(module, q, k=None, v=None, attn_mask=None):
    k = q if k is None else k
    v = k if v is None else v
    t = [torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in (q, k, v)]
    mask = None if attn_mask is None else torch.from_numpy(attn_mask).double()
    module = module.double()
    try:
        with torch.no_grad():
            out, weights = module(*t, attn_mask=mask, need_weights=True,
                                  average_attn_weights=False)
    finally:
        module.float()
    return out.numpy(), weights.numpy()


class CliOnDemoServerTest(unittest.TestCase):
    """The built-in demo model: the CLI must agree with the Python client."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.server = h.ServerProcess()
        cls.target = cls.server.start()

    @classmethod
    def tearDownClass(cls):
        h.tear_down_class(cls)

    def cli(self, command, *args):
        return run_cli(command, f"--target={self.target}", *args)

    def test_health(self):
        r = self.cli("health")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "SERVING")

    def test_models_lists_demo(self):
        r = self.cli("models")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("demo\tversion=1\td_model=256\tnum_heads=4", r.stdout)
        r = self.cli("models", "--model=demo")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("demo\t"), r.stdout)

    def test_models_unknown_is_not_found(self):
        r = self.cli("models", "--model=nope")
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.startswith("attn_cli: NOT_FOUND: "), r.stderr)

    def test_attend_unknown_model_is_not_found(self):
        r = self.cli("attend", "--model=nope", "--random=1,2,256")
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)

    def test_attend_bad_width_is_invalid_argument(self):
        r = self.cli("attend", "--random=1,2,255")
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.startswith("attn_cli: INVALID_ARGUMENT: "), r.stderr)

    def test_usage_errors_exit_2(self):
        self.assertEqual(run_cli("frobnicate").returncode, 2)
        self.assertEqual(self.cli("attend").returncode, 2)  # no input
        self.assertEqual(self.cli("attend", "--random=2,8,256", "--bogus=1").returncode, 2)
        r = self.cli("attend", "--input=/nonexistent/x.npy")
        self.assertEqual(r.returncode, 2)
        self.assertIn("NOT_FOUND", r.stderr)

    def test_unreachable_server_is_unavailable(self):
        r = run_cli("health", "--target=127.0.0.1:1", "--deadline_ms=3000")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"^attn_cli: (UNAVAILABLE|DEADLINE_EXCEEDED): ")

    def test_attend_random_matches_python_client(self):
        out = os.path.join(self.tmp.name, "demo_out.npy")
        r = self.cli("attend", "--random=2,8,256", "--seed=3", f"--output={out}")
        self.assertEqual(r.returncode, 0, r.stderr)
        got = np.load(out)
        self.assertEqual(got.shape, (2, 8, 256))
        q = h.mt19937_uniform(3, 2 * 8 * 256).reshape(2, 8, 256)
        with attnserve.Client(self.target) as client:
            expected = client.attend(q, model="demo").output
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)

    def test_attend_summary(self):
        r = self.cli("attend", "--random=8,256", "--return_weights")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("output: shape=[8, 256] dtype=FLOAT32", r.stdout)
        self.assertIn("attention_weights: shape=[1, 4, 8, 8]", r.stdout)
        self.assertIn("timing: round_trip_ms=", r.stdout)


class CliOnExportedModelTest(unittest.TestCase):
    """An exported d_model 256 / 4 heads model: the CLI output against torch."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        torch.manual_seed(42)
        cls.mha = torch.nn.MultiheadAttention(256, 4, batch_first=True).eval()
        repo = os.path.join(cls.tmp.name, "repo")
        h.import_exporter().export_module(cls.mha, repo, "demo", version=1)
        cls.server = h.ServerProcess(repo)
        cls.target = cls.server.start()

    @classmethod
    def tearDownClass(cls):
        h.tear_down_class(cls)

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def cli(self, *args):
        return run_cli("attend", f"--target={self.target}", *args)

    def test_random_npy_output_vs_torch(self):
        r = self.cli("--random", "2,8,256", "--seed", "7", "--output", self.path("out.npy"))
        self.assertEqual(r.returncode, 0, r.stderr)
        q = h.mt19937_uniform(7, 2 * 8 * 256).reshape(2, 8, 256)
        expected, _ = torch_mha(self.mha, q)
        np.testing.assert_allclose(np.load(self.path("out.npy")), expected, atol=1e-4, rtol=0)

    def test_npy_cross_attention_mask_and_weights_vs_torch(self):
        rng = np.random.default_rng(5)
        q = h.random_array(rng, 2, 3, 256)
        k = h.random_array(rng, 2, 5, 256)
        v = h.random_array(rng, 2, 5, 256)
        mask = rng.normal(0, 1, (3, 5)).astype(np.float32)
        for name, a in [("q.npy", q), ("k.npy", k), ("v.npy", v), ("m.npy", mask)]:
            np.save(self.path(name), a)
        r = self.cli(f"--input={self.path('q.npy')}", f"--key={self.path('k.npy')}",
                     f"--value={self.path('v.npy')}", f"--attn_mask={self.path('m.npy')}",
                     f"--output={self.path('o.npy')}", f"--weights_output={self.path('w.npy')}")
        self.assertEqual(r.returncode, 0, r.stderr)
        expected, weights = torch_mha(self.mha, q, k, v, attn_mask=mask)
        np.testing.assert_allclose(np.load(self.path("o.npy")), expected, atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.load(self.path("w.npy")), weights, atol=1e-4, rtol=0)

    def test_json_input_and_output_causal_vs_torch(self):
        q = h.random_array(np.random.default_rng(6), 4, 256)  # rank 2
        with open(self.path("q.json"), "w") as f:
            f.write(str(q.tolist()))
        r = self.cli(f"--input={self.path('q.json')}", "--causal",
                     f"--output={self.path('o.json')}")
        self.assertEqual(r.returncode, 0, r.stderr)
        import json
        with open(self.path("o.json")) as f:
            got = np.array(json.load(f), dtype=np.float32)
        expected, _ = torch_mha(self.mha, q, attn_mask=h.causal_float_mask(4, 4))
        self.assertEqual(got.shape, (4, 256))
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)

    def test_key_lengths_vs_torch(self):
        q = h.mt19937_uniform(9, 2 * 6 * 256).reshape(2, 6, 256)
        r = self.cli("--random=2,6,256", "--seed=9", "--key_lengths=2,6",
                     f"--output={self.path('kl.npy')}")
        self.assertEqual(r.returncode, 0, r.stderr)
        padding = torch.from_numpy(np.arange(6)[None, :] >= np.array([2, 6])[:, None])
        t = torch.from_numpy(q)
        with torch.no_grad():
            expected, _ = self.mha(t, t, t, key_padding_mask=padding, need_weights=False)
        np.testing.assert_allclose(np.load(self.path("kl.npy")), expected.numpy(),
                                   atol=1e-4, rtol=0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
