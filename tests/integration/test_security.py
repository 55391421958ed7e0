"""TLS, mutual TLS and bearer tokens through the real attn_server binary, with
the Python client, attn_cli and attn_loadgen. Certificates are generated at
test time with openssl (tls_certs.py); every server listens on 127.0.0.1 and
is stopped by the test.

Servers:
  mtls   --tls_cert/--tls_key/--tls_client_ca + --auth_token_file
  tls    --tls_cert/--tls_key (server authentication only)
  plain  --auth_token_file over plaintext (tokens without TLS), the
         reference output, and the metrics/log checks
"""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

import grpc
import numpy as np

import attnserve
import server_harness as h
import tls_certs

LOADGEN = os.path.join(os.path.dirname(h.CLI), "loadgen", "attn_loadgen")
TOOL_TIMEOUT_S = 60
TOKEN = "tok-alpha-7f3c9e21d8"
OTHER_TOKEN = "tok-beta-0b6a44c5e9"  # in no file at first
CALL_TIMEOUT_S = 10
_METRICS = re.compile(r"Prometheus metrics on (http://\S+/metrics)")

# Wire bytes of grpc.reflection.v1alpha.ServerReflectionRequest{list_services: ""}.
_LIST_SERVICES = b"\x3a\x00"
_REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def free_port():
    """A port free on 127.0.0.1 right now (for --metrics_port, which turns
    metrics off at 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_same_output(actual, expected):
    """Equal up to fp32 rounding: batching may merge requests into one kernel
    call, which changes the GEMM blocking (not the result beyond ~1 ulp)."""
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)


def metrics_text(server):
    match = _METRICS.search(server.stderr_text())
    assert match, server.stderr_text()
    with urllib.request.urlopen(match.group(1), timeout=CALL_TIMEOUT_S) as r:
        return r.read().decode()


def rejected(text, reason):
    m = re.search(r'^attn_auth_rejected_total\{reason="%s"\} (\S+)$' % reason, text, re.M)
    assert m, text
    return float(m.group(1))


def reflection_services(channel, metadata=None):
    call = channel.stream_stream(_REFLECTION, request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)
    responses = list(call(iter([_LIST_SERVICES]), metadata=metadata, timeout=CALL_TIMEOUT_S))
    return b"".join(responses)


class SecurityTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        cls.pki = tls_certs.generate(os.path.join(d, "pki"))
        cls.tokens = os.path.join(d, "tokens")
        with open(cls.tokens, "w") as f:
            f.write(f"# accepted bearer tokens\n\n{TOKEN}\n")
        cls.token_file = os.path.join(d, "client_token")
        with open(cls.token_file, "w") as f:
            f.write(f"# the client's token\n{TOKEN}\n")
        p = cls.p
        cls.servers = []
        cls.mtls = cls._start(["--tls_cert", p("server.pem"), "--tls_key", p("server.key"),
                               "--tls_client_ca", p("ca.pem"), "--auth_token_file", cls.tokens,
                               f"--metrics_port={free_port()}"])
        cls.tls = cls._start(["--tls_cert", p("server.pem"), "--tls_key", p("server.key")])
        cls.plain = cls._start(["--auth_token_file", cls.tokens,
                                 f"--metrics_port={free_port()}"])
        cls.query = h.random_array(np.random.default_rng(7), 2, 5, 256)
        with attnserve.Client(cls.plain.target, auth_token=TOKEN) as c:
            cls.expected = c.attend(cls.query, timeout=CALL_TIMEOUT_S).output

    @classmethod
    def _start(cls, args):
        server = h.ServerProcess(extra_args=args)
        cls.servers.append(server)
        try:
            server.start()
        except BaseException:
            cls._stop_all()
            raise
        return server

    @classmethod
    def _stop_all(cls):
        errors = []
        for server in cls.servers:
            try:
                server.stop()
            except AssertionError as e:
                errors.append(e)
        cls.servers = []
        cls.tmp.cleanup()
        if errors:
            raise errors[0]

    @classmethod
    def tearDownClass(cls):
        cls._stop_all()

    @classmethod
    def p(cls, name):
        return os.path.join(cls.pki, name)

    def mtls_client(self, **kw):
        args = dict(tls_ca=self.p("ca.pem"), tls_cert=self.p("client.pem"),
                    tls_key=self.p("client.key"), auth_token=TOKEN)
        args.update(kw)
        return attnserve.Client(self.mtls.target, **{k: v for k, v in args.items() if v})

    def assert_code(self, code, fn):
        with self.assertRaises(grpc.RpcError) as ctx:
            fn()
        self.assertEqual(ctx.exception.code(), code, ctx.exception.details())
        return ctx.exception.details() or ""

    # --- TLS and mTLS, Python client -------------------------------------

    def test_mtls_call_works_and_matches_plaintext(self):
        with self.mtls_client() as c:
            out = c.attend(self.query, timeout=CALL_TIMEOUT_S).output
            assert_same_output(out, self.expected)
            results = list(c.attend_stream([c.build_request(self.query)] * 3,
                                           timeout=CALL_TIMEOUT_S))
            self.assertEqual(len(results), 3)
            assert_same_output(results[2].output, self.expected)

    def test_server_name_override(self):
        with self.mtls_client(tls_server_name=tls_certs.SERVER_NAME) as c:
            assert_same_output(c.attend(self.query, timeout=CALL_TIMEOUT_S).output,
                                          self.expected)

    def test_tls_without_client_ca_needs_no_client_certificate(self):
        with attnserve.Client(self.tls.target, tls_ca=self.p("ca.pem")) as c:
            self.assertEqual(c.health(timeout=CALL_TIMEOUT_S), "SERVING")
            assert_same_output(c.attend(self.query, timeout=CALL_TIMEOUT_S).output,
                                          self.expected)

    def test_plaintext_client_against_tls_server(self):
        for server in (self.tls, self.mtls):
            with attnserve.Client(server.target) as c:
                self.assert_code(grpc.StatusCode.UNAVAILABLE,
                                 lambda: c.health(timeout=CALL_TIMEOUT_S))

    def test_tls_client_against_plaintext_server(self):
        with attnserve.Client(self.plain.target, tls_ca=self.p("ca.pem")) as c:
            self.assert_code(grpc.StatusCode.UNAVAILABLE, lambda: c.health(timeout=CALL_TIMEOUT_S))

    def test_mtls_without_client_certificate(self):
        with self.mtls_client(tls_cert=None, tls_key=None) as c:
            self.assert_code(grpc.StatusCode.UNAVAILABLE, lambda: c.health(timeout=CALL_TIMEOUT_S))

    def test_mtls_client_certificate_from_another_ca(self):
        with self.mtls_client(tls_cert=self.p("other_client.pem"),
                              tls_key=self.p("other_client.key")) as c:
            self.assert_code(grpc.StatusCode.UNAVAILABLE, lambda: c.health(timeout=CALL_TIMEOUT_S))

    def test_server_certificate_from_another_ca(self):
        with attnserve.Client(self.tls.target, tls_ca=self.p("other_ca.pem")) as c:
            details = self.assert_code(grpc.StatusCode.UNAVAILABLE,
                                       lambda: c.health(timeout=CALL_TIMEOUT_S))
            self.assertIn("certificate verify failed", details)

    def test_wrong_server_name(self):
        with attnserve.Client(self.tls.target, tls_ca=self.p("ca.pem"),
                              tls_server_name="wrong.example") as c:
            details = self.assert_code(grpc.StatusCode.UNAVAILABLE,
                                       lambda: c.health(timeout=CALL_TIMEOUT_S))
            self.assertIn("wrong.example", details)

    def test_unreadable_client_file_is_a_clear_error(self):
        with self.assertRaisesRegex(ValueError, "tls_ca=.*nope.pem: cannot read"):
            attnserve.Client(self.tls.target, tls_ca=self.p("nope.pem"))

    # --- tokens -----------------------------------------------------------

    def test_token_matrix(self):
        for server, kw in ((self.plain, {}), (self.mtls, None)):
            make = ((lambda **k: attnserve.Client(server.target, **k)) if kw is not None
                    else (lambda **k: self.mtls_client(**{"auth_token": None, **k})))
            with make() as c:  # no token
                details = self.assert_code(grpc.StatusCode.UNAUTHENTICATED,
                                           lambda: c.list_models(timeout=CALL_TIMEOUT_S))
                self.assertIn("authorization", details)
                self.assertEqual(c.health(timeout=CALL_TIMEOUT_S), "SERVING")
                for header in ("Basic abc", "Bearer", "Bearer two words", TOKEN):
                    self.assert_code(grpc.StatusCode.UNAUTHENTICATED, lambda: c._stub.ListModels(
                        attnserve.attention_pb2.ListModelsRequest(),
                        metadata=[("authorization", header)], timeout=CALL_TIMEOUT_S))
                self.assert_code(grpc.StatusCode.UNAUTHENTICATED, lambda: c._stub.ListModels(
                    attnserve.attention_pb2.ListModelsRequest(),
                    metadata=[("authorization", f"Bearer {TOKEN}"),
                              ("authorization", f"Bearer {TOKEN}")], timeout=CALL_TIMEOUT_S))
            with make(auth_token=OTHER_TOKEN) as c:
                details = self.assert_code(grpc.StatusCode.PERMISSION_DENIED,
                                           lambda: c.attend(self.query, timeout=CALL_TIMEOUT_S))
                self.assertNotIn(OTHER_TOKEN, details)
                self.assert_code(grpc.StatusCode.PERMISSION_DENIED, lambda: list(c.attend_stream(
                    [c.build_request(self.query)], timeout=CALL_TIMEOUT_S)))
            with make(auth_token=TOKEN) as c:
                self.assertEqual(len(c.list_models(timeout=CALL_TIMEOUT_S)), 1)
                assert_same_output(
                    c.attend(self.query, timeout=CALL_TIMEOUT_S).output, self.expected)

    def test_reflection_requires_token(self):
        channel = grpc.insecure_channel(self.plain.target)
        try:
            with self.assertRaises(grpc.RpcError) as ctx:
                reflection_services(channel)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            with self.assertRaises(grpc.RpcError) as ctx:
                reflection_services(channel, [("authorization", f"Bearer {OTHER_TOKEN}")])
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
            listing = reflection_services(channel, [("authorization", f"Bearer {TOKEN}")])
            self.assertIn(b"attn.v1.AttentionService", listing)
        finally:
            channel.close()

    def test_rejections_are_counted_and_tokens_never_leak(self):
        before = {r: rejected(metrics_text(self.plain), r)
                  for r in ("missing", "malformed", "unknown_token")}
        with attnserve.Client(self.plain.target) as c:
            for _ in range(3):
                self.assert_code(grpc.StatusCode.UNAUTHENTICATED,
                                 lambda: c.list_models(timeout=CALL_TIMEOUT_S))
            self.assert_code(grpc.StatusCode.UNAUTHENTICATED, lambda: c._stub.ListModels(
                attnserve.attention_pb2.ListModelsRequest(),
                metadata=[("authorization", f"Token {OTHER_TOKEN}")], timeout=CALL_TIMEOUT_S))
        with attnserve.Client(self.plain.target, auth_token=OTHER_TOKEN) as c:
            for _ in range(2):
                self.assert_code(grpc.StatusCode.PERMISSION_DENIED,
                                 lambda: c.list_models(timeout=CALL_TIMEOUT_S))
        text = metrics_text(self.plain)
        self.assertEqual(rejected(text, "missing") - before["missing"], 3)
        self.assertEqual(rejected(text, "malformed") - before["malformed"], 1)
        self.assertEqual(rejected(text, "unknown_token") - before["unknown_token"], 2)
        for server in (self.plain, self.mtls):
            for secret in (TOKEN, OTHER_TOKEN):
                self.assertNotIn(secret, server.stderr_text())
                self.assertNotIn(secret, metrics_text(server))

    # --- attn_cli and attn_loadgen ---------------------------------------

    def cli_tls_args(self, server):
        return [f"--target={server.target}", f"--tls_ca={self.p('ca.pem')}",
                f"--tls_cert={self.p('client.pem')}", f"--tls_key={self.p('client.key')}"]

    def test_cli_over_mtls_with_token(self):
        r = run(h.CLI, "models", *self.cli_tls_args(self.mtls), f"--auth_token_file={self.token_file}")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("demo", r.stdout)
        r = run(h.CLI, "attend", *self.cli_tls_args(self.mtls),
                f"--auth_token_file={self.token_file}", "--random=1,4,256")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run(h.CLI, "models", *self.cli_tls_args(self.mtls))
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAUTHENTICATED", r.stderr)
        r = run(h.CLI, "health", *self.cli_tls_args(self.mtls))  # health: no token needed
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_cli_failures_name_the_cause(self):
        cases = [
            ([f"--target={self.mtls.target}"], "--tls_ca"),  # plaintext to TLS
            ([f"--target={self.mtls.target}", f"--tls_ca={self.p('ca.pem')}"], "--tls_client_ca"),
            ([f"--target={self.tls.target}", f"--tls_ca={self.p('other_ca.pem')}"],
             "not signed by --tls_ca"),
            ([f"--target={self.tls.target}", f"--tls_ca={self.p('ca.pem')}",
              "--tls_server_name=wrong.example"], "--tls_server_name"),
        ]
        for args, hint in cases:
            r = run(h.CLI, "health", "--deadline_ms=5000", *args)
            self.assertEqual(r.returncode, 1, (args, r.stderr))
            self.assertIn("UNAVAILABLE", r.stderr)
            self.assertIn(hint, r.stderr)
        r = run(h.CLI, "health", f"--target={self.tls.target}", f"--tls_ca={self.p('ca.pem')}",
                f"--tls_cert={self.p('client.pem')}", f"--tls_key={self.p('other_client.key')}")
        self.assertEqual(r.returncode, 2)
        self.assertIn("is not the private key of --tls_cert", r.stderr)

    def test_loadgen_over_mtls_with_token(self):
        report = os.path.join(self.tmp.name, "loadgen.json")
        r = run(LOADGEN, *self.cli_tls_args(self.mtls), f"--auth_token_file={self.token_file}",
                "--requests=40", "--concurrency=2", "--warmup=0s", "--quiet", f"--json={report}")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(report) as f:
            step = json.load(f)["steps"][0]
        self.assertEqual(step["sent"], 40)
        self.assertEqual(step["ok"], 40)
        self.assertEqual(step["errors"], 0)
        r = run(LOADGEN, f"--target={self.mtls.target}", "--requests=5", "--warmup=0s", "--quiet")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("UNAVAILABLE", r.stderr)
        self.assertIn("--tls_ca", r.stderr)


class TokenReloadTest(unittest.TestCase):
    """SIGHUP re-reads --auth_token_file: a token added is accepted, a token
    removed is refused, and an unreadable file keeps the tokens in force."""

    def test_sighup_adds_and_removes_tokens(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "tokens")
            with open(path, "w") as f:
                f.write(f"{TOKEN}\n")
            server = h.ServerProcess(extra_args=["--auth_token_file", path])
            server.start()
            try:
                self._exercise(server, path)
            except BaseException:
                server._kill()
                raise
            server.stop()
            self.assertNotIn(TOKEN, server.stderr_text())
            self.assertNotIn(OTHER_TOKEN, server.stderr_text())

    def _code(self, target, token):
        with attnserve.Client(target, auth_token=token) as c:
            try:
                c.list_models(timeout=CALL_TIMEOUT_S)
                return grpc.StatusCode.OK
            except grpc.RpcError as e:
                return e.code()

    def _reload(self, server, content, reloads):
        path = server.extra_args[1]
        if content is None:
            os.remove(path)
        else:
            with open(path + ".new", "w") as f:
                f.write(content)
            os.replace(path + ".new", path)  # atomic, as a secret mount updates
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while server.stderr_text().count("SIGHUP:") < reloads:
            self.assertLess(time.monotonic(), deadline, server.stderr_text())
            time.sleep(0.05)

    def _exercise(self, server, path):
        t = server.target
        self.assertEqual(self._code(t, TOKEN), grpc.StatusCode.OK)
        self.assertEqual(self._code(t, OTHER_TOKEN), grpc.StatusCode.PERMISSION_DENIED)
        self._reload(server, f"# rotation\n{TOKEN}\n{OTHER_TOKEN}\n", 1)
        self.assertIn("reloaded 2 token(s)", server.stderr_text())
        self.assertEqual(self._code(t, TOKEN), grpc.StatusCode.OK)
        self.assertEqual(self._code(t, OTHER_TOKEN), grpc.StatusCode.OK)
        self._reload(server, f"{OTHER_TOKEN}\n", 2)
        self.assertEqual(self._code(t, TOKEN), grpc.StatusCode.PERMISSION_DENIED)
        self.assertEqual(self._code(t, OTHER_TOKEN), grpc.StatusCode.OK)
        self._reload(server, None, 3)  # unreadable: the previous tokens stay
        self.assertIn("keeping the previous tokens", server.stderr_text())
        self.assertEqual(self._code(t, OTHER_TOKEN), grpc.StatusCode.OK)
        self.assertEqual(self._code(t, TOKEN), grpc.StatusCode.PERMISSION_DENIED)
        self.assertTrue(server.alive())


class StartupErrorTest(unittest.TestCase):
    """Bad TLS or token files stop the server at start-up with exit code 1
    and a message naming the flag and the problem."""

    def test_bad_files(self):
        with tempfile.TemporaryDirectory() as d:
            pki = tls_certs.generate(os.path.join(d, "pki"))
            p = lambda n: os.path.join(pki, n)  # noqa: E731
            empty = os.path.join(d, "empty_tokens")
            with open(empty, "w") as f:
                f.write("# nothing\n\n")
            spaced = os.path.join(d, "spaced_tokens")
            with open(spaced, "w") as f:
                f.write("ok-token\nsecret with-space\n")
            cases = [
                (["--tls_cert", p("server.pem"), "--tls_key", p("client.key")],
                 "is not the private key of --tls_cert"),
                (["--tls_cert", p("missing.pem"), "--tls_key", p("server.key")],
                 "--tls_cert=.*missing.pem: cannot read"),
                (["--tls_cert", p("server.key"), "--tls_key", p("server.key")],
                 "no PEM certificate"),
                (["--tls_cert", p("server.pem"), "--tls_key", p("server.pem")],
                 "no unencrypted PEM private key"),
                (["--tls_cert", p("server.pem")], "--tls_cert and --tls_key go together"),
                (["--tls_client_ca", p("ca.pem")], "--tls_client_ca needs TLS"),
                (["--tls_cert", p("server.pem"), "--tls_key", p("server.key"),
                  "--tls_client_ca", p("ca.key")], "--tls_client_ca=.*no PEM certificate"),
                (["--auth_token_file", os.path.join(d, "none")], "--auth_token_file=.*cannot read"),
                (["--auth_token_file", empty], "holds no token"),
                (["--auth_token_file", spaced], "line 2: a token may not contain whitespace"),
            ]
            for args, message in cases:
                r = run(h.SERVER, "--host=127.0.0.1", "--port=0", "--metrics_port=0", *args)
                self.assertEqual(r.returncode, 1, (args, r.stderr))
                self.assertRegex(r.stderr, message)
                self.assertNotIn("with-space", r.stderr)
                self.assertNotIn("listening", r.stdout)


if __name__ == "__main__":
    unittest.main()
