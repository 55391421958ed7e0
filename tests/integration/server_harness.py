"""Shared helpers of the integration tests: run a real attn_server, write
model repositories, and compute PyTorch references.

Environment (set by ctest, see CMakeLists.txt):
  ATTN_SERVER     path of the attn_server binary
  ATTN_CLI        path of the attn_cli binary
  ATTN_TOOLS_DIR  the repository's tools/ directory (export_checkpoint.py)
  PYTHONPATH      must contain <build>/python (the attnserve package)
"""
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

SERVER = os.environ.get("ATTN_SERVER", "")
CLI = os.environ.get("ATTN_CLI", "")
TOOLS_DIR = os.environ.get("ATTN_TOOLS_DIR", "")

STARTUP_TIMEOUT_S = 60
SHUTDOWN_TIMEOUT_S = 30
_LISTENING = re.compile(r"^attn_server listening on (\S+):(\d+)\s*$")

_server_flags = None


def _supported_server_flags():
    """Names of the flags attn_server accepts (from its --helpfull)."""
    global _server_flags
    if _server_flags is None:
        try:
            out = subprocess.run([SERVER, "--helpfull"], capture_output=True, text=True,
                                 timeout=30)
            _server_flags = set(re.findall(r"--([A-Za-z0-9_]+)", out.stdout + out.stderr))
        except (OSError, subprocess.TimeoutExpired):
            _server_flags = set()
    return _server_flags


class ServerProcess:
    """One attn_server subprocess on 127.0.0.1 with a free port.

    start() returns once the server printed its listening line; stop() sends
    SIGTERM and raises AssertionError unless the server exits with code 0.
    """

    def __init__(self, model_repository=None, extra_args=()):
        self.model_repository = model_repository
        self.extra_args = list(extra_args)
        self.proc = None
        self.target = None
        self._stderr = None
        self._lines = queue.Queue()

    def start(self):
        if not SERVER or not os.path.exists(SERVER):
            raise RuntimeError(f"ATTN_SERVER={SERVER!r} is not an attn_server binary")
        args = [SERVER, "--host=127.0.0.1", "--port=0"]
        if "metrics_port" in _supported_server_flags():
            args.append("--metrics_port=0")  # never collide on 9090
        if self.model_repository is not None:
            args.append(f"--model_repository={self.model_repository}")
        args += self.extra_args
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._stderr,
                                     stdin=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise RuntimeError(f"attn_server printed no listening line within "
                                   f"{STARTUP_TIMEOUT_S}s; stderr:\n{self.stderr_text()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
                raise RuntimeError(f"attn_server exited with code {code} before listening "
                                   f"({' '.join(args)}); stderr:\n{self.stderr_text()}")
            match = _LISTENING.match(line)
            if match:
                host = match.group(1)
                if host in ("0.0.0.0", "[::]", "::", "localhost"):
                    host = "127.0.0.1"
                self.target = f"{host}:{match.group(2)}"
                return self.target

    def _read_stdout(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self):
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()

    def stop(self):
        """SIGTERM, then asserts a graceful exit (code 0) within the timeout."""
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            raise AssertionError(f"attn_server died during the test with code "
                                 f"{self.proc.returncode}; stderr:\n{self.stderr_text()}")
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._kill()
            raise AssertionError(f"attn_server did not exit within {SHUTDOWN_TIMEOUT_S}s "
                                 f"of SIGTERM; stderr:\n{self.stderr_text()}")
        if code != 0:
            raise AssertionError(f"attn_server exited with code {code} after SIGTERM "
                                 f"(expected 0); stderr:\n{self.stderr_text()}")


@contextlib.contextmanager
def running_server(model_repository=None, extra_args=()):
    """Yields the "127.0.0.1:PORT" target of a fresh server; always stops it."""
    server = ServerProcess(model_repository, extra_args)
    try:
        yield server.start()
    except BaseException:
        server._kill()
        raise
    server.stop()


# ----------------------------------------------------------------------------
# Model repositories.

def import_exporter():
    """The models engineer's tools/export_checkpoint.py module."""
    if TOOLS_DIR and TOOLS_DIR not in sys.path:
        sys.path.insert(0, TOOLS_DIR)
    import export_checkpoint  # noqa: E402
    return export_checkpoint


def write_safetensors(path, tensors):
    """Writes {name: float32 ndarray} as a safetensors file (independent of
    the exporter, so that the server's reader is checked against the spec)."""
    header = {}
    offset = 0
    blobs = []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def write_config(model_dir, config):
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(config, f)


# ----------------------------------------------------------------------------
# References.

def causal_float_mask(sq, sk):
    """Float mask of the server's causal rule: i attends to j <= i + (sk - sq)."""
    i = np.arange(sq)[:, None]
    j = np.arange(sk)[None, :]
    return np.where(j <= i + (sk - sq), 0.0, -np.inf).astype(np.float32)


def proc_status_bytes(pid, key):
    """A byte figure of /proc/PID/status, e.g. key "VmRSS" or "VmHWM"."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def random_array(rng, *shape):
    return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)


def mt19937_uniform(seed, count):
    """The values of `attn_cli attend --random ... --seed=seed`."""
    bits = np.random.MT19937()
    bits._legacy_seeding(seed)
    raw = bits.random_raw(count).astype(np.uint32)
    return (raw >> 8).astype(np.float32) * np.float32(2.0 / 16777216.0) - np.float32(1.0)


def tear_down_class(cls):
    """The shared tearDownClass of the server test classes: closes cls.client
    (when the class has one), then stops cls.server and removes cls.tmp even
    if stopping fails."""
    client = getattr(cls, "client", None)
    if client is not None:
        client.close()
    try:
        cls.server.stop()
    finally:
        cls.tmp.cleanup()
