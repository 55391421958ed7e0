"""The container image, really run: attn_server inside the image (buildah run
--isolation chroot, which shares the host's loopback), clients outside it.

Checks: the image config (non-root USER, EXPOSE, HEALTHCHECK, ENTRYPOINT);
no arguments serve the demo model; `-v DIR:/models --model_repository /models`
serves an exported model whose output matches PyTorch; the process runs as
UID 10001; the HEALTHCHECK command works inside the image; SIGTERM drains
in-flight calls (all answered OK) and the server exits 0; KServe v2 REST
over mutual TLS works from inside the image.

Environment: ATTN_IMAGE (default localhost/attnserve:ci), ATTN_BUILD_DIR
(host build with attn_cli and python/, default build/).
Run by scripts/ci/container.sh after it built the image.
"""
import concurrent.futures
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(os.environ.get("ATTN_BUILD_DIR", os.path.join(ROOT, "build")))
sys.path[:0] = [os.path.join(BUILD, "python"), os.path.join(ROOT, "tests", "integration"),
                os.path.join(ROOT, "tools")]
import attnserve  # noqa: E402
import torch  # noqa: E402

IMAGE = os.environ.get("ATTN_IMAGE", "localhost/attnserve:ci")
STORAGE = ["--storage-driver", "vfs"]
CLI = os.path.join(BUILD, "client", "attn_cli")
IMAGE_UID = 10001
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60
_LISTENING = re.compile(r"^attn_server listening on (\S+):(\d+)\s*$")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def buildah(*args, timeout=120):
    r = subprocess.run(["buildah", *STORAGE, *args], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def children(pid):
    """Direct children of pid, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def find_descendant(pid, comm):
    """The first descendant of pid whose command name is comm, or None."""
    todo = [pid]
    for _ in range(10000):
        if not todo:
            return None
        p = todo.pop()
        for c in children(p):
            try:
                with open(f"/proc/{c}/comm") as f:
                    if f.read().strip() == comm:
                        return c
            except OSError:
                continue
            todo.append(c)
    return None


def proc_uids(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no Uid line for pid {pid}")


class ImageServer:
    """attn_server inside a working container of IMAGE, on 127.0.0.1."""

    def __init__(self, volumes=(), args=()):
        self.volumes = list(volumes)
        self.args = list(args)
        self.container = None
        self.proc = None
        self.pid = None
        self.metrics_port = free_port()
        self.lines = queue.Queue()
        self.stderr = tempfile.TemporaryFile(mode="w+")  # closed by cleanup()

    def start(self):
        self.container = buildah("from", "--pull=never", IMAGE).strip().splitlines()[-1]
        cmd = ["buildah", *STORAGE, "run", "--isolation", "chroot"]
        for v in self.volumes:
            cmd += ["-v", v]
        # The ENTRYPOINT (buildah run does not apply it) with loopback ports
        # that cannot collide with other tests.
        cmd += [self.container, "--", "attn_server", "--host=127.0.0.1", "--port=0",
                f"--metrics_port={self.metrics_port}", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr,
                                     stdin=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"server in image exited {self.proc.wait()} before "
                                     f"listening: {self.stderr_text()}")
            m = _LISTENING.match(line)
            if m:
                self.target = f"127.0.0.1:{m.group(2)}"
                self.pid = find_descendant(self.proc.pid, "attn_server")
                if self.pid is None:
                    raise AssertionError("no attn_server process under buildah run")
                return self.target
        raise AssertionError(f"no listening line in {START_TIMEOUT_S}s: {self.stderr_text()}")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def stderr_text(self):
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def run_in_image(self, *cmd):
        """A second process in the same working container (like HEALTHCHECK)."""
        return subprocess.run(["buildah", *STORAGE, "run", "--isolation", "chroot",
                               self.container, "--", *cmd],
                              capture_output=True, text=True, timeout=60)

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as r:
            return r.read().decode()

    def terminate_and_wait(self):
        """SIGTERM to attn_server inside the container; its exit code."""
        os.kill(self.pid, signal.SIGTERM)
        return self.proc.wait(timeout=STOP_TIMEOUT_S)

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            if self.pid is not None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        if self.container:
            subprocess.run(["buildah", *STORAGE, "rm", self.container],
                           capture_output=True, timeout=120)
        if self.proc is not None:
            self.proc.stdout.close()
        self.stderr.close()


def torch_mha(module, q):
    t = torch.from_numpy(np.asarray(q, dtype=np.float64))
    module = module.double()
    try:
        with torch.no_grad():
            out, _ = module(t, t, t, need_weights=False)
    finally:
        module.float()
    return out.numpy()


class ImageConfigTest(unittest.TestCase):
    def test_config(self):
        info = json.loads(buildah("inspect", "--type", "image", IMAGE))
        docker = info["Docker"]["config"]
        self.assertEqual(docker["User"], f"{IMAGE_UID}:{IMAGE_UID}")
        self.assertEqual(docker["Entrypoint"], ["attn_server"])
        self.assertIn("50051/tcp", docker["ExposedPorts"])
        self.assertIn("9090/tcp", docker["ExposedPorts"])
        health = docker["Healthcheck"]["Test"]
        self.assertEqual(health[:3], ["CMD", "attn_cli", "health"])


class DemoModelTest(unittest.TestCase):
    """No --model_repository: the built-in demo model."""

    def test_demo_model_and_healthcheck(self):
        server = ImageServer()
        try:
            target = server.start()
            r = subprocess.run([CLI, "health", f"--target={target}"], capture_output=True,
                               text=True, timeout=60)
            self.assertEqual((r.returncode, r.stdout.strip()), (0, "SERVING"), r.stderr)
            # The image's HEALTHCHECK command, inside the image.
            r = server.run_in_image("attn_cli", "health", f"--target={target}")
            self.assertEqual((r.returncode, r.stdout.strip()), (0, "SERVING"), r.stderr)
            with attnserve.Client(target) as client:
                names = [m.name for m in client.list_models()]
                self.assertEqual(names, ["demo"])
                x = np.random.default_rng(0).standard_normal((1, 8, 256), dtype=np.float32)
                out = client.attend(x).output
                self.assertEqual(out.shape, (1, 8, 256))
                self.assertTrue(np.isfinite(out).all())
            self.assertEqual(server.terminate_and_wait(), 0, server.stderr_text())
        finally:
            server.cleanup()


class RestTlsTest(unittest.TestCase):
    """KServe v2 REST over mutual TLS from inside the image: the OpenSSL
    compatibility objects are installed where attn_server finds them, and
    curl outside the image gets an answer equal to attn.v1's over TLS."""

    def test_https_with_client_certificate(self):
        import tls_certs
        tmp = tempfile.TemporaryDirectory()
        server = None
        try:
            pki = tls_certs.generate(os.path.join(tmp.name, "pki"))
            for name in os.listdir(pki):  # readable by the image's UID
                os.chmod(os.path.join(pki, name), 0o644)
            os.chmod(pki, 0o755)
            os.chmod(tmp.name, 0o755)
            http_port = free_port()
            server = ImageServer(volumes=[f"{pki}:/pki:ro"], args=[
                f"--http_port={http_port}", "--tls_cert=/pki/server.pem",
                "--tls_key=/pki/server.key", "--tls_client_ca=/pki/ca.pem"])
            target = server.start()
            self.assertIn(f"KServe v2 REST on https://127.0.0.1:{http_port}/v2",
                          server.stderr_text())
            x = np.random.default_rng(4).standard_normal((1, 6, 256), dtype=np.float32)
            body = json.dumps({"inputs": [{"name": "query", "datatype": "FP32",
                                           "shape": list(x.shape),
                                           "data": x.ravel().tolist()}]})
            tls = ["--cacert", f"{pki}/ca.pem", "--cert", f"{pki}/client.pem",
                   "--key", f"{pki}/client.key"]
            url = f"https://127.0.0.1:{http_port}/v2/models/demo/infer"
            r = subprocess.run(["curl", "-sS", "--fail", "--max-time", "30", *tls,
                                "-H", "Content-Type: application/json",
                                "--data-binary", body, url],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr + server.stderr_text())
            out = json.loads(r.stdout)["outputs"][0]
            got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
            with attnserve.Client(target, tls_ca=f"{pki}/ca.pem",
                                  tls_cert=f"{pki}/client.pem", tls_key=f"{pki}/client.key",
                                  tls_server_name=tls_certs.SERVER_NAME) as client:
                np.testing.assert_array_equal(got, client.attend(x).output)
            # Without a client certificate the handshake is refused.
            r = subprocess.run(["curl", "-sS", "--max-time", "30", "--cacert",
                                f"{pki}/ca.pem", url], capture_output=True, text=True,
                               timeout=60)
            self.assertNotEqual(r.returncode, 0, r.stdout)
            self.assertEqual(server.terminate_and_wait(), 0, server.stderr_text())
        finally:
            if server is not None:
                server.cleanup()
            tmp.cleanup()


class ModelVolumeTest(unittest.TestCase):
    """-v DIR:/models --model_repository /models, UID, output and drain."""

    def test_volume_uid_torch_and_drain(self):
        import export_checkpoint
        tmp = tempfile.TemporaryDirectory()
        torch.manual_seed(3)
        mha = torch.nn.MultiheadAttention(128, 4, batch_first=True).eval()
        repo = os.path.join(tmp.name, "models")
        export_checkpoint.export_module(mha, repo, "enc", version=1)
        os.chmod(tmp.name, 0o755)
        server = ImageServer(volumes=[f"{repo}:/models:ro"],
                             args=["--model_repository=/models"])
        try:
            target = server.start()
            uids = proc_uids(server.pid)
            self.assertEqual(uids, [IMAGE_UID] * 4, "attn_server must run as the image's user")
            rng = np.random.default_rng(1)
            q = rng.uniform(-1, 1, (2, 16, 128)).astype(np.float32)
            with attnserve.Client(target) as client:
                out = client.attend(q, model="enc").output
                np.testing.assert_allclose(out, torch_mha(mha, q), atol=1e-4, rtol=0)

                # Drain: calls the server had accepted when SIGTERM arrives are
                # all answered; calls it had not accepted yet may only get
                # UNAVAILABLE "not processed" (safe to retry), never CANCELLED.
                big = rng.uniform(-1, 1, (4, 1024, 128)).astype(np.float32)
                pool = concurrent.futures.ThreadPoolExecutor(8)
                futures = [pool.submit(client.attend, big, model="enc") for _ in range(8)]
                inflight = 0
                for _ in range(500):
                    m = re.search(r"^attn_inflight_requests(?:\{[^}]*\})? (\S+)$",
                                  server.metrics(), re.M)
                    inflight = float(m.group(1)) if m else 0
                    if inflight >= 2:
                        break
                    time.sleep(0.01)
                self.assertGreaterEqual(inflight, 1, "no call was in flight at SIGTERM")
                code = server.terminate_and_wait()
                results, errors = [], []
                for f in futures:
                    try:
                        results.append(f.result(timeout=STOP_TIMEOUT_S))
                    except Exception as e:  # grpc.RpcError: counted, then asserted
                        errors.append(f"{e.code().name}: {e.details()}"
                                      if hasattr(e, "code") else repr(e))
                pool.shutdown()
            self.assertEqual(code, 0, server.stderr_text())
            not_processed = "UNAVAILABLE: server is shutting down; retry on another replica"
            self.assertEqual([e for e in errors if not e.startswith(not_processed)], [],
                             f"calls failed other than as not processed "
                             f"(in flight at signal: {int(inflight)})")
            self.assertGreaterEqual(len(results), int(inflight),
                                    f"accepted calls lost: {errors}")
            for r in results:
                self.assertEqual(r.output.shape, (4, 1024, 128))
            np.testing.assert_allclose(results[0].output, torch_mha(mha, big), atol=1e-4,
                                       rtol=0)
            print(f"container: drain: {len(results)}/8 calls answered OK after SIGTERM, "
                  f"{len(errors)} UNAVAILABLE not processed (accepted at signal: "
                  f"{int(inflight)}), exit code {code}")
        finally:
            server.cleanup()
            tmp.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
