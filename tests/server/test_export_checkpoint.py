"""Round trips of tools/export_checkpoint.py, in Python and through the C++
loader (the checkpoint_dump helper, whose path ctest passes in
ATTN_CHECKPOINT_DUMP).

Run: ctest -R export_checkpoint_py, or
  ATTN_CHECKPOINT_DUMP=build/tests/server/checkpoint_dump \
      /usr/bin/python3 -m unittest test_export_checkpoint   (in tests/server)
"""

import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXPORTER = os.path.join(ROOT, "tools", "export_checkpoint.py")
sys.path.insert(0, os.path.join(ROOT, "tools"))

import export_checkpoint as ec  # noqa: E402


def as_float32(t):
    return t.detach().to(torch.float32).numpy()


class PythonRoundTrip(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def test_write_and_load_every_dtype(self):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(3, 5, generator=g)
        tensors = {
            "f32": x,
            "bf16": x.to(torch.bfloat16),
            "f16": x.to(torch.float16),
            "i64": torch.arange(7),
            "mask": torch.tensor([True, False, True]),
        }
        path = os.path.join(self.tmp, "t.safetensors")
        ec.write_safetensors(path, tensors, metadata={"k": "v"})
        with open(path, "rb") as f:
            blob = f.read()
        (n,) = struct.unpack("<Q", blob[:8])
        self.assertEqual((8 + n) % 8, 0, "data region must be 8-aligned")
        header = json.loads(blob[8:8 + n])
        self.assertEqual(header["__metadata__"], {"k": "v"})
        self.assertEqual(header["bf16"]["dtype"], "BF16")
        self.assertEqual(header["f16"]["shape"], [3, 5])
        loaded = ec.load_safetensors(path)
        np.testing.assert_array_equal(loaded["f32"], x.numpy())
        np.testing.assert_array_equal(loaded["bf16"],
                                      as_float32(tensors["bf16"]))
        self.assertEqual(loaded["f16"].dtype, np.float16)
        np.testing.assert_array_equal(loaded["f16"], tensors["f16"].numpy())
        np.testing.assert_array_equal(loaded["i64"], np.arange(7))
        np.testing.assert_array_equal(loaded["mask"], [True, False, True])

    def test_export_module_reloads_into_identical_module(self):
        torch.manual_seed(3)
        m = torch.nn.MultiheadAttention(32, 4, batch_first=True)
        with torch.no_grad():
            m.in_proj_bias.uniform_(-0.1, 0.1)
        config_path, ckpt = ec.export_module(m, self.tmp, "mha", version=2,
                                             causal=True)
        self.assertEqual(ckpt, os.path.join(self.tmp, "mha", "2",
                                            "model.safetensors"))
        with open(config_path) as f:
            self.assertEqual(json.load(f), {"num_heads": 4, "causal": True})
        loaded = ec.load_safetensors(ckpt)
        self.assertEqual(set(loaded), set(m.state_dict()))
        m2 = torch.nn.MultiheadAttention(32, 4, batch_first=True)
        m2.load_state_dict({k: torch.from_numpy(v) for k, v in loaded.items()})
        x = torch.randn(2, 6, 32)
        with torch.no_grad():
            torch.testing.assert_close(m2(x, x, x)[0], m(x, x, x)[0],
                                       rtol=0, atol=0)

    def test_cli_writes_each_naming(self):
        cases = [
            (["--naming", "llama", "--kv-heads", "2", "--dtype", "bfloat16",
              "--prefix", "model.layers.0.self_attn."],
             {"model.layers.0.self_attn.k_proj.weight": [16, 32],
              "model.layers.0.self_attn.o_proj.bias": [32]}),
            (["--naming", "bert", "--dtype", "float16", "--no-bias"],
             {"self.query.weight": [32, 32], "output.dense.weight": [32, 32]}),
            (["--naming", "torch"],
             {"in_proj_weight": [96, 32], "in_proj_bias": [96]}),
        ]
        for i, (args, shapes) in enumerate(cases):
            with self.subTest(args=args):
                out = subprocess.run(
                    [sys.executable, EXPORTER, "--out", self.tmp, "--name",
                     f"m{i}", "--d-model", "32", "--heads", "4", "--seed",
                     "5"] + args, check=True, capture_output=True, text=True)
                ckpt = os.path.join(self.tmp, f"m{i}", "1",
                                    "model.safetensors")
                self.assertIn(ckpt, out.stdout)
                loaded = ec.load_safetensors(ckpt)
                for name, shape in shapes.items():
                    self.assertEqual(list(loaded[name].shape), shape, name)
                if "--no-bias" in args:
                    self.assertFalse(any(k.endswith("bias") for k in loaded))

    def test_cli_is_deterministic_and_rejects_bad_heads(self):
        for d in ("a", "b"):
            subprocess.run([sys.executable, EXPORTER, "--out",
                            os.path.join(self.tmp, d), "--name", "m",
                            "--d-model", "16", "--heads", "2", "--seed", "9"],
                           check=True, capture_output=True)
        a, b = (ec.load_safetensors(
            os.path.join(self.tmp, d, "m/1/model.safetensors"))
            for d in ("a", "b"))
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
        bad = subprocess.run([sys.executable, EXPORTER, "--out", self.tmp,
                              "--name", "x", "--d-model", "10", "--heads",
                              "4"], capture_output=True, text=True)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("--heads 4 must divide --d-model 10", bad.stderr)

    def test_cli_exports_a_saved_state_dict(self):
        torch.manual_seed(3)
        m = torch.nn.MultiheadAttention(32, 4, batch_first=True)
        with torch.no_grad():
            m.in_proj_bias.uniform_(-0.1, 0.1)

        class Outer(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.attn = m

        saved = os.path.join(self.tmp, "outer.pt")
        torch.save(Outer().state_dict(), saved)
        subprocess.run([sys.executable, EXPORTER, "--out", self.tmp,
                        "--name", "trained", "--heads", "4", "--naming",
                        "llama", "--state-dict", saved,
                        "--state-dict-prefix", "attn."],
                       check=True, capture_output=True)
        got = ec.attention_weights(ec.load_safetensors(
            os.path.join(self.tmp, "trained/1/model.safetensors")))
        want, _ = ec._weights_of(m, None)
        for k in ("wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo"):
            np.testing.assert_array_equal(got[k], want[k].numpy(), err_msg=k)
        bad = subprocess.run([sys.executable, EXPORTER, "--out", self.tmp,
                              "--name", "x", "--heads", "4", "--state-dict",
                              saved], capture_output=True, text=True)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("no attention layer under prefix", bad.stderr)


def _dump_binary():
    path = os.environ.get("ATTN_CHECKPOINT_DUMP")
    if not path or not os.access(path, os.X_OK):
        raise AssertionError(
            "set ATTN_CHECKPOINT_DUMP to the checkpoint_dump binary (ctest "
            "does this); got %r" % path)
    return path


class CppRoundTrip(unittest.TestCase):
    """The C++ loader reads what Python wrote, and the reverse."""

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = self._tmp.name
        self.dump = _dump_binary()

    def tearDown(self):
        self._tmp.cleanup()

    def cpp_read(self, name):
        out = subprocess.run(
            [self.dump, "read",
             os.path.join(self.tmp, name, "1", "model.safetensors"),
             os.path.join(self.tmp, name, "config.json")],
            capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout)

    def test_cpp_reads_every_naming_and_dtype(self):
        cases = [
            ("torch", "float32", "", None, "torch-packed"),
            ("torch", "float16", "encoder.layer.0.attention.", None,
             "torch-packed"),
            ("llama", "bfloat16", "model.layers.3.self_attn.", 2, "llama"),
            ("llama", "float32", "", 1, "llama"),
            ("bert", "float16", "bert.encoder.layer.0.attention.", None,
             "bert"),
        ]
        for i, (naming, dtype, prefix, kv, cpp_naming) in enumerate(cases):
            with self.subTest(naming=naming, dtype=dtype, kv=kv):
                module = ec.random_module(32, 4, kv, bias=True, seed=i)
                ec.export_module(module, self.tmp, f"m{i}", naming=naming,
                                 dtype=dtype, prefix=prefix, num_heads=4)
                got = self.cpp_read(f"m{i}")
                self.assertEqual(got["naming"], cpp_naming)
                self.assertEqual(got["prefix"], prefix)
                self.assertEqual(got["config"]["d_model"], 32)
                self.assertEqual(got["config"]["num_kv_heads"], kv or 4)
                # Expected: the module's weights rounded by torch to the
                # stored dtype, then widened to float32 by torch.
                torch_dtype = {"float32": torch.float32,
                               "bfloat16": torch.bfloat16,
                               "float16": torch.float16}[dtype]
                want, _ = ec._weights_of(module, 4)
                for key, tensor in want.items():
                    expected = as_float32(tensor.to(torch_dtype)).reshape(-1)
                    actual = np.asarray(got["weights"][key], dtype=np.float32)
                    np.testing.assert_array_equal(actual, expected, key)
                self.assertEqual(set(want), {k for k, v in
                                             got["weights"].items() if v})

    def test_cli_writes_a_llama_layer_with_rope_and_window(self):
        subprocess.run(
            [sys.executable, EXPORTER, "--out", self.tmp, "--name", "llama",
             "--d-model", "64", "--heads", "8", "--kv-heads", "2",
             "--no-bias", "--naming", "llama", "--prefix",
             "model.layers.0.self_attn.", "--causal", "--rope-theta",
             "500000", "--rope-style", "interleaved", "--rope-dims", "4",
             "--sliding-window", "128"], check=True, capture_output=True)
        with open(os.path.join(self.tmp, "llama", "config.json")) as f:
            config = json.load(f)
        self.assertEqual(config["rope_theta"], 500000.0)
        self.assertEqual(config["rope_style"], "interleaved")
        self.assertEqual(config["rope_dims"], 4)
        self.assertEqual(config["sliding_window"], 128)
        self.assertEqual(config["num_kv_heads"], 2)
        # The C++ loader reads the same settings.
        got = self.cpp_read("llama")
        self.assertEqual(got["naming"], "llama")
        self.assertEqual(got["config"]["num_kv_heads"], 2)
        self.assertEqual(got["config"]["rope_theta"], 500000.0)
        self.assertEqual(got["config"]["rope_style"], "interleaved")
        self.assertEqual(got["config"]["rope_dims"], 4)
        self.assertEqual(got["config"]["sliding_window"], 128)
        # Bad settings fail before anything is written.
        for args, words in ((["--rope-theta", "1e4", "--rope-dims", "3"], "rope_dims"),
                            (["--sliding-window", "8"], "--causal"),
                            (["--rope-dims", "4"], "rope_theta")):
            with self.subTest(args=args):
                bad = subprocess.run(
                    [sys.executable, EXPORTER, "--out", self.tmp, "--name",
                     "bad", "--d-model", "64", "--heads", "8"] + args,
                    capture_output=True, text=True)
                self.assertNotEqual(bad.returncode, 0)
                self.assertIn(words, bad.stderr)
                self.assertFalse(os.path.exists(os.path.join(self.tmp, "bad")))

    def test_cpp_rejects_mismatched_config(self):
        module = ec.random_module(32, 4, None, seed=0)
        ec.export_module(module, self.tmp, "m", config_extra={"num_heads": 5})
        out = subprocess.run(
            [self.dump, "read",
             os.path.join(self.tmp, "m/1/model.safetensors"),
             os.path.join(self.tmp, "m/config.json")],
            capture_output=True, text=True)
        self.assertEqual(out.returncode, 1)
        self.assertIn("INVALID_ARGUMENT", out.stderr)
        self.assertIn("num_heads (5) must divide d_model (32)", out.stderr)

    def test_python_reads_cpp_demo_repository(self):
        subprocess.run([self.dump, "write-demo", self.tmp], check=True)
        with open(os.path.join(self.tmp, "demo", "config.json")) as f:
            self.assertEqual(json.load(f), {"num_heads": 4})
        tensors = ec.load_safetensors(
            os.path.join(self.tmp, "demo", "1", "model.safetensors"))
        # Independent reimplementation of the demo generator (splitmix64,
        # top 24 bits, U(-1,1)/sqrt(256), order wq wk wv wo bq bk bv bo).
        mask = (1 << 64) - 1
        state = 20240501
        n = 4 * 256 * 256 + 4 * 256
        values = np.empty(n, dtype=np.float32)
        for i in range(n):
            state = (state + 0x9E3779B97F4A7C15) & mask
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
            z ^= z >> 31
            values[i] = (2 * (z >> 40) + 1 - 2**24) / 2.0**24
        values = (values * np.float32(1 / 16)).astype(np.float32)
        e2 = 256 * 256
        np.testing.assert_array_equal(tensors["in_proj_weight"].reshape(-1),
                                      values[:3 * e2])
        np.testing.assert_array_equal(tensors["out_proj.weight"].reshape(-1),
                                      values[3 * e2:4 * e2])
        np.testing.assert_array_equal(tensors["in_proj_bias"],
                                      values[4 * e2:4 * e2 + 768])
        np.testing.assert_array_equal(tensors["out_proj.bias"],
                                      values[4 * e2 + 768:])
        # And it loads into PyTorch's own module.
        m = torch.nn.MultiheadAttention(256, 4, batch_first=True)
        m.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})


if __name__ == "__main__":
    unittest.main()
