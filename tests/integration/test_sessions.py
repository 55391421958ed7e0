"""Stateful decode sessions through a real attn_server with the Python
client: a prefill then single-token steps, each checked against PyTorch
full causal attention recomputed over the whole prefix (an independent
reference), the precise status of every bad input, EndSession freeing the
KV cache (metric and RSS), eviction (cache full, max_sessions, idle
timeout) and concurrent sessions interleaved."""
import concurrent.futures
import math
import os
import queue
import random
import re
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

import grpc
import numpy as np
import torch

import attnserve
import server_harness as h

TOL = 1e-4       # fp32 cache
BF16_TOL = 3e-2  # bf16 cache: K and V rounded to 8 mantissa bits
CALL_TIMEOUT_S = 60
_METRICS = re.compile(r"Prometheus metrics on (http://\S+/metrics)")


def write_llama(model_dir, seed, d_model, heads, kv_heads, config_extra=None):
    """A Llama-style GQA layer (q/k/v/o_proj, no bias); returns its weights."""
    rng = np.random.default_rng(seed)
    head_dim = d_model // heads
    scale = 1.0 / math.sqrt(d_model)
    names = {"q": heads * head_dim, "k": kv_heads * head_dim, "v": kv_heads * head_dim}
    w = {f"model.layers.0.self_attn.{n}_proj.weight":
         rng.normal(0, scale, (rows, d_model)).astype(np.float32) for n, rows in names.items()}
    w["model.layers.0.self_attn.o_proj.weight"] = rng.normal(
        0, scale, (d_model, heads * head_dim)).astype(np.float32)
    config = {"num_heads": heads, "num_kv_heads": kv_heads}
    config.update(config_extra or {})
    h.write_config(model_dir, config)
    h.write_safetensors(os.path.join(model_dir, "1", "model.safetensors"), w)
    return {"heads": heads, "kv_heads": kv_heads,
            **{n: w[f"model.layers.0.self_attn.{n}_proj.weight"] for n in "qkvo"}}


def torch_causal(layer, x):
    """Full causal GQA attention over all of x ([S, D]) in float64, PyTorch."""
    t = torch.from_numpy(np.asarray(x, np.float64))
    heads, kv_heads = layer["heads"], layer["kv_heads"]
    wq, wk, wv, wo = (torch.from_numpy(layer[n].astype(np.float64)) for n in "qkvo")
    s = t.shape[0]
    hd = wq.shape[0] // heads
    q = (t @ wq.T).view(s, heads, hd).transpose(0, 1)
    k = (t @ wk.T).view(s, kv_heads, hd).transpose(0, 1)
    v = (t @ wv.T).view(s, kv_heads, hd).transpose(0, 1)
    k = k.repeat_interleave(heads // kv_heads, dim=0)
    v = v.repeat_interleave(heads // kv_heads, dim=0)
    scores = (q @ k.transpose(1, 2)) / math.sqrt(hd)
    future = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
    ctx = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v
    return (ctx.transpose(0, 1).reshape(s, heads * hd) @ wo.T).numpy()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metrics_text(server):
    match = _METRICS.search(server.stderr_text())
    assert match, server.stderr_text()
    with urllib.request.urlopen(match.group(1), timeout=CALL_TIMEOUT_S) as r:
        return r.read().decode()


def metric(text, name, labels=""):
    """The value of one series (labels: the exact label text, e.g.
    'state="used"'); 0 when the series does not exist yet."""
    pattern = r"^%s%s (\S+)$" % (re.escape(name), re.escape("{%s}" % labels) if labels else "")
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else 0.0


class ServerCase(unittest.TestCase):
    """A server on the repository cls.tmp with metrics, and its client."""

    @classmethod
    def start_server(cls, kv_cache_bytes, extra=()):
        cls.server = h.ServerProcess(cls.tmp.name, [f"--kv_cache_bytes={kv_cache_bytes}",
                                                    f"--metrics_port={free_port()}", *extra])
        cls.target = cls.server.start()
        cls.client = attnserve.Client(cls.target)

    @classmethod
    def tearDownClass(cls):
        h.tear_down_class(cls)


class SessionsTest(ServerCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = cls.tmp.name
        cls.layers = {
            "gqa": write_llama(os.path.join(repo, "gqa"), 1, 64, 8, 2,
                               {"sessions": {"max_sessions": 40}}),
            "mha": write_llama(os.path.join(repo, "mha"), 2, 48, 4, 4),
            "bf16": write_llama(os.path.join(repo, "bf16"), 3, 64, 8, 2,
                                {"kv_cache_dtype": "bfloat16"}),
            "few": write_llama(os.path.join(repo, "few"), 4, 32, 4, 2,
                               {"sessions": {"max_sessions": 2},
                                "max_sequence_length": 64}),
            "brief": write_llama(os.path.join(repo, "brief"), 5, 32, 4, 2,
                                 {"sessions": {"idle_timeout_s": 0.5}}),
            "big": write_llama(os.path.join(repo, "big"), 6, 512, 8, 8),
        }
        cls.start_server(256 << 20)

    def assertClose(self, actual, expected, tol=TOL):
        self.assertEqual(actual.shape, expected.shape)
        self.assertTrue(np.all(np.isfinite(actual)))
        err = float(np.max(np.abs(actual - expected)))
        self.assertLessEqual(err, tol, f"max abs error {err} > {tol}")

    def assertCode(self, code, fn, *words):
        with self.assertRaises(grpc.RpcError) as ctx:
            fn()
        self.assertEqual(ctx.exception.code(), code, ctx.exception.details())
        for word in words:
            self.assertIn(word, ctx.exception.details())
        return ctx.exception.details()

    def decode(self, model, sid, x, prefill, tol=TOL, chunks=()):
        """Prefill then one-token steps (or `chunks` sizes first), each step
        checked against the PyTorch rows of the whole prefix."""
        layer = self.layers[model]
        r = self.client.start_session(sid, x[:prefill], model=model, timeout=CALL_TIMEOUT_S)
        self.assertEqual(r.session_length, prefill)
        self.assertClose(r.output, torch_causal(layer, x[:prefill]), tol)
        pos = prefill
        sizes = list(chunks) + [1] * (x.shape[0] - prefill - sum(chunks))
        for n in sizes:
            r = self.client.step(sid, x[pos:pos + n], pos, model=model, timeout=CALL_TIMEOUT_S)
            self.assertEqual(r.session_length, pos + n)
            self.assertClose(r.output, torch_causal(layer, x[:pos + n])[pos:], tol)
            pos += n
        return pos

    # -- numerics -------------------------------------------------------------

    def test_gqa_decode_matches_torch(self):
        x = h.random_array(np.random.default_rng(10), 21 + 3 + 12, 64)
        n = self.decode("gqa", "gqa-decode", x, 21, chunks=(3,))
        self.assertEqual(self.client.end_session("gqa-decode", model="gqa"), n)

    def test_mha_decode_matches_torch(self):
        x = h.random_array(np.random.default_rng(11), 40, 48)
        self.decode("mha", "mha-decode", x, 15)
        self.client.end_session("mha-decode", model="mha")

    def test_bf16_cache_decode(self):
        x = h.random_array(np.random.default_rng(12), 30, 64)
        self.decode("bf16", "bf16-decode", x, 17, tol=BF16_TOL)
        self.client.end_session("bf16-decode", model="bf16")

    def test_stream_steps(self):
        """A session's steps on one AttendStream, each sent once the previous
        answer is in (as a decode loop does: a step of a session that is still
        computing is FAILED_PRECONDITION)."""
        layer = self.layers["gqa"]
        x = h.random_array(np.random.default_rng(13), 12, 64)
        pending = queue.Queue()
        pending.put(self.client.build_step_request("streamed", x[:8], 0, start=True,
                                                   model="gqa"))

        def requests():
            while True:
                item = pending.get(timeout=CALL_TIMEOUT_S)
                if item is None:
                    return
                yield item

        lengths = []
        for r in self.client.attend_stream(requests(), timeout=CALL_TIMEOUT_S):
            lengths.append(r.session_length)
            p = r.session_length
            self.assertClose(r.output, torch_causal(layer, x[:p])[-r.output.shape[0]:])
            pending.put(None if p == 12 else
                        self.client.build_step_request("streamed", x[p:p + 1], p, model="gqa"))
        self.assertEqual(lengths, [8, 9, 10, 11, 12])
        self.client.end_session("streamed", model="gqa")

    def test_concurrent_sessions_match_alone(self):
        """32 sessions whose steps interleave (4 threads, random order) give
        the answers of each session run alone, and never each other's."""
        rng = np.random.default_rng(14)
        count, prefill, steps = 32, 9, 6
        xs = [h.random_array(rng, prefill + steps, 64) for _ in range(count)]
        alone = []
        for i in range(2):  # two run alone first: the interleaved run equals them
            sid = f"alone-{i}"
            outs = [self.client.start_session(sid, xs[i][:prefill], model="gqa").output]
            for p in range(prefill, prefill + steps):
                outs.append(self.client.step(sid, xs[i][p:p + 1], p, model="gqa").output)
            self.client.end_session(sid, model="gqa")
            alone.append(outs)
        order = [i for i in range(count) for _ in range(steps + 1)]
        random.Random(3).shuffle(order)
        got = [[] for _ in range(count)]
        locks = [threading.Lock() for _ in range(count)]

        def one(i):
            with locks[i]:  # a session takes one step at a time
                sid, n = f"conc-{i}", len(got[i])
                if n == 0:
                    r = self.client.start_session(sid, xs[i][:prefill], model="gqa")
                else:
                    p = prefill + n - 1
                    r = self.client.step(sid, xs[i][p:p + 1], p, model="gqa")
                got[i].append(r.output)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(one, order))
        for i in range(count):
            self.client.end_session(f"conc-{i}", model="gqa")
            ref = torch_causal(self.layers["gqa"], xs[i])
            self.assertClose(got[i][0], ref[:prefill])
            for s in range(1, steps + 1):
                self.assertClose(got[i][s], ref[prefill + s - 1:prefill + s])
            if i < 2:
                for a, b in zip(got[i], alone[i]):
                    self.assertClose(a, b, 1e-5)

    # -- bad inputs -----------------------------------------------------------

    def test_bad_inputs(self):
        x = h.random_array(np.random.default_rng(15), 8, 64)
        c, m = self.client, "gqa"
        self.assertCode(grpc.StatusCode.NOT_FOUND, lambda: c.step("never", x[:1], 0, model=m),
                        "session_start", "full prefix")
        c.start_session("bad", x[:4], model=m)
        self.assertCode(grpc.StatusCode.ALREADY_EXISTS,
                        lambda: c.start_session("bad", x[:4], model=m))
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT,
                        lambda: c.step("bad", np.zeros((1, 32), np.float32), 4, model=m),
                        "d_model")
        details = self.assertCode(grpc.StatusCode.FAILED_PRECONDITION,
                                  lambda: c.step("bad", x[4:5], 3, model=m))
        self.assertIn("3", details)
        self.assertIn("4 tokens", details)
        req = c.build_step_request("bad", x[4:5], 4, model=m)
        req.causal = False
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT,
                        lambda: c._stub.Attend(req, timeout=CALL_TIMEOUT_S), "causal")
        req = c.build_step_request("bad", x[4:5], 4, model=m)
        req.key.CopyFrom(attnserve.encode_tensor(x[:2], np.float32))
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT,
                        lambda: c._stub.Attend(req, timeout=CALL_TIMEOUT_S), "key")
        # A refused step changed nothing: the session still continues at 4.
        self.assertEqual(c.step("bad", x[4:5], 4, model=m).session_length, 5)
        self.assertEqual(c.end_session("bad", model=m), 5)
        self.assertCode(grpc.StatusCode.NOT_FOUND, lambda: c.step("bad", x[5:6], 5, model=m),
                        "full prefix")
        self.assertCode(grpc.StatusCode.NOT_FOUND, lambda: c.end_session("bad", model=m))
        self.assertCode(grpc.StatusCode.NOT_FOUND,
                        lambda: c.start_session("s", x[:2], model="no_such_model"))
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT,
                        lambda: c.end_session("", model=m), "session_id")

    def test_max_sequence_length(self):
        x = h.random_array(np.random.default_rng(16), 70, 32)
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT,
                        lambda: self.client.start_session("long", x[:65], model="few"),
                        "max_sequence_length")
        self.client.start_session("long", x[:60], model="few")
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT,
                        lambda: self.client.step("long", x[60:65], 60, model="few"),
                        "max_sequence_length")
        self.client.end_session("long", model="few")

    def test_max_sessions_evicts_least_recently_used(self):
        x = h.random_array(np.random.default_rng(17), 8, 32)
        before = metric(metrics_text(self.server), "attn_session_evictions_total",
                        'model="few",reason="max_sessions"')
        for sid in ("m1", "m2"):
            self.client.start_session(sid, x[:4], model="few")
        self.client.step("m1", x[4:5], 4, model="few")  # m2 is now the LRU
        self.client.start_session("m3", x[:4], model="few")
        self.assertCode(grpc.StatusCode.NOT_FOUND,
                        lambda: self.client.step("m2", x[4:5], 4, model="few"), "evicted")
        self.assertEqual(self.client.step("m1", x[5:6], 5, model="few").session_length, 6)
        text = metrics_text(self.server)
        self.assertEqual(metric(text, "attn_session_evictions_total",
                                'model="few",reason="max_sessions"') - before, 1)
        self.assertEqual(metric(text, "attn_sessions_active", 'model="few"'), 2)
        for sid in ("m1", "m3"):
            self.client.end_session(sid, model="few")

    def test_idle_timeout(self):
        x = h.random_array(np.random.default_rng(18), 4, 32)
        self.client.start_session("idle", x[:3], model="brief")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # sweeper: every 250 ms
            text = metrics_text(self.server)
            if metric(text, "attn_sessions_active", 'model="brief"') == 0:
                break
            time.sleep(0.1)
        self.assertEqual(metric(text, "attn_session_evictions_total",
                                'model="brief",reason="idle_timeout"'), 1)
        self.assertCode(grpc.StatusCode.NOT_FOUND,
                        lambda: self.client.step("idle", x[3:4], 3, model="brief"),
                        "idle_timeout_s")

    def test_restart_from_prefix_after_not_found(self):
        """The client's recovery: NOT_FOUND, then a new start with the full
        prefix gives the same answers as the lost session would have."""
        layer = self.layers["gqa"]
        x = h.random_array(np.random.default_rng(19), 10, 64)
        self.client.start_session("again", x[:6], model="gqa")
        self.client.end_session("again", model="gqa")
        self.assertCode(grpc.StatusCode.NOT_FOUND,
                        lambda: self.client.step("again", x[6:7], 6, model="gqa"))
        self.client.start_session("again", x[:7], model="gqa")
        r = self.client.step("again", x[7:8], 7, model="gqa")
        self.assertClose(r.output, torch_causal(layer, x[:8])[7:])
        self.client.end_session("again", model="gqa")

    # -- memory ---------------------------------------------------------------

    def test_end_session_frees_memory(self):
        """4 sessions of 1024 tokens at d_model 512 hold 16 MiB of K/V:
        EndSession returns it (attn_kv_cache_bytes and the process's RSS)."""
        rng = np.random.default_rng(20)
        used0 = metric(metrics_text(self.server), "attn_kv_cache_bytes", 'state="used"')
        kv_bytes = 4 * 1024 * 512 * 2 * 4
        for i in range(4):
            self.client.start_session(f"big-{i}", h.random_array(rng, 1024, 512),
                                      model="big", timeout=CALL_TIMEOUT_S)
        text = metrics_text(self.server)
        used = metric(text, "attn_kv_cache_bytes", 'state="used"')
        self.assertGreaterEqual(used - used0, kv_bytes)
        rss_full = h.proc_status_bytes(self.server.proc.pid, "VmRSS")
        for i in range(4):
            self.assertEqual(self.client.end_session(f"big-{i}", model="big"), 1024)
        text = metrics_text(self.server)
        self.assertEqual(metric(text, "attn_kv_cache_bytes", 'state="used"'), used0)
        rss_after = h.proc_status_bytes(self.server.proc.pid, "VmRSS")
        self.assertGreaterEqual(rss_full - rss_after, kv_bytes // 2,
                                f"RSS {rss_full} -> {rss_after}")


class CacheFullTest(ServerCase):
    """A cache of 8 blocks of 16 tokens: an idle session is evicted for a
    new one, and a start that cannot fit even then is RESOURCE_EXHAUSTED."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.layer = write_llama(os.path.join(cls.tmp.name, "tiny"), 7, 32, 4, 2)
        # One block: 2 (K, V) x 2 kv heads x 16 tokens x 8 dims x 4 bytes.
        cls.start_server(8 * 2048)

    def test_evict_then_refuse(self):
        c = self.client
        x = h.random_array(np.random.default_rng(21), 130, 32)
        c.start_session("a", x[:64], model="tiny")   # 4 blocks
        c.start_session("b", x[:48], model="tiny")   # 3 blocks
        c.step("a", x[64:65], 64, model="tiny")      # 5th block; b is the LRU
        c.start_session("c", x[:32], model="tiny")   # needs 2, 1 free: evicts b
        with self.assertRaises(grpc.RpcError) as ctx:
            c.step("b", x[48:49], 48, model="tiny")
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as ctx:
            c.start_session("d", x[:129], model="tiny")  # 9 blocks > the cache
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("--kv_cache_bytes", ctx.exception.details())
        text = metrics_text(self.server)
        evicted = metric(text, "attn_session_evictions_total",
                         'model="tiny",reason="cache_full"')
        # d evicted nothing: a and c (7 blocks) were not enough for 9.
        self.assertEqual(evicted, 1)
        self.assertLessEqual(metric(text, "attn_kv_cache_bytes", 'state="used"'), 8 * 2048)
        r = c.step("a", x[65:66], 65, model="tiny")
        self.assertEqual(r.session_length, 66)
        self.assertLessEqual(
            float(np.max(np.abs(r.output - torch_causal(self.layer, x[:66])[65:]))), TOL)



class TokenScopeTest(ServerCase):
    """With --auth_token_file a session id is scoped to the caller's token:
    another caller neither sees nor ends it, and may use the same id for a
    session of its own."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.layer = write_llama(os.path.join(cls.tmp.name, "scoped"), 9, 32, 4, 2)
        tokens = os.path.join(cls.tmp.name, "tokens")
        with open(tokens, "w") as f:
            f.write("token-alice-0123456789\ntoken-bob-0123456789\n")
        cls.start_server(1 << 20, [f"--auth_token_file={tokens}"])
        cls.bob = attnserve.Client(cls.target, auth_token="token-bob-0123456789")
        cls.alice = attnserve.Client(cls.target, auth_token="token-alice-0123456789")

    @classmethod
    def tearDownClass(cls):
        cls.alice.close()
        cls.bob.close()
        super().tearDownClass()

    def test_ids_are_per_token(self):
        rng = np.random.default_rng(23)
        xa, xb = h.random_array(rng, 6, 32), h.random_array(rng, 6, 32)
        self.alice.start_session("shared-id", xa[:5], model="scoped")
        for call in (lambda: self.bob.step("shared-id", xb[:1], 5, model="scoped"),
                     lambda: self.bob.end_session("shared-id", model="scoped")):
            with self.assertRaises(grpc.RpcError) as ctx:
                call()
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.bob.start_session("shared-id", xb[:2], model="scoped")
        ra = self.alice.step("shared-id", xa[5:6], 5, model="scoped")
        rb = self.bob.step("shared-id", xb[2:3], 2, model="scoped")
        self.assertEqual((ra.session_length, rb.session_length), (6, 3))
        for r, x in ((ra, xa[:6]), (rb, xb[:3])):
            err = float(np.max(np.abs(r.output - torch_causal(self.layer, x)[-1:])))
            self.assertLessEqual(err, TOL)
        self.assertEqual(self.alice.end_session("shared-id", model="scoped"), 6)
        self.assertEqual(self.bob.end_session("shared-id", model="scoped"), 3)


class VersionPinTest(ServerCase):
    """A session keeps its version: unloading the model takes it out of
    routing, but the session's steps and EndSession still reach it (version 0
    too), and its memory is freed when the last session ends."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.layer = write_llama(os.path.join(cls.tmp.name, "pin"), 8, 32, 4, 2)
        cls.start_server(1 << 20, ["--enable_model_control"])

    def admin(self, *args):
        r = subprocess.run([h.CLI, *args, f"--target={self.target}"], capture_output=True,
                           text=True, timeout=CALL_TIMEOUT_S)
        return r.returncode, r.stdout + r.stderr

    def test_unload_keeps_live_sessions(self):
        c = self.client
        x = h.random_array(np.random.default_rng(22), 12, 32)
        c.start_session("kept", x[:8], model="pin")
        code, out = self.admin("unload", "--model=pin")
        self.assertEqual(code, 0, out)
        with self.assertRaises(grpc.RpcError) as ctx:  # out of routing
            c.attend(x[:2], model="pin", timeout=CALL_TIMEOUT_S)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as ctx:  # no new sessions
            c.start_session("new", x[:2], model="pin", timeout=CALL_TIMEOUT_S)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)
        code, out = self.admin("status", "--model=pin")
        self.assertIn("UNLOADING", out)  # the session holds the version
        for p in range(8, 12):
            r = c.step("kept", x[p:p + 1], p, model="pin", timeout=CALL_TIMEOUT_S)
            self.assertEqual((r.version, r.session_length), (1, p + 1))
            self.assertLessEqual(
                float(np.max(np.abs(r.output - torch_causal(self.layer, x[:p + 1])[p:]))),
                TOL)
        self.assertEqual(c.end_session("kept", model="pin"), 12)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "UNLOADING" in out:
            time.sleep(0.2)
            code, out = self.admin("status", "--model=pin")
        self.assertNotIn("UNLOADING", out)
        code, out = self.admin("load", "--model=pin")
        self.assertEqual(code, 0, out)
        self.assertEqual(c.start_session("new", x[:2], model="pin").session_length, 2)
        c.end_session("new", model="pin")


if __name__ == "__main__":
    unittest.main()
