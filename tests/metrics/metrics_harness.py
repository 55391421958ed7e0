"""Helpers of the metrics tests: a model repository, an attn_server with its
Prometheus endpoint on a free port, scraping and parsing /metrics, and
traffic whose every answer is tallied by (model label, gRPC code).

Environment (set by ctest, see CMakeLists.txt): as tests/integration, plus
  ATTN_PROMTOOL     promtool binary (Debian package `prometheus`)
  ATTN_PROMETHEUS   prometheus binary
  ATTN_DEPLOY_DIR   the repository's deploy/ directory
"""
import collections
import os
import re
import socket
import subprocess
import time
import urllib.request

import grpc
import numpy as np

import attnserve
from attnserve import attention_pb2
import server_harness as h

PROMTOOL = os.environ.get("ATTN_PROMTOOL", "/usr/bin/promtool")
PROMETHEUS = os.environ.get("ATTN_PROMETHEUS", "/usr/bin/prometheus")
DEPLOY_DIR = os.environ.get("ATTN_DEPLOY_DIR", "")

D = 32          # d_model of the test models
HEADS = 4
MAX_SEQ = 64


# ----------------------------------------------------------------------------
# Model repository: "m" (plain), "t" (every request times out in the queue),
# "q" (queue of one request, to provoke UNAVAILABLE).

def _write_model(root, name, batching, seed):
    rng = np.random.default_rng(seed)
    w = lambda *s: rng.uniform(-0.3, 0.3, size=s).astype(np.float32)  # noqa: E731
    h.write_safetensors(os.path.join(root, name, "1", "model.safetensors"), {
        "in_proj_weight": w(3 * D, D), "in_proj_bias": w(3 * D),
        "out_proj.weight": w(D, D), "out_proj.bias": w(D)})
    config = {"num_heads": HEADS, "max_sequence_length": MAX_SEQ}
    if batching:
        config["batching"] = batching
    h.write_config(os.path.join(root, name), config)


def write_repository(root):
    _write_model(root, "m", None, 1)
    # 1 us: a request always waits longer than that for the executor thread
    # to wake up, so it is dropped with DEADLINE_EXCEEDED, never computed.
    _write_model(root, "t", {"default_timeout_us": 1}, 2)
    _write_model(root, "q", {"max_queue_size": 1}, 3)
    return {"m": 1024, "t": 1024, "q": 1}  # queue capacities


# ----------------------------------------------------------------------------
# Server with metrics on a free port.

def free_port():
    """A port that was free a moment ago (the caller retries on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MetricsServer:
    """attn_server on 127.0.0.1 with gRPC on port 0 and /metrics on a free
    port chosen here (retried if another process took it meanwhile)."""

    def __init__(self, model_repository, attempts=5):
        last = None
        for _ in range(attempts):
            self.metrics_port = free_port()
            # The harness adds --metrics_port=0 first; the later flag wins.
            self.server = h.ServerProcess(
                model_repository, [f"--metrics_port={self.metrics_port}", "--threads=1"])
            try:
                self.target = self.server.start()
                return
            except RuntimeError as e:  # e.g. the port was taken: try another
                last = e
                if "metrics" not in str(e):
                    raise
        raise RuntimeError(f"attn_server did not start in {attempts} attempts: {last}")

    @property
    def metrics_url(self):
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def scrape(self):
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            return r.read().decode(), r.headers.get("Content-Type", "")

    def stop(self):
        self.server.stop()


# ----------------------------------------------------------------------------
# Exposition format parsing.

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset(labels.items())): value} and {name: type}."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError(f"unparsable exposition line: {line!r}")
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples, types


def select(samples, name, **labels):
    """{labels-dict-as-frozenset: value} of `name` whose labels include `labels`."""
    want = set(labels.items())
    return {k[1]: v for k, v in samples.items() if k[0] == name and want <= k[1]}


def value(samples, name, **labels):
    """The one sample of `name` with exactly these labels (AssertionError if none)."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        raise AssertionError(f"no sample {name}{labels}")
    return samples[key]


# ----------------------------------------------------------------------------
# Traffic, tallied by what the client saw.

class Tally:
    """Counts answers by (model label, code name), tokens computed per model,
    and requests that reached the executor per model."""

    def __init__(self, known_models):
        self.known = set(known_models)
        self.codes = collections.Counter()
        self.tokens = collections.Counter()
        self.executed = collections.Counter()   # queued: computed or dropped
        self.computed = collections.Counter()   # kernel calls

    def label(self, model):
        return model if model in self.known else "unknown"

    def add(self, model, code, tokens=0):
        label = self.label(model)
        self.codes[(label, code.name)] += 1
        if code == grpc.StatusCode.OK:
            self.tokens[label] += tokens
            self.computed[label] += 1
            self.executed[label] += 1
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            self.executed[label] += 1


def x(rng, *shape):
    return rng.uniform(-1, 1, size=shape).astype(np.float32)


def unary(client, tally, model, query, version=0, timeout=30, **kwargs):
    tokens = query.shape[0] * query.shape[1] if query.ndim == 3 else query.shape[0]
    try:
        client.attend(query, model=model, version=version, timeout=timeout, **kwargs)
        code = grpc.StatusCode.OK
    except grpc.RpcError as e:
        code = e.code()
    tally.add(model, code, tokens)
    return code


def concurrent(client, tally, model, queries, timeout=30):
    """Sends all `queries` at once (futures); returns the codes."""
    stub = client._stub
    futures = [(q, stub.Attend.future(attnserve.Client.build_request(q, model=model),
                                      timeout=timeout)) for q in queries]
    codes = []
    for q, f in futures:
        try:
            f.result()
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        tally.add(model, code, q.shape[0] * q.shape[1])
        codes.append(code)
    return codes


def stream(client, tally, items):
    """items: (model, query); one AttendStream call; tallies each answer."""
    requests = [attnserve.Client.build_request(q, model=m, request_id=str(i))
                for i, (m, q) in enumerate(items)]
    responses = list(client._stub.AttendStream(iter(requests), timeout=60))
    assert len(responses) == len(items), (len(responses), len(items))
    for (m, q), r in zip(items, responses):
        code = grpc.StatusCode.OK
        if r.HasField("error") and r.error.code != 0:
            code = next(c for c in grpc.StatusCode if c.value[0] == r.error.code)
        tally.add(m, code, q.shape[0] * q.shape[1])


def standard_traffic(client, tally, rng, overload_rounds=10):
    """Successes and every error class the server counts. Returns once at
    least one UNAVAILABLE and one DEADLINE_EXCEEDED were seen."""
    for b, s in ((1, 4), (2, 8), (1, 16), (3, 5)):
        assert unary(client, tally, "m", x(rng, b, s, D)) == grpc.StatusCode.OK
    assert unary(client, tally, "m", x(rng, 7, D)) == grpc.StatusCode.OK  # rank 2
    # INVALID_ARGUMENT: wrong width; too long; empty model name (unknown).
    assert unary(client, tally, "m", x(rng, 1, 4, D + 1)) == grpc.StatusCode.INVALID_ARGUMENT
    assert (unary(client, tally, "m", x(rng, 1, MAX_SEQ + 1, D))
            == grpc.StatusCode.INVALID_ARGUMENT)
    assert unary(client, tally, "", x(rng, 1, 4, D)) == grpc.StatusCode.INVALID_ARGUMENT
    # NOT_FOUND: unknown model names (all counted as model="unknown"), and an
    # unknown version of a known model (counted under that model).
    for name in ("nope", "nope2", "Nope", "m2"):
        assert unary(client, tally, name, x(rng, 1, 4, D)) == grpc.StatusCode.NOT_FOUND
    assert unary(client, tally, "m", x(rng, 1, 4, D), version=9) == grpc.StatusCode.NOT_FOUND
    # DEADLINE_EXCEEDED: model "t" drops everything that waited > 1 us.
    for _ in range(3):
        assert (unary(client, tally, "t", x(rng, 1, 4, D))
                == grpc.StatusCode.DEADLINE_EXCEEDED)
    # Streamed requests are counted one by one.
    stream(client, tally, [("m", x(rng, 1, 3, D)), ("m", x(rng, 2, 2, D)),
                           ("m", x(rng, 1, 2, D + 2)), ("zzz", x(rng, 1, 2, D)),
                           ("t", x(rng, 1, 2, D))])
    # UNAVAILABLE: model "q" queues one request; a burst overflows it.
    for _ in range(overload_rounds):
        codes = concurrent(client, tally, "q", [x(rng, 4, MAX_SEQ, D) for _ in range(12)])
        if grpc.StatusCode.UNAVAILABLE in codes:
            break
    assert tally.codes[("q", "UNAVAILABLE")] > 0, "no UNAVAILABLE in the bursts"
    assert tally.codes[("t", "DEADLINE_EXCEEDED")] > 0


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kwargs)
