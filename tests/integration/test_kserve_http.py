"""KServe v2 / Open Inference Protocol over HTTP/REST against a real attn_server.

Every endpoint is called with http.client (keep-alive) and with curl: JSON
tensors (flat and nested data), the binary tensor data extension
(Inference-Header-Content-Length) in both directions, and every error class
with its exact HTTP status and message. Outputs are compared with the
attn.v1 answer for the same input (equal) and with PyTorch's
nn.MultiheadAttention (1e-4). Separate servers check bearer tokens (401/403,
health open), TLS and mutual TLS (https with CAs made by openssl at test
time, and the refused clients), and drain (readiness 503 while
inference is still answered). attn_protocol_requests_total counts the REST
calls under protocol="kserve_http".
"""
import http.client
import json
import os
import signal
import ssl
import subprocess
import tempfile
import time
import unittest

import grpc
import numpy as np

import attnserve
import server_harness as h
import tls_certs
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from test_kserve_grpc import assert_equals_v1_and_torch, protocol_count
from test_python_client import export, make_mha, torch_reference

TOL = 1e-4
D = 64
TIMEOUT_S = 30
TOKEN = "kserve-http-test-token-0123456789"


def tensor(name, array, datatype=None, nested=False):
    array = np.asarray(array)
    if datatype is None:
        datatype = {np.float32: "FP32", np.bool_: "BOOL", np.int32: "INT32",
                    np.float16: "FP16"}[array.dtype.type]
    data = array.tolist() if nested else array.ravel().tolist()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def binary_body(request, arrays):
    """The binary extension: JSON header, then the raw bytes of `arrays`
    (name -> array) in input order. Returns (body, header_length)."""
    raw = b""
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        dtype = {np.float32: "FP32", np.bool_: "BOOL", np.int32: "INT32",
                 np.float16: "FP16"}[array.dtype.type]
        request.setdefault("inputs", []).append(
            {"name": name, "datatype": dtype, "shape": list(array.shape),
             "parameters": {"binary_data_size": array.nbytes}})
        raw += array.tobytes()
    header = json.dumps(request).encode()
    return header + raw, len(header)


def decode_binary(body, header_length):
    """(json_header, {output name: array}) of a binary answer."""
    doc = json.loads(body[:header_length])
    offset = header_length
    arrays = {}
    for o in doc["outputs"]:
        n = o["parameters"]["binary_data_size"]
        arrays[o["name"]] = np.frombuffer(body[offset:offset + n], "<f4").reshape(o["shape"])
        offset += n
    assert offset == len(body), (offset, len(body))
    return doc, arrays


def json_output(doc, name):
    for o in doc["outputs"]:
        if o["name"] == name:
            return np.asarray(o["data"], dtype=np.float32).reshape(o["shape"])
    raise KeyError(name)


class Http:
    """One keep-alive connection; request() returns (status, headers, body)."""

    def __init__(self, port, context=None, token=None):
        if context is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
        else:
            self.conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=TIMEOUT_S,
                                                    context=context)
        self.token = token

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()

    def json(self, method, path, body=None, headers=None):
        status, _, data = self.request(method, path, body, headers)
        return status, json.loads(data)

    def close(self):
        self.conn.close()


def curl(*args):
    """curl's (http code, body bytes); -s quiet, the code on its own line."""
    r = subprocess.run(["curl", "-sS", "--max-time", str(TIMEOUT_S), "-o", "-",
                        "-w", "\n%{http_code}", *args],
                       capture_output=True, timeout=TIMEOUT_S + 5)
    if r.returncode != 0:
        raise AssertionError(f"curl {args} failed: {r.stderr.decode()}")
    body, _, code = r.stdout.rpartition(b"\n")
    return int(code), body


class KServeHttpTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        repo = cls.tmp.name
        cls.mha = make_mha(21)
        both = {"version_policy": {"all": True}}
        export(cls.mha, repo, "mha64", config_extra=both)
        export(cls.mha, repo, "mha64", version=2, config_extra=both)
        cls.metrics_port = h.free_port()
        cls.http_port = h.free_port()
        cls.server = h.ServerProcess(repo, extra_args=[
            "--threads=1", f"--metrics_port={cls.metrics_port}",
            f"--http_port={cls.http_port}"])
        cls.target = cls.server.start()
        cls.client = attnserve.Client(cls.target)
        cls.base = f"http://127.0.0.1:{cls.http_port}"

    @classmethod
    def tearDownClass(cls):
        h.tear_down_class(cls)

    def setUp(self):
        self.http = Http(self.http_port)

    def tearDown(self):
        self.http.close()

    def assertError(self, status, contains, method, path, body=None, headers=None):
        code, doc = self.http.json(method, path, body, headers)
        self.assertEqual(code, status, doc)
        self.assertEqual(list(doc), ["error"], doc)
        for text in contains:
            self.assertIn(text, doc["error"])
        return doc["error"]

    # -- metadata and health (curl) --------------------------------------------

    def test_curl_health_and_metadata(self):
        self.assertEqual(curl(f"{self.base}/v2/health/live"), (200, b'{"live":true}'))
        self.assertEqual(curl(f"{self.base}/v2/health/ready"), (200, b'{"ready":true}'))
        code, body = curl(f"{self.base}/v2")
        self.assertEqual(code, 200)
        meta = json.loads(body)
        self.assertEqual(meta["name"], "attnserve")
        self.assertIn("binary_tensor_data", meta["extensions"])
        code, body = curl(f"{self.base}/v2/models/mha64")
        self.assertEqual(code, 200)
        model = json.loads(body)
        self.assertEqual(model["name"], "mha64")
        self.assertEqual(model["versions"], ["1", "2"])
        query = [t for t in model["inputs"] if t["name"] == "query"][0]
        self.assertEqual((query["datatype"], query["shape"]), ("FP32", [-1, -1, D]))
        self.assertEqual([t["name"] for t in model["outputs"]],
                         ["output", "attention_weights"])
        for path in ("/v2/models/mha64/ready", "/v2/models/mha64/versions/1/ready",
                     "/v2/models/mha64/versions/2/ready"):
            code, body = curl(self.base + path)
            self.assertEqual((code, json.loads(body)["ready"]), (200, True), path)
        code, body = curl(f"{self.base}/v2/models/mha64/versions/1/config")
        self.assertEqual(code, 200)
        config = json.loads(body)
        self.assertEqual(config["name"], "mha64")
        self.assertGreater(int(config["max_batch_size"]), 0)
        self.assertEqual([i["name"] for i in config["input"]][0], "query")
        code, body = curl(f"{self.base}/v2/models/nope")
        self.assertEqual(code, 404)
        self.assertIn("'nope'", json.loads(body)["error"])
        code, body = curl(f"{self.base}/v2/models/mha64/versions/9/ready")
        self.assertEqual(code, 404)
        self.assertIn("no version 9", json.loads(body)["error"])

    # -- inference ----------------------------------------------------------------

    def test_json_nested_equals_attn_v1_and_torch(self):
        rng = np.random.default_rng(1)
        q = h.random_array(rng, 2, 5, D)
        kv = h.random_array(rng, 2, 7, D)
        lengths = np.array([7, 4], dtype=np.int32)
        body = {"id": "j1", "parameters": {"return_attention_weights": True},
                "inputs": [tensor("query", q, nested=True), tensor("key", kv),
                           tensor("value", kv, nested=True),
                           tensor("key_lengths", lengths)]}
        code, doc = self.http.json("POST", "/v2/models/mha64/infer", body)
        self.assertEqual(code, 200, doc)
        self.assertEqual((doc["model_name"], doc["model_version"], doc["id"]),
                         ("mha64", "2", "j1"))
        self.assertEqual([o["name"] for o in doc["outputs"]], ["output", "attention_weights"])
        # JSON carries the shortest round-trip decimal of every float: equal.
        assert_equals_v1_and_torch(self.client, self.mha, q, kv, lengths,
                                   json_output(doc, "output"),
                                   json_output(doc, "attention_weights"))

    def test_json_rank2_causal_bool_mask_version_1(self):
        rng = np.random.default_rng(2)
        q = h.random_array(rng, 6, D)
        mask = rng.random((6, 6)) < 0.3
        np.fill_diagonal(mask, False)
        body = {"parameters": {"causal": True},
                "inputs": [tensor("query", q), tensor("attn_mask", mask, nested=True)],
                "outputs": [{"name": "output"}]}
        code, doc = self.http.json("POST", "/v2/models/mha64/versions/1/infer", body)
        self.assertEqual(code, 200, doc)
        self.assertEqual(doc["model_version"], "1")
        out = json_output(doc, "output")
        self.assertEqual(out.shape, (6, D))
        v1 = self.client.attend(q, attn_mask=mask, causal=True, model="mha64", version=1)
        np.testing.assert_array_equal(out, v1.output)
        causal = np.triu(np.ones((6, 6), dtype=bool), 1)
        ref_out, _ = torch_reference(self.mha, q[None], attn_mask=mask | causal)
        np.testing.assert_allclose(out, ref_out[0], atol=TOL, rtol=0)

    def test_binary_in_and_out_with_curl(self):
        rng = np.random.default_rng(3)
        q = h.random_array(rng, 1, 9, D)
        body, header_length = binary_body(
            {"parameters": {"binary_data_output": True}}, {"query": q})
        path = os.path.join(self.tmp.name, "binary_request")
        with open(path, "wb") as f:
            f.write(body)
        headers_path = os.path.join(self.tmp.name, "binary_headers")
        code, answer = curl("-X", "POST", "--data-binary", f"@{path}",
                            "-H", "Content-Type: application/octet-stream",
                            "-H", f"Inference-Header-Content-Length: {header_length}",
                            "-D", headers_path, f"{self.base}/v2/models/mha64/infer")
        self.assertEqual(code, 200, answer[:300])
        with open(headers_path) as f:
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in f if ":" in line)}
        doc, arrays = decode_binary(answer, int(headers["inference-header-content-length"]))
        self.assertEqual(doc["outputs"][0]["datatype"], "FP32")
        v1 = self.client.attend(q, model="mha64")
        np.testing.assert_array_equal(arrays["output"], v1.output)
        ref_out, _ = torch_reference(self.mha, q)
        np.testing.assert_allclose(arrays["output"], ref_out, atol=TOL, rtol=0)

    def test_binary_fp16_query_one_binary_output_one_json(self):
        rng = np.random.default_rng(4)
        q = h.random_array(rng, 1, 4, D).astype(np.float16)
        body, header_length = binary_body(
            {"outputs": [{"name": "output", "parameters": {"binary_data": True}},
                         {"name": "attention_weights"}]}, {"query": q})
        status, headers, answer = self.http.request(
            "POST", "/v2/models/mha64/infer", body,
            {"Inference-Header-Content-Length": str(header_length)})
        self.assertEqual(status, 200, answer[:300])
        n = int(headers["inference-header-content-length"])
        doc = json.loads(answer[:n])
        out = np.frombuffer(answer[n:], "<f4").reshape(doc["outputs"][0]["shape"])
        weights = json_output(doc, "attention_weights")
        v1 = self.client.attend(q.astype(np.float32), model="mha64", dtype=np.float16,
                                return_attention_weights=True)
        np.testing.assert_array_equal(out, v1.output)
        np.testing.assert_array_equal(weights, v1.attention_weights)
        ref_out, ref_w = torch_reference(self.mha, q.astype(np.float32))
        np.testing.assert_allclose(weights, ref_w, atol=1e-3, rtol=0)

    def test_keep_alive_serves_many_requests_on_one_connection(self):
        rng = np.random.default_rng(5)
        q = h.random_array(rng, 1, 3, D)
        body = {"inputs": [tensor("query", q)]}
        expected = self.client.attend(q, model="mha64").output
        for _ in range(20):
            code, doc = self.http.json("POST", "/v2/models/mha64/infer", body)
            self.assertEqual(code, 200, doc)
            np.testing.assert_array_equal(json_output(doc, "output"), expected)

    # -- errors -------------------------------------------------------------------

    def test_every_error_class_has_its_http_code(self):
        rng = np.random.default_rng(6)
        q = h.random_array(rng, 1, 3, D)
        infer = "/v2/models/mha64/infer"
        before = protocol_count(self.metrics_port, "kserve_http", "INVALID_ARGUMENT")
        # 400: wrong datatype, shape, byte size, unknown input, missing query.
        self.assertError(400, ["INT8"], "POST", infer,
                         {"inputs": [tensor("query", q) | {"datatype": "INT8"}]})
        self.assertError(400, ["query", "63"], "POST", infer,
                         {"inputs": [tensor("query", q[..., :63])]})
        self.assertError(400, ["query", "191", "192"], "POST", infer,
                         {"inputs": [tensor("query", q) | {"data": q.ravel()[:-1].tolist()}]})
        body, n = binary_body({}, {"query": q})
        self.assertError(400, ["binary_data_size"], "POST", infer, body[:-4],
                         {"Inference-Header-Content-Length": str(n)})
        self.assertError(400, ["belong to no input"], "POST", infer, body + b"xxxx",
                         {"Inference-Header-Content-Length": str(n)})
        self.assertError(400, ["Inference-Header-Content-Length"], "POST", infer, body,
                         {"Inference-Header-Content-Length": "abc"})
        self.assertError(400, ["'bogus'"], "POST", infer,
                         {"inputs": [tensor("query", q), tensor("bogus", q)]})
        self.assertError(400, ["query"], "POST", infer,
                         {"inputs": [tensor("key", q)]})
        self.assertError(400, ["not a JSON object"], "POST", infer, b"{not json")
        self.assertError(400, ["not a number"], "POST", infer,
                         {"inputs": [tensor("query", q) | {"data": ["x"] * (3 * D)}]})
        self.assertError(400, ["causal"], "POST", infer,
                         {"parameters": {"causal": "yes"}, "inputs": [tensor("query", q)]})
        after = protocol_count(self.metrics_port, "kserve_http", "INVALID_ARGUMENT")
        self.assertGreaterEqual(after - before, 8)
        # 404: unknown model or version, unknown path.
        self.assertError(404, ["'nope'", "mha64"], "POST", "/v2/models/nope/infer",
                         {"inputs": [tensor("query", q)]})
        self.assertError(404, ["no version 7", "1, 2"], "POST",
                         "/v2/models/mha64/versions/7/infer",
                         {"inputs": [tensor("query", q)]})
        self.assertError(404, ["/v2/models/mha64/explain"], "GET",
                         "/v2/models/mha64/explain")
        # 400: a version that is no number.
        self.assertError(400, ["version"], "GET", "/v2/models/mha64/versions/x")
        # 405: wrong method.
        self.assertError(405, ["POST"], "GET", infer)
        self.assertError(405, ["GET"], "POST", "/v2/models/mha64", {})

    def test_protocol_metric_counts_rest_calls(self):
        before = protocol_count(self.metrics_port, "kserve_http", "OK")
        q = h.random_array(np.random.default_rng(7), 1, 2, D)
        for _ in range(3):
            code, _ = self.http.json("POST", "/v2/models/mha64/infer",
                                     {"inputs": [tensor("query", q)]})
            self.assertEqual(code, 200)
        self.assertEqual(protocol_count(self.metrics_port, "kserve_http", "OK") - before, 3)


class KServeHttpSecurityTest(unittest.TestCase):
    """Bearer tokens on the REST port, the same as on the gRPC port."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.tokens = os.path.join(cls.tmp.name, "tokens")
        with open(cls.tokens, "w") as f:
            f.write(f"{TOKEN}\n")
        cls.http_port = h.free_port()
        cls.server = h.ServerProcess(extra_args=[
            "--threads=1", f"--http_port={cls.http_port}", "--auth_token_file", cls.tokens])
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        h.tear_down_class(cls)

    def test_tokens(self):
        q = h.random_array(np.random.default_rng(8), 1, 4, 256)
        body = {"inputs": [tensor("query", q)]}
        base = f"http://127.0.0.1:{self.http_port}"
        anonymous = Http(self.http_port)
        try:
            # Health is open; everything else needs the token.
            self.assertEqual(anonymous.json("GET", "/v2/health/ready"), (200, {"ready": True}))
            self.assertEqual(anonymous.json("GET", "/v2/health/live"), (200, {"live": True}))
            code, doc = anonymous.json("POST", "/v2/models/demo/infer", body)
            self.assertEqual(code, 401, doc)
            self.assertIn("Authorization: Bearer", doc["error"])
            code, doc = anonymous.json("GET", "/v2/models/demo",
                                       headers={"Authorization": "Basic abc"})
            self.assertEqual(code, 401, doc)
            self.assertIn("malformed", doc["error"])
            code, doc = anonymous.json("GET", "/v2", headers={"Authorization": "Bearer wrong"})
            self.assertEqual(code, 403, doc)
            self.assertIn("not accepted", doc["error"])
        finally:
            anonymous.close()
        authorized = Http(self.http_port, token=TOKEN)
        try:
            code, doc = authorized.json("POST", "/v2/models/demo/infer", body)
            self.assertEqual(code, 200, doc)
            with attnserve.Client(self.server.target, auth_token=TOKEN) as c:
                expected = c.attend(q, timeout=TIMEOUT_S).output
            np.testing.assert_array_equal(json_output(doc, "output"), expected)
        finally:
            authorized.close()
        code, out = curl("-H", f"Authorization: Bearer {TOKEN}", f"{base}/v2/models/demo/ready")
        self.assertEqual((code, json.loads(out)["ready"]), (200, True))
        code, out = curl(f"{base}/v2/models/demo/ready")
        self.assertEqual(code, 401, out)


class KServeHttpTlsTest(unittest.TestCase):
    """REST over TLS and mutual TLS (--tls_cert/--tls_key/--tls_client_ca,
    the gRPC port's flags) with certificates generated by openssl now: an
    authorized https call answers what attn.v1 over TLS answers; a plaintext
    client, a client without a certificate, one with a certificate of another
    CA, and one that trusts another CA are all refused, through http.client
    and curl."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.pki = tls_certs.generate(os.path.join(cls.tmp.name, "pki"))
        cls.tokens = os.path.join(cls.tmp.name, "tokens")
        with open(cls.tokens, "w") as f:
            f.write(f"{TOKEN}\n")
        cls.http_port = h.free_port()
        cls.server = h.ServerProcess(extra_args=[
            "--threads=1", f"--http_port={cls.http_port}", "--auth_token_file", cls.tokens,
            f"--tls_cert={cls.file('server.pem')}", f"--tls_key={cls.file('server.key')}",
            f"--tls_client_ca={cls.file('ca.pem')}"])
        cls.server.start()
        cls.base = f"https://127.0.0.1:{cls.http_port}"

    @classmethod
    def tearDownClass(cls):
        h.tear_down_class(cls)

    @classmethod
    def file(cls, name):
        return os.path.join(cls.pki, name)

    def context(self, ca="ca.pem", client="client"):
        ctx = ssl.create_default_context(cafile=self.file(ca))
        if client is not None:
            ctx.load_cert_chain(self.file(f"{client}.pem"), self.file(f"{client}.key"))
        return ctx

    def test_https_with_client_certificate_answers_as_attn_v1(self):
        self.assertIn(f"KServe v2 REST on https://127.0.0.1:{self.http_port}/v2",
                      self.server.stderr_text())
        q = h.random_array(np.random.default_rng(12), 1, 5, 256)
        conn = Http(self.http_port, context=self.context(), token=TOKEN)
        try:
            self.assertEqual(conn.json("GET", "/v2/health/ready"), (200, {"ready": True}))
            code, doc = conn.json("POST", "/v2/models/demo/infer",
                                  {"inputs": [tensor("query", q)]})
            self.assertEqual(code, 200, doc)
            # Keep-alive: a second call on the same TLS connection.
            code, again = conn.json("POST", "/v2/models/demo/infer",
                                    {"inputs": [tensor("query", q)]})
            self.assertEqual(code, 200, again)
        finally:
            conn.close()
        with attnserve.Client(self.server.target, tls_ca=self.file("ca.pem"),
                              tls_cert=self.file("client.pem"),
                              tls_key=self.file("client.key"),
                              tls_server_name=tls_certs.SERVER_NAME,
                              auth_token=TOKEN) as c:
            expected = c.attend(q, timeout=TIMEOUT_S).output
        np.testing.assert_array_equal(json_output(doc, "output"), expected)
        np.testing.assert_array_equal(json_output(again, "output"), expected)
        code, out = curl("--cacert", self.file("ca.pem"), "--cert", self.file("client.pem"),
                         "--key", self.file("client.key"),
                         "-H", f"Authorization: Bearer {TOKEN}", f"{self.base}/v2/models/demo")
        self.assertEqual(code, 200, out)
        self.assertEqual(json.loads(out)["name"], "demo")
        # The token is still checked behind TLS.
        code, out = curl("--cacert", self.file("ca.pem"), "--cert", self.file("client.pem"),
                         "--key", self.file("client.key"), f"{self.base}/v2/models/demo")
        self.assertEqual(code, 401, out)

    def assert_refused(self, context, plaintext=False):
        conn = Http(self.http_port, context=None if plaintext else context, token=TOKEN)
        try:
            with self.assertRaises((ssl.SSLError, ConnectionError,
                                    http.client.HTTPException)) as caught:
                conn.json("GET", "/v2/health/live")
            return caught.exception
        finally:
            conn.close()

    def test_refused_clients(self):
        # No client certificate: the server requires one.
        self.assert_refused(self.context(client=None))
        # A client certificate signed by another CA.
        self.assert_refused(self.context(client="other_client"))
        # A client that trusts another CA rejects the server's certificate.
        e = self.assert_refused(self.context(ca="other_ca.pem"))
        self.assertIsInstance(e, ssl.SSLCertVerificationError)
        # Plaintext HTTP on the TLS port gets no HTTP answer.
        self.assert_refused(None, plaintext=True)
        url = f"{self.base}/v2/health/live"
        for args in (["--cacert", self.file("ca.pem"), url],
                     ["--cacert", self.file("ca.pem"), "--cert", self.file("other_client.pem"),
                      "--key", self.file("other_client.key"), url],
                     ["--cacert", self.file("other_ca.pem"), "--cert", self.file("client.pem"),
                      "--key", self.file("client.key"), url],
                     [f"http://127.0.0.1:{self.http_port}/v2/health/live"]):
            with self.assertRaisesRegex(AssertionError, "failed"):
                curl(*args)
        # The server goes on serving authorized clients.
        conn = Http(self.http_port, context=self.context())
        try:
            self.assertEqual(conn.json("GET", "/v2/health/live"), (200, {"live": True}))
        finally:
            conn.close()


class KServeHttpServerTlsOnlyTest(unittest.TestCase):
    """Without --tls_client_ca a client needs no certificate, only to trust
    the server's CA; a bad --tls_key stops the start with a message."""

    def test_server_tls_without_client_certificates(self):
        with tempfile.TemporaryDirectory() as tmp:
            pki = tls_certs.generate(os.path.join(tmp, "pki"))
            http_port = h.free_port()
            server = h.ServerProcess(extra_args=[
                "--threads=1", f"--http_port={http_port}",
                f"--tls_cert={os.path.join(pki, 'server.pem')}",
                f"--tls_key={os.path.join(pki, 'server.key')}"])
            server.start()
            try:
                q = h.random_array(np.random.default_rng(13), 1, 3, 256)
                code, out = curl("--cacert", os.path.join(pki, "ca.pem"),
                                 "-H", "Content-Type: application/json", "--data-binary",
                                 json.dumps({"inputs": [tensor("query", q)]}),
                                 f"https://127.0.0.1:{http_port}/v2/models/demo/infer")
                self.assertEqual(code, 200, out)
                with attnserve.Client(server.target, tls_ca=os.path.join(pki, "ca.pem"),
                                      tls_server_name=tls_certs.SERVER_NAME) as c:
                    expected = c.attend(q, timeout=TIMEOUT_S).output
                np.testing.assert_array_equal(json_output(json.loads(out), "output"),
                                              expected)
            finally:
                server.stop()
            # A key that does not belong to the certificate.
            r = subprocess.run([h.SERVER, "--host=127.0.0.1", "--port=0", "--metrics_port=0",
                                f"--http_port={h.free_port()}",
                                f"--tls_cert={os.path.join(pki, 'server.pem')}",
                                f"--tls_key={os.path.join(pki, 'other_server.key')}"],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("--tls_key", r.stderr)
            self.assertEqual(r.stdout, "")  # never listened


class KServeHttpDrainTest(unittest.TestCase):
    def test_not_ready_during_drain_delay_while_infer_succeeds(self):
        http_port = h.free_port()
        server = h.ServerProcess(extra_args=["--drain_delay_s=3", "--threads=1",
                                             f"--http_port={http_port}"])
        target = server.start()
        q = h.random_array(np.random.default_rng(9), 1, 4, 256)
        body = {"inputs": [tensor("query", q)]}
        conn = Http(http_port)
        try:
            with grpc.insecure_channel(target) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                self.assertTrue(stub.ServerReady(pb.ServerReadyRequest(),
                                                 timeout=TIMEOUT_S).ready)
                self.assertEqual(conn.json("GET", "/v2/models/demo/ready")[0], 200)
                server.proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 2
                while conn.json("GET", "/v2/health/ready")[0] == 200:
                    self.assertLess(time.monotonic(), deadline, "ready stayed 200")
                    time.sleep(0.02)
                self.assertEqual(conn.json("GET", "/v2/health/ready"), (503, {"ready": False}))
                self.assertEqual(conn.json("GET", "/v2/models/demo/ready"),
                                 (503, {"name": "demo", "ready": False}))
                self.assertEqual(conn.json("GET", "/v2/health/live"), (200, {"live": True}))
                self.assertFalse(stub.ServerReady(pb.ServerReadyRequest(),
                                                  timeout=TIMEOUT_S).ready)
                self.assertFalse(stub.ModelReady(pb.ModelReadyRequest(name="demo"),
                                                 timeout=TIMEOUT_S).ready)
                # Still answering during the delay, over both transports.
                code, doc = conn.json("POST", "/v2/models/demo/infer", body)
                self.assertEqual(code, 200, doc)
                self.assertEqual(json_output(doc, "output").shape, (1, 4, 256))
                r = pb.ModelInferRequest(model_name="demo")
                r.inputs.add(name="query", datatype="FP32", shape=[1, 4, 256])
                r.raw_input_contents.append(q.astype(np.float32).tobytes())
                self.assertEqual(len(stub.ModelInfer(r, timeout=TIMEOUT_S).outputs), 1)
                self.assertIsNone(server.proc.poll())
            conn.close()
            self.assertEqual(server.proc.wait(timeout=h.SHUTDOWN_TIMEOUT_S), 0)
        finally:
            conn.close()
            server._kill()


if __name__ == "__main__":
    unittest.main()
