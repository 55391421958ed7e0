"""attn_loadgen against a real attn_server on 127.0.0.1.

Checks that the counts add up (sent = ok + errors, with NOT_FOUND and
DEADLINE_EXCEEDED runs), that the JSON follows the schema documented in
docs/loadgen.md at every step, that the open loop achieves its rate within
5% when the server keeps up, sweeps, unary and stream modes, the progress
line (only on a TTY), and that the HTML report renders in headless Chromium
to a PNG that is not blank.

Environment (set by ctest): ATTN_SERVER, ATTN_LOADGEN, ATTN_CHROMIUM and
PYTHONPATH containing tests/integration (server_harness).
Run one class: test_loadgen.py LoadgenUnaryTest
"""
import csv
import json
import os
import re
import pty
import select
import struct
import subprocess
import tempfile
import time
import unittest
import urllib.request
import zlib

import server_harness as h

LOADGEN = os.environ.get("ATTN_LOADGEN", "")
CHROMIUM = os.environ.get("ATTN_CHROMIUM", "/usr/bin/chromium")
RUN_TIMEOUT_S = 60

# The documented per-step schema (docs/loadgen.md): key -> type check.
NUMBER = (int, float)
STEP_SCHEMA = {
    "label": str, "mode": str, "windows": int, "windows_merged": int,
    "stable": bool, "over_latency_limit": bool, "duration_s": NUMBER,
    "sent": int, "ok": int, "errors": int, "late_sends": int,
    "late_send_share": NUMBER, "requests_per_second": NUMBER,
    "sent_per_second": NUMBER, "tokens_per_second": NUMBER,
    "latency_us": dict, "latency_percentiles_us": list, "send_lag_us": dict,
    "status_counts": dict, "server_timing_us": dict,
}
LATENCY_KEYS = ("count", "min", "mean", "p50", "p90", "p95", "p99", "p999", "max")
STATUS_NAMES = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}


def is_type(value, kind):
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == NUMBER:
        return isinstance(value, NUMBER) and not isinstance(value, bool)
    return isinstance(value, kind)


class LoadgenCase(unittest.TestCase):
    """Starts one attn_server for the class; runs attn_loadgen against it."""

    @classmethod
    def setUpClass(cls):
        if not LOADGEN or not os.path.exists(LOADGEN):
            raise RuntimeError(f"ATTN_LOADGEN={LOADGEN!r} is not a binary")
        cls.tmp = tempfile.TemporaryDirectory()
        cls.server = h.ServerProcess(extra_args=cls.server_args())
        cls.target = cls.server.start()

    @classmethod
    def server_args(cls):
        return []

    @classmethod
    def tearDownClass(cls):
        h.tear_down_class(cls)

    def path(self, name):
        return os.path.join(self.tmp.name, f"{self.id().split('.')[-1]}_{name}")

    def loadgen(self, *args, expect_code=0):
        """Runs attn_loadgen with --json; returns (parsed json, completed process)."""
        json_path = self.path("run.json")
        r = subprocess.run([LOADGEN, f"--target={self.target}", f"--json={json_path}",
                            *args], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        self.assertEqual(r.returncode, expect_code, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        with open(json_path) as f:
            return json.load(f), r

    def check_schema(self, doc, steps):
        self.assertEqual(doc["tool"], "attn_loadgen")
        self.assertEqual(doc["schema_version"], 1)
        self.assertIsInstance(doc["config"], dict)
        self.assertIsInstance(doc["started_at"], str)
        self.assertEqual(len(doc["steps"]), steps)
        for step in doc["steps"]:
            for key, kind in STEP_SCHEMA.items():
                self.assertIn(key, step)
                self.assertTrue(is_type(step[key], kind), f"{key}={step[key]!r}")
            for key in LATENCY_KEYS:
                self.assertTrue(is_type(step["latency_us"][key], NUMBER), key)
            lat = step["latency_us"]
            if lat["count"] > 0:
                self.assertLessEqual(lat["min"], lat["p50"])
                self.assertLessEqual(lat["p50"], lat["p90"])
                self.assertLessEqual(lat["p90"], lat["p99"])
                self.assertLessEqual(lat["p99"], lat["p999"])
                self.assertLessEqual(lat["p999"], lat["max"])
            for name, count in step["status_counts"].items():
                self.assertIn(name, STATUS_NAMES)
                self.assertTrue(is_type(count, int))
            for key in ("queue_mean", "compute_mean", "batch_requests_mean"):
                self.assertTrue(is_type(step["server_timing_us"][key], NUMBER), key)
            self.check_counts(step)

    def check_counts(self, step):
        self.assertGreater(step["sent"], 0, step)
        self.assertEqual(step["sent"], step["ok"] + step["errors"], step)
        self.assertEqual(sum(step["status_counts"].values()), step["sent"], step)
        self.assertEqual(step["status_counts"].get("OK", 0), step["ok"], step)
        self.assertLessEqual(step["late_sends"], step["sent"])


class LoadgenUnaryTest(LoadgenCase):

    def test_closed_loop_counts_add_up(self):
        doc, r = self.loadgen("--concurrency=4", "--duration=1s", "--warmup=200ms")
        self.check_schema(doc, 1)
        step = doc["steps"][0]
        self.assertEqual(step["errors"], 0, step)
        self.assertEqual(step["mode"], "closed_loop")
        self.assertEqual(step["concurrency"], 4)
        self.assertGreater(step["server_timing_us"]["compute_mean"], 0)
        self.assertAlmostEqual(step["tokens_per_second"],
                               16 * step["requests_per_second"], delta=0.5)
        # Not a TTY: no progress line, the table is on stdout.
        self.assertNotIn("\r", r.stdout)
        self.assertIn("concurrency=4", r.stdout)

    def test_unknown_model_counts_not_found(self):
        doc, _ = self.loadgen("--model=nope", "--d_model=256", "--concurrency=2",
                              "--duration=500ms", "--warmup=0s")
        self.check_schema(doc, 1)
        step = doc["steps"][0]
        self.assertEqual(step["ok"], 0)
        self.assertEqual(step["status_counts"], {"NOT_FOUND": step["sent"]})

    def test_unknown_model_without_d_model_is_an_actionable_error(self):
        r = subprocess.run([LOADGEN, f"--target={self.target}", "--model=nope",
                            "--duration=1s"], capture_output=True, text=True,
                           timeout=RUN_TIMEOUT_S)
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)
        self.assertIn("--d_model", r.stderr)

    def test_tight_deadline_counts_deadline_exceeded(self):
        doc, _ = self.loadgen("--deadline=1us", "--concurrency=2", "--duration=500ms",
                              "--warmup=0s")
        self.check_schema(doc, 1)
        step = doc["steps"][0]
        self.assertGreater(step["status_counts"].get("DEADLINE_EXCEEDED", 0), 0, step)
        self.assertEqual(step["errors"], step["status_counts"]["DEADLINE_EXCEEDED"], step)

    def test_open_loop_achieves_the_rate(self):
        rate = 200
        doc, _ = self.loadgen(f"--rate={rate}", "--seq=8", "--duration=3s",
                              "--warmup=500ms")
        self.check_schema(doc, 1)
        step = doc["steps"][0]
        self.assertEqual(step["mode"], "open_loop")
        self.assertEqual(step["target_rate"], rate)
        self.assertEqual(step["errors"], 0, step)
        self.assertAlmostEqual(step["sent_per_second"], rate, delta=0.05 * rate)
        self.assertAlmostEqual(step["requests_per_second"], rate, delta=0.05 * rate)
        self.assertAlmostEqual(step["sent"], rate * 3, delta=0.05 * rate * 3)

    def test_requests_mode_sends_exactly_n(self):
        doc, _ = self.loadgen("--requests=150", "--concurrency=3", "--warmup=0s",
                              "--seq=16:0.5,32:0.5", "--batch=2")
        step = doc["steps"][0]
        self.check_counts(step)
        self.assertEqual(step["sent"], 150)
        self.assertEqual(step["errors"], 0, step)
        # Tokens are B * Sq of OK responses: between 2*16 and 2*32 each.
        tokens = step["tokens_per_second"] * step["duration_s"]
        self.assertGreater(tokens, 150 * 32 * 0.95)
        self.assertLess(tokens, 150 * 64 * 1.05)

    def test_usage_errors_exit_2(self):
        for flag in ("--seq=0", "--sweep=threads=1", "--rpc=carrier-pigeon",
                     "--dtype=int8"):
            r = subprocess.run([LOADGEN, f"--target={self.target}", flag],
                               capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
            self.assertEqual(r.returncode, 2, flag)
            self.assertIn(flag.split("=")[0], r.stderr)

    def test_progress_line_only_on_a_tty(self):
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen([LOADGEN, f"--target={self.target}",
                                     "--concurrency=2", "--duration=1500ms",
                                     "--warmup=0s"],
                                    stdout=slave, stderr=subprocess.DEVNULL)
            os.close(slave)
            slave = None
            out = b""
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 1.0)
                if ready:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    out += chunk
                elif proc.poll() is not None:
                    break
            self.assertEqual(proc.wait(timeout=RUN_TIMEOUT_S), 0)
        finally:
            os.close(master)
            if slave is not None:
                os.close(slave)
        text = out.decode(errors="replace")
        self.assertIn("\r", text)
        self.assertIn("req/s", text)
        self.assertIn("p99", text)


class LoadgenStreamTest(LoadgenCase):

    def test_stream_closed_loop(self):
        doc, _ = self.loadgen("--rpc=stream", "--concurrency=4", "--duration=1s",
                              "--warmup=200ms")
        self.check_schema(doc, 1)
        step = doc["steps"][0]
        self.assertEqual(step["errors"], 0, step)
        self.assertGreater(step["server_timing_us"]["compute_mean"], 0)
        self.assertEqual(doc["config"]["rpc"], "stream")

    def test_stream_errors_in_band_are_counted(self):
        doc, _ = self.loadgen("--rpc=stream", "--model=nope", "--d_model=256",
                              "--concurrency=2", "--duration=500ms", "--warmup=0s")
        step = doc["steps"][0]
        self.check_counts(step)
        self.assertEqual(step["status_counts"], {"NOT_FOUND": step["sent"]})

    def test_stream_open_loop_rate_sweep(self):
        doc, _ = self.loadgen("--rpc=stream", "--sweep=rate=50,100", "--arrival=poisson",
                              "--duration=1s", "--warmup=200ms", "--stable_windows=1")
        self.check_schema(doc, 2)
        self.assertEqual([s["target_rate"] for s in doc["steps"]], [50, 100])
        for step in doc["steps"]:
            self.assertEqual(step["errors"], 0, step)
            self.assertEqual(step["mode"], "open_loop")

    def test_stream_rejects_deadline(self):
        r = subprocess.run([LOADGEN, f"--target={self.target}", "--rpc=stream",
                            "--deadline=1s"], capture_output=True, text=True,
                           timeout=RUN_TIMEOUT_S)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--deadline", r.stderr)


def png_pixels(path):
    """Decodes an 8-bit RGB/RGBA PNG (as Chromium writes) into (w, h, rows)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError(f"{path} is not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    if depth != 8 or color not in (2, 6) or interlace != 0:
        raise AssertionError(f"unsupported PNG format {header}")
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


class LoadgenDecodeTest(LoadgenCase):
    """--sessions: prefill, one-token steps on streams, then the stateless
    recompute of the same context; every call counted, the sessions ended."""

    def decode(self, *args, expect_code=0):
        r = subprocess.run([LOADGEN, f"--target={self.target}", "--quiet", *args],
                           capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        self.assertEqual(r.returncode, expect_code, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        return r

    def test_decode_counts_add_up(self):
        r = self.decode("--sessions=3", "--context=20", "--decode_steps=7",
                        "--recompute_requests=2")
        rows = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in re.finditer(
            r"^(prefill|decode|recompute)\s+(\d+) calls\s+(\d+) errors", r.stdout, re.M)}
        self.assertEqual(rows, {"prefill": (3, 0), "decode": (21, 0), "recompute": (6, 0)},
                         r.stdout)
        self.assertIn("longest session 27 tokens", r.stdout)
        self.assertRegex(r.stdout, r"decode tokens/s [\d.]+ vs recompute tokens/s [\d.]+")
        # A second run on the same server starts its own sessions.
        self.decode("--sessions=3", "--context=20", "--decode_steps=1",
                    "--recompute_requests=0")

    def test_decode_usage_errors_exit_2(self):
        self.assertIn("--context", self.decode("--sessions=2", "--context=0",
                                               expect_code=2).stderr)


class LoadgenReportTest(LoadgenCase):

    def test_sweep_writes_json_csv_html_and_html_renders(self):
        html_path = self.path("report.html")
        csv_path = self.path("report.csv")
        doc, r = self.loadgen("--sweep=concurrency=1,2,4", "--duration=500ms",
                              "--warmup=200ms", "--stable_windows=2", "--max_windows=3",
                              "--stability_pct=50", "--seq=8:64",
                              f"--html={html_path}", f"--csv={csv_path}")
        self.check_schema(doc, 3)
        self.assertEqual([s["concurrency"] for s in doc["steps"]], [1, 2, 4])
        for step in doc["steps"]:
            self.assertEqual(step["errors"], 0, step)
            self.assertGreaterEqual(step["windows"], 2)
            self.assertLessEqual(step["windows"], 3)
            self.assertEqual(step["windows_merged"], 2)
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual([row["label"] for row in rows],
                         [s["label"] for s in doc["steps"]])
        for row, step in zip(rows, doc["steps"]):
            self.assertEqual(int(row["sent"]), step["sent"])
        with open(html_path) as f:
            html = f.read()
        self.assertNotIn("<script", html)
        self.assertEqual(html.count("<svg"), 2)
        self.render_and_check(html_path)

    def render_and_check(self, html_path):
        png = self.path("report.png")
        with tempfile.TemporaryDirectory() as profile:
            r = subprocess.run(
                [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", f"--screenshot={png}",
                 "--window-size=1200,900", f"file://{html_path}"],
                capture_output=True, text=True, timeout=90)
        self.assertTrue(os.path.exists(png),
                        f"chromium wrote no screenshot (code {r.returncode}):\n{r.stderr}")
        width, height, bpp, rows = png_pixels(png)
        self.assertEqual((width, height), (1200, 900))
        non_white, colours = 0, set()
        for row in rows:
            for x in range(0, width * bpp, bpp):
                px = row[x:x + 3]
                if px != b"\xff\xff\xff":
                    non_white += 1
                    colours.add(bytes(px))
        # Text, table borders, axes and coloured series: well over 1% of the
        # page is drawn, in many distinct colours (the palette + antialiasing).
        self.assertGreater(non_white, 0.01 * width * height)
        self.assertGreater(len(colours), 8)
        # The series colours of the charts are there (p50 blue, p90 red).
        self.assertIn(bytes((0x1f, 0x77, 0xb4)), colours)
        self.assertIn(bytes((0xd6, 0x27, 0x28)), colours)


class LoadgenProtocolTest(LoadgenCase):
    """--protocol=v2|http|http_json reach the KServe v2 services: every sent
    request is answered OK, the server counts them under its protocol label,
    and an unknown model is NOT_FOUND over each transport."""

    @classmethod
    def server_args(cls):
        cls.http_port = h.free_port()
        cls.metrics_port = h.free_port()
        return [f"--http_port={cls.http_port}", f"--metrics_port={cls.metrics_port}"]

    def protocol_count(self, protocol, code):
        """attn_protocol_requests_total{code,protocol} from /metrics."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                      timeout=RUN_TIMEOUT_S).read().decode()
        key = f'attn_protocol_requests_total{{code="{code}",protocol="{protocol}"}}'
        return float(next(line.split()[-1] for line in text.splitlines()
                          if line.startswith(key)))

    def test_each_protocol_counts_add_up(self):
        for protocol, label in (("v2", "kserve_grpc"), ("http", "kserve_http"),
                                ("http_json", "kserve_http"), ("attn", "attn_v1")):
            before = self.protocol_count(label, "OK")
            doc, _ = self.loadgen(f"--protocol={protocol}",
                                  f"--http_target=127.0.0.1:{self.http_port}",
                                  "--requests=40", "--warmup=0s", "--concurrency=4",
                                  "--seq=16", "--quiet")
            self.check_schema(doc, 1)
            self.assertEqual(doc["config"]["protocol"], protocol)
            step = doc["steps"][0]
            self.assertEqual((step["sent"], step["ok"]), (40, 40), (protocol, step))
            # The window's 40, plus the requests sent after it closed until
            # the driver stopped (more on a loaded machine: the main thread
            # notices the end later) and the d_model lookup of attn.v1. A
            # request counted twice would make it at least 80.
            counted = self.protocol_count(label, "OK") - before
            self.assertGreaterEqual(counted, 40, protocol)
            self.assertLess(counted, 2 * 40, protocol)

    def test_unknown_model_is_not_found_over_each_protocol(self):
        for protocol in ("v2", "http", "http_json"):
            doc, _ = self.loadgen(f"--protocol={protocol}", "--model=nope", "--d_model=256",
                                  f"--http_target=127.0.0.1:{self.http_port}",
                                  "--requests=10", "--warmup=0s", "--quiet")
            self.assertEqual(doc["steps"][0]["status_counts"], {"NOT_FOUND": 10}, protocol)

    def test_stream_with_v2_is_refused(self):
        r = subprocess.run([LOADGEN, f"--target={self.target}", "--protocol=v2",
                            "--rpc=stream"], capture_output=True, text=True,
                           timeout=RUN_TIMEOUT_S)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--rpc=stream", r.stderr)


if __name__ == "__main__":
    unittest.main()
