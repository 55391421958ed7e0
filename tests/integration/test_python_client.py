"""The Python client against a real attn_server, compared with PyTorch's
nn.MultiheadAttention on the same weights (exported with
tools/export_checkpoint.py)."""
import concurrent.futures
import math
import os
import tempfile
import unittest

import grpc
import numpy as np
import torch

import attnserve
import server_harness as h

TOL = 1e-4
D = 64
HEADS = 4


def make_mha(seed, d_model=D, heads=HEADS, bias=True):
    torch.manual_seed(seed)
    module = torch.nn.MultiheadAttention(d_model, heads, bias=bias, batch_first=True)
    with torch.no_grad():  # non-zero biases so that they are checked too
        if bias:
            module.in_proj_bias.uniform_(-0.5, 0.5)
            module.out_proj.bias.uniform_(-0.5, 0.5)
    return module.eval()


def export(module, repository, name, version=1, **kwargs):
    """tools/export_checkpoint.py export_module (kwargs: causal, naming,
    dtype, prefix, config_extra)."""
    h.import_exporter().export_module(module, repository, name, version=version, **kwargs)


def rounded_copy(module, dtype):
    """A copy of `module` whose parameters are rounded to `dtype` (as stored
    in a half-precision checkpoint)."""
    import copy
    out = copy.deepcopy(module)
    with torch.no_grad():
        for p in out.parameters():
            p.copy_(p.to(dtype).float())
    return out


def torch_reference(module, q, k=None, v=None, attn_mask=None, key_padding_mask=None):
    """(output, weights [B, H, Sq, Sk]) of nn.MultiheadAttention, float64.

    Runs in training mode (dropout is 0) so that PyTorch takes its reference
    path, not the fused inference fast path (which rejects bias=False here).
    """
    module = module.double().train()
    try:
        def t(x):
            return None if x is None else torch.from_numpy(np.asarray(x)).double()
        q_t = t(q)
        k_t = q_t if k is None else t(k)
        v_t = k_t if v is None else t(v)
        mask = attn_mask
        if mask is not None:
            mask = torch.from_numpy(np.asarray(mask))
            mask = mask if mask.dtype == torch.bool else mask.double()
        kpm = None if key_padding_mask is None else torch.from_numpy(key_padding_mask)
        with torch.no_grad():
            out, weights = module(q_t, k_t, v_t, need_weights=True, attn_mask=mask,
                                  key_padding_mask=kpm, average_attn_weights=False)
        return out.numpy(), weights.numpy()
    finally:
        module.float().eval()


def per_head_mask(mask, heads):
    """[B, Sq, Sk] -> [B*H, Sq, Sk] as nn.MultiheadAttention wants 3-D masks."""
    return np.repeat(mask, heads, axis=0)


class PythonClientTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = cls.tmp.name
        cls.mha = make_mha(1)
        export(cls.mha, repo, "mha64")
        cls.causal_mha = make_mha(2)
        export(cls.causal_mha, repo, "causal64", causal=True)
        cls.v1 = make_mha(3)
        cls.v2 = make_mha(4)
        # Both versions served (the default policy serves only the newest).
        both = {"version_policy": {"all": True}}
        export(cls.v1, repo, "versioned", version=1, config_extra=both)
        export(cls.v2, repo, "versioned", version=2, config_extra=both)
        cls.nobias = make_mha(5, d_model=32, heads=2, bias=False)
        export(cls.nobias, repo, "nobias32")
        cls.bert = make_mha(6)
        export(cls.bert, repo, "bert_f16", naming="bert", dtype="float16",
               prefix="encoder.layer.0.attention.")
        cls.bert_rounded = rounded_copy(cls.bert, torch.float16)
        cls.gqa = cls._write_llama_gqa(os.path.join(repo, "gqa"))
        cls.server = h.ServerProcess(repo)
        cls.target = cls.server.start()
        cls.client = attnserve.Client(cls.target)

    @classmethod
    def tearDownClass(cls):
        h.tear_down_class(cls)

    @staticmethod
    def _write_llama_gqa(model_dir, d_model=64, heads=8, kv_heads=2):
        """A Llama-style GQA checkpoint (q_proj/k_proj/v_proj/o_proj)."""
        rng = np.random.default_rng(7)
        head_dim = d_model // heads
        scale = 1.0 / math.sqrt(d_model)
        w = {
            "model.layers.0.self_attn.q_proj.weight":
                rng.normal(0, scale, (heads * head_dim, d_model)),
            "model.layers.0.self_attn.k_proj.weight":
                rng.normal(0, scale, (kv_heads * head_dim, d_model)),
            "model.layers.0.self_attn.v_proj.weight":
                rng.normal(0, scale, (kv_heads * head_dim, d_model)),
            "model.layers.0.self_attn.o_proj.weight":
                rng.normal(0, scale, (d_model, heads * head_dim)),
        }
        w = {k: v.astype(np.float32) for k, v in w.items()}
        h.write_config(model_dir, {"num_heads": heads, "num_kv_heads": kv_heads})
        h.write_safetensors(os.path.join(model_dir, "1", "model.safetensors"), w)
        return {"heads": heads, "kv_heads": kv_heads, "head_dim": head_dim,
                "wq": w["model.layers.0.self_attn.q_proj.weight"].astype(np.float64),
                "wk": w["model.layers.0.self_attn.k_proj.weight"].astype(np.float64),
                "wv": w["model.layers.0.self_attn.v_proj.weight"].astype(np.float64),
                "wo": w["model.layers.0.self_attn.o_proj.weight"].astype(np.float64)}

    def assertClose(self, actual, expected, tol=TOL):
        self.assertEqual(actual.shape, expected.shape)
        self.assertTrue(np.all(np.isfinite(actual)), "non-finite values in the output")
        err = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
        self.assertLessEqual(err, tol, f"max abs error {err} > {tol}")

    # -- service basics ------------------------------------------------------

    def test_health_serving(self):
        self.assertEqual(self.client.health(), "SERVING")

    def test_list_and_get_models(self):
        models = {(m.name, m.version): m for m in self.client.list_models()}
        for key in [("mha64", 1), ("causal64", 1), ("versioned", 1), ("versioned", 2),
                    ("nobias32", 1), ("gqa", 1), ("bert_f16", 1)]:
            self.assertIn(key, models)
        info = self.client.get_model("mha64")
        self.assertEqual((info.d_model, info.num_heads, info.head_dim), (D, HEADS, D // HEADS))
        self.assertFalse(info.causal)
        self.assertTrue(self.client.get_model("causal64").causal)
        self.assertEqual(self.client.get_model("versioned").version, 2)
        gqa = self.client.get_model("gqa")
        self.assertEqual((gqa.num_heads, gqa.num_kv_heads), (8, 2))
        # The kernels that run each model, as the start-up log names them.
        for m in models.values():
            self.assertRegex(m.implementation, r"^core \S+.*, projections ")

    # -- numerics against PyTorch ---------------------------------------------

    def test_self_attention_batch(self):
        q = h.random_array(np.random.default_rng(10), 3, 7, D)
        got = self.client.attend(q, model="mha64")
        expected, _ = torch_reference(self.mha, q)
        self.assertClose(got.output, expected)
        self.assertIsNone(got.attention_weights)
        self.assertEqual((got.model, got.version), ("mha64", 1))

    def test_rank2_query(self):
        q = h.random_array(np.random.default_rng(11), 5, D)
        got = self.client.attend(q, model="mha64")
        expected, _ = torch_reference(self.mha, q)  # unbatched torch input
        self.assertEqual(got.output.shape, (5, D))
        self.assertClose(got.output, expected)

    def test_cross_attention(self):
        rng = np.random.default_rng(12)
        q, k, v = h.random_array(rng, 2, 5, D), h.random_array(rng, 2, 9, D), \
            h.random_array(rng, 2, 9, D)
        got = self.client.attend(q, k, v, model="mha64", return_attention_weights=True)
        expected, weights = torch_reference(self.mha, q, k, v)
        self.assertClose(got.output, expected)
        self.assertClose(got.attention_weights, weights)

    def test_key_only_defaults_value_to_key(self):
        rng = np.random.default_rng(13)
        q, k = h.random_array(rng, 2, 4, D), h.random_array(rng, 2, 6, D)
        got = self.client.attend(q, k, model="mha64")
        expected, _ = torch_reference(self.mha, q, k, k)
        self.assertClose(got.output, expected)

    def test_causal_square_and_offset(self):
        rng = np.random.default_rng(14)
        for sq, sk in [(6, 6), (4, 7)]:
            q, kv = h.random_array(rng, 2, sq, D), h.random_array(rng, 2, sk, D)
            got = self.client.attend(q, kv, kv, causal=True, model="mha64",
                                     return_attention_weights=True)
            expected, weights = torch_reference(self.mha, q, kv, kv,
                                                attn_mask=h.causal_float_mask(sq, sk))
            self.assertClose(got.output, expected)
            self.assertClose(got.attention_weights, weights)

    def test_model_default_causal_and_override(self):
        q = h.random_array(np.random.default_rng(15), 2, 6, D)
        causal, _ = torch_reference(self.causal_mha, q, attn_mask=h.causal_float_mask(6, 6))
        full, _ = torch_reference(self.causal_mha, q)
        self.assertClose(self.client.attend(q, model="causal64").output, causal)
        self.assertClose(self.client.attend(q, model="causal64", causal=False).output, full)

    def test_key_lengths(self):
        rng = np.random.default_rng(16)
        q, kv = h.random_array(rng, 2, 5, D), h.random_array(rng, 2, 7, D)
        lengths = [3, 7]
        padding = np.arange(7)[None, :] >= np.array(lengths)[:, None]
        got = self.client.attend(q, kv, kv, key_lengths=lengths, model="mha64",
                                 return_attention_weights=True)
        expected, weights = torch_reference(self.mha, q, kv, kv, key_padding_mask=padding)
        self.assertClose(got.output, expected)
        self.assertClose(got.attention_weights, weights)

    def test_bool_mask_2d_and_3d(self):
        rng = np.random.default_rng(17)
        q, kv = h.random_array(rng, 2, 5, D), h.random_array(rng, 2, 6, D)
        mask2 = rng.random((5, 6)) < 0.4
        mask2[:, 0] = False  # no fully masked row (torch gives NaN there)
        got = self.client.attend(q, kv, kv, attn_mask=mask2, model="mha64",
                                 return_attention_weights=True)
        expected, weights = torch_reference(self.mha, q, kv, kv, attn_mask=mask2)
        self.assertClose(got.output, expected)
        self.assertClose(got.attention_weights, weights)

        mask3 = rng.random((2, 5, 6)) < 0.4
        mask3[:, :, 2] = False
        got = self.client.attend(q, kv, kv, attn_mask=mask3, model="mha64")
        expected, _ = torch_reference(self.mha, q, kv, kv,
                                      attn_mask=per_head_mask(mask3, HEADS))
        self.assertClose(got.output, expected)

    def test_float_mask_2d_and_3d(self):
        rng = np.random.default_rng(18)
        q = h.random_array(rng, 2, 5, D)
        mask2 = rng.normal(0, 2, (5, 5)).astype(np.float32)
        got = self.client.attend(q, attn_mask=mask2, model="mha64")
        expected, _ = torch_reference(self.mha, q, attn_mask=mask2)
        self.assertClose(got.output, expected)
        mask3 = rng.normal(0, 2, (2, 5, 5)).astype(np.float32)
        got = self.client.attend(q, attn_mask=mask3, model="mha64")
        expected, _ = torch_reference(self.mha, q, attn_mask=per_head_mask(mask3, HEADS))
        self.assertClose(got.output, expected)

    def test_mask_combined_with_causal_and_key_lengths(self):
        rng = np.random.default_rng(19)
        q = h.random_array(rng, 2, 6, D)
        mask = rng.normal(0, 1, (6, 6)).astype(np.float32)
        lengths = [6, 4]
        padding = np.arange(6)[None, :] >= np.array(lengths)[:, None]
        got = self.client.attend(q, attn_mask=mask, causal=True, key_lengths=lengths,
                                 model="mha64")
        expected, _ = torch_reference(self.mha, q, attn_mask=mask + h.causal_float_mask(6, 6),
                                      key_padding_mask=padding)
        self.assertClose(got.output, expected)

    def test_fully_masked_row_gives_zeros_not_nan(self):
        rng = np.random.default_rng(20)
        q = h.random_array(rng, 1, 4, D)
        mask = np.zeros((4, 4), dtype=bool)
        mask[2, :] = True  # row 2 sees no key
        got = self.client.attend(q, attn_mask=mask, model="mha64",
                                 return_attention_weights=True)
        self.assertTrue(np.all(np.isfinite(got.output)))
        np.testing.assert_array_equal(got.attention_weights[0, :, 2, :], 0.0)
        # The other rows are unaffected: compare them with torch.
        expected, _ = torch_reference(self.mha, q, attn_mask=mask)
        rows = [0, 1, 3]
        self.assertClose(got.output[:, rows], expected[:, rows])
        # DESIGN.md: "A row whose keys are all masked yields zeros (never
        # NaN)" -- the output row itself, not just the attention core.
        np.testing.assert_array_equal(got.output[0, 2], 0.0)

    def test_bert_naming_float16_checkpoint(self):
        q = h.random_array(np.random.default_rng(28), 2, 5, D)
        got = self.client.attend(q, model="bert_f16")
        expected, _ = torch_reference(self.bert_rounded, q)
        self.assertClose(got.output, expected)

    def test_no_bias_model(self):
        q = h.random_array(np.random.default_rng(21), 2, 3, 32)
        got = self.client.attend(q, model="nobias32")
        expected, _ = torch_reference(self.nobias, q)
        self.assertClose(got.output, expected)

    def test_versions(self):
        q = h.random_array(np.random.default_rng(22), 1, 4, D)
        e1, _ = torch_reference(self.v1, q)
        e2, _ = torch_reference(self.v2, q)
        newest = self.client.attend(q, model="versioned")
        self.assertEqual(newest.version, 2)
        self.assertClose(newest.output, e2)
        old = self.client.attend(q, model="versioned", version=1)
        self.assertEqual(old.version, 1)
        self.assertClose(old.output, e1)

    def test_half_precision_inputs(self):
        rng = np.random.default_rng(23)
        q = h.random_array(rng, 2, 6, D)
        for dtype, rounded in [(np.float16, q.astype(np.float16).astype(np.float32)),
                               ("bfloat16", attnserve.decode_tensor(
                                   attnserve.encode_tensor(q, "bfloat16")))]:
            got = self.client.attend(q, model="mha64", dtype=dtype)
            on_rounded, _ = torch_reference(self.mha, rounded)
            exact, _ = torch_reference(self.mha, q)
            self.assertClose(got.output, on_rounded, tol=2e-3)
            self.assertClose(got.output, exact, tol=5e-2)

    def test_request_id_echoed(self):
        q = h.random_array(np.random.default_rng(24), 1, 2, D)
        self.assertEqual(self.client.attend(q, model="mha64", request_id="abc-1").request_id,
                         "abc-1")

    def test_concurrent_requests_each_correct(self):
        rng = np.random.default_rng(25)
        inputs = [h.random_array(rng, 1 + i % 3, 2 + i % 5, D) for i in range(16)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda x: self.client.attend(x, model="mha64"), inputs))
        for x, got in zip(inputs, results):
            expected, _ = torch_reference(self.mha, x)
            self.assertClose(got.output, expected)

    def test_stream_in_order_with_error_in_the_middle(self):
        rng = np.random.default_rng(26)
        inputs = [h.random_array(rng, 1, 2 + i, D) for i in range(5)]
        requests = [dict(query=x, model="mha64", request_id=f"r{i}")
                    for i, x in enumerate(inputs)]
        requests.insert(2, dict(query=inputs[0], model="no_such_model", request_id="bad"))
        results = list(self.client.attend_stream(requests, timeout=60, raise_errors=False))
        self.assertEqual(len(results), 6)
        self.assertIsInstance(results[2], attnserve.AttendError)
        self.assertEqual(results[2].code(), grpc.StatusCode.NOT_FOUND)
        self.assertEqual(results[2].request_id, "bad")
        good = results[:2] + results[3:]
        for i, (x, got) in enumerate(zip(inputs, good)):
            self.assertEqual(got.request_id, f"r{i}")
            expected, _ = torch_reference(self.mha, x)
            self.assertClose(got.output, expected)

    def test_gqa_llama_naming(self):
        g = self.gqa
        rng = np.random.default_rng(27)
        q, kv = h.random_array(rng, 2, 5, D), h.random_array(rng, 2, 6, D)
        got = self.client.attend(q, kv, kv, model="gqa", return_attention_weights=True)
        # Hand-written grouped-query attention in float64.
        b, sq, sk, hd = 2, 5, 6, g["head_dim"]
        qh = (q.astype(np.float64) @ g["wq"].T).reshape(b, sq, g["heads"], hd)
        kh = (kv.astype(np.float64) @ g["wk"].T).reshape(b, sk, g["kv_heads"], hd)
        vh = (kv.astype(np.float64) @ g["wv"].T).reshape(b, sk, g["kv_heads"], hd)
        group = g["heads"] // g["kv_heads"]
        kh = np.repeat(kh, group, axis=2)  # head i uses kv head i // group
        vh = np.repeat(vh, group, axis=2)
        scores = np.einsum("bqhd,bkhd->bhqk", qh, kh) / math.sqrt(hd)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        o = np.einsum("bhqk,bkhd->bqhd", weights, vh).reshape(b, sq, g["heads"] * hd)
        expected = o @ g["wo"].T
        self.assertClose(got.output, expected)
        self.assertClose(got.attention_weights, weights)


if __name__ == "__main__":
    unittest.main(verbosity=2)
