"""Rotary position embeddings and sliding windows through a real attn_server
with the Python client, against an independent PyTorch implementation of
Hugging Face's Llama attention written here (rotate_half, GPT-J's
interleaved pairs, partial rotary, repeat_kv for GQA, causal and sliding
window masks), in float64: stateless Attend (causal and not), sessions (a
prefill then single-token steps, each equal to the stateless causal answer
over the whole prefix), and the refusals (cross-attention on a RoPE model,
non-causal requests on a windowed model)."""
import math
import os
import tempfile
import unittest

import grpc
import numpy as np
import torch

import attnserve
import server_harness as h
from test_sessions import write_llama

TOL = 1e-4
CALL_TIMEOUT_S = 60


def write_layer(model_dir, seed, d_model, heads, kv_heads, config):
    """A Llama-style layer (test_sessions.write_llama) with `config` keys;
    returns its float64 weights and settings."""
    w = write_llama(model_dir, seed, d_model, heads, kv_heads, config)
    layer = {n: torch.from_numpy(w[n].astype(np.float64)) for n in "qkvo"}
    hd = d_model // heads
    layer.update(heads=heads, kv_heads=kv_heads, head_dim=hd,
                 theta=config.get("rope_theta", 0), style=config.get("rope_style", "half"),
                 rope_dims=config.get("rope_dims", 0) or hd,
                 window=config.get("sliding_window", 0))
    return layer


# --- the reference: Hugging Face LlamaAttention, re-written in float64 -------

def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rotate_every_two(x):
    """GPT-J: pairs (2i, 2i+1)."""
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rope(x, positions, layer):
    """x: [heads, S, hd]; rotates the first rope_dims dimensions."""
    if not layer["theta"]:
        return x
    dims = layer["rope_dims"]
    inv_freq = 1.0 / (layer["theta"] ** (torch.arange(0, dims, 2, dtype=torch.float64) / dims))
    freqs = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # [S, dims/2]
    if layer["style"] == "half":
        emb = torch.cat((freqs, freqs), dim=-1)
        rot = rotate_half
    else:
        emb = torch.repeat_interleave(freqs, 2, dim=-1)
        rot = rotate_every_two
    cos, sin = emb.cos(), emb.sin()
    x_rot, x_pass = x[..., :dims], x[..., dims:]
    return torch.cat((x_rot * cos + rot(x_rot) * sin, x_pass), dim=-1)


def repeat_kv(x, n_rep):
    """[kv_heads, S, hd] -> [kv_heads * n_rep, S, hd], as HF's repeat_kv."""
    kvh, s, hd = x.shape
    return x[:, None, :, :].expand(kvh, n_rep, s, hd).reshape(kvh * n_rep, s, hd)


def torch_llama(layer, x, causal=True):
    """Attention of x ([S, D]) at positions 0..S-1, float64."""
    t = torch.from_numpy(np.asarray(x, np.float64))
    s = t.shape[0]
    heads, kvh, hd = layer["heads"], layer["kv_heads"], layer["head_dim"]
    q = (t @ layer["q"].T).view(s, heads, hd).transpose(0, 1)
    k = (t @ layer["k"].T).view(s, kvh, hd).transpose(0, 1)
    v = (t @ layer["v"].T).view(s, kvh, hd).transpose(0, 1)
    pos = torch.arange(s)
    q, k = apply_rope(q, pos, layer), apply_rope(k, pos, layer)
    k, v = repeat_kv(k, heads // kvh), repeat_kv(v, heads // kvh)
    scores = (q @ k.transpose(1, 2)) / math.sqrt(hd)
    i, j = pos[:, None], pos[None, :]
    masked = torch.zeros(s, s, dtype=torch.bool)
    if causal:
        masked |= j > i
    if layer["window"]:
        masked |= j <= i - layer["window"]
    ctx = torch.softmax(scores.masked_fill(masked, float("-inf")), dim=-1) @ v
    return (ctx.transpose(0, 1).reshape(s, heads * hd) @ layer["o"].T).numpy()


class RopeServerTest(unittest.TestCase):
    MODELS = {
        # name: (seed, d_model, heads, kv_heads, config)
        "llama_gqa": (1, 64, 8, 2, {"rope_theta": 10000.0, "causal": True}),
        "gptj_mha": (2, 48, 4, 4, {"rope_theta": 10000.0, "rope_style": "interleaved"}),
        "partial_gqa": (3, 64, 4, 2, {"rope_theta": 500.0, "rope_dims": 8}),
        "partial_interleaved": (4, 64, 4, 1, {"rope_theta": 10000.0,
                                              "rope_style": "interleaved", "rope_dims": 6}),
        "mistral_window": (5, 64, 8, 2, {"rope_theta": 10000.0, "causal": True,
                                         "sliding_window": 7}),
        "window_only": (6, 32, 4, 2, {"causal": True, "sliding_window": 3}),
        "window_bf16_cache": (7, 64, 4, 2, {"rope_theta": 10000.0, "causal": True,
                                            "sliding_window": 70,
                                            "kv_cache_dtype": "bfloat16"}),
    }

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.layers = {name: write_layer(os.path.join(cls.tmp.name, name), *spec)
                      for name, spec in cls.MODELS.items()}
        cls.server = h.ServerProcess(cls.tmp.name, ["--kv_cache_bytes=67108864"])
        cls.target = cls.server.start()
        cls.client = attnserve.Client(cls.target)

    @classmethod
    def tearDownClass(cls):
        h.tear_down_class(cls)

    def assertClose(self, actual, expected, tol=TOL):
        self.assertEqual(actual.shape, expected.shape)
        self.assertTrue(np.all(np.isfinite(actual)))
        err = float(np.max(np.abs(actual - expected)))
        self.assertLessEqual(err, tol, f"max abs error {err} > {tol}")

    def d_model(self, name):
        return self.MODELS[name][1]

    def test_reference_is_not_trivial(self):
        """RoPE and the window change the answer (else every check below
        would pass with them ignored)."""
        x = h.random_array(np.random.default_rng(1), 20, 64)
        layer = dict(self.layers["mistral_window"])
        with_both = torch_llama(layer, x)
        self.assertGreater(np.max(np.abs(with_both - torch_llama({**layer, "theta": 0}, x))), 1e-2)
        self.assertGreater(np.max(np.abs(with_both - torch_llama({**layer, "window": 0}, x))), 1e-2)

    def test_stateless_causal_and_bidirectional(self):
        rng = np.random.default_rng(2)
        for name in ("llama_gqa", "gptj_mha", "partial_gqa", "partial_interleaved",
                     "mistral_window", "window_only"):
            for causal in (True, False):
                if self.layers[name]["window"] and not causal:
                    continue
                with self.subTest(model=name, causal=causal):
                    x = h.random_array(rng, 2, 83, self.d_model(name))
                    r = self.client.attend(x, causal=causal, model=name, timeout=CALL_TIMEOUT_S)
                    for b in range(2):
                        self.assertClose(r.output[b], torch_llama(self.layers[name], x[b], causal))

    def test_long_window_crosses_query_blocks(self):
        """200 tokens, window 70 (> one 64-row block of the kernel)."""
        x = h.random_array(np.random.default_rng(3), 200, 64)
        r = self.client.attend(x, model="window_bf16_cache", timeout=CALL_TIMEOUT_S)
        self.assertClose(r.output, torch_llama(self.layers["window_bf16_cache"], x))

    def test_sessions_match_stateless_and_torch(self):
        rng = np.random.default_rng(4)
        for name, prefill, steps, tol in (("llama_gqa", 13, 6, TOL), ("gptj_mha", 9, 5, TOL),
                                          ("partial_gqa", 10, 4, TOL),
                                          ("mistral_window", 11, 8, TOL),
                                          ("window_only", 5, 6, TOL),
                                          ("window_bf16_cache", 75, 4, 3e-2)):
            with self.subTest(model=name):
                layer = self.layers[name]
                x = h.random_array(rng, prefill + steps, self.d_model(name))
                sid = f"rope-{name}"
                r = self.client.start_session(sid, x[:prefill], model=name,
                                              timeout=CALL_TIMEOUT_S)
                self.assertEqual(r.session_length, prefill)
                self.assertClose(r.output, torch_llama(layer, x[:prefill]), tol)
                for p in range(prefill, prefill + steps):
                    r = self.client.step(sid, x[p:p + 1], p, model=name, timeout=CALL_TIMEOUT_S)
                    self.assertEqual(r.session_length, p + 1)
                    stateless = self.client.attend(x[:p + 1], causal=True, model=name,
                                                   timeout=CALL_TIMEOUT_S).output[-1:]
                    self.assertClose(r.output, stateless, tol)
                    self.assertClose(r.output, torch_llama(layer, x[:p + 1])[-1:], tol)
                self.client.end_session(sid, model=name, timeout=CALL_TIMEOUT_S)

    def test_cross_attention_on_rope_model_is_invalid_argument(self):
        q = h.random_array(np.random.default_rng(5), 4, 64)
        kv = h.random_array(np.random.default_rng(6), 9, 64)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.client.attend(q, key=kv, value=kv, model="llama_gqa", timeout=CALL_TIMEOUT_S)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        for word in ("rotary position embeddings", "omit key and value", "session"):
            self.assertIn(word, ctx.exception.details())
        # The server still answers.
        r = self.client.attend(q, model="llama_gqa", timeout=CALL_TIMEOUT_S)
        self.assertClose(r.output, torch_llama(self.layers["llama_gqa"], q))

    def test_non_causal_request_on_window_model_is_invalid_argument(self):
        x = h.random_array(np.random.default_rng(7), 6, 32)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.client.attend(x, causal=False, model="window_only", timeout=CALL_TIMEOUT_S)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("sliding window", ctx.exception.details())
        self.assertIn("causal", ctx.exception.details())


if __name__ == "__main__":
    unittest.main()
