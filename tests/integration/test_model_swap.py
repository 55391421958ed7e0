"""Hot reload under load, through the real attn_server (--repository_poll_s).

Four client threads call model "swap" (version 0 = newest) without pause and
one more calls model "other", while the repository changes:
  1. version 2 is copied in                  -> answers switch to 2;
  2. a corrupt version 3 and a version 4 whose file is still being written
     (it grows across scans) appear          -> refused, 2 keeps answering;
     then version 4's file is completed      -> answers switch to 4;
  3. the folder of the older version 1 is removed (nothing changes);
  4. the folders of the newest versions (4, 3) are removed -> rollback: 2 is
     loaded again and answers before 4 stops.
Asserts: zero failed requests; every answer equals the PyTorch reference of
the version that answered (AttendResponse.version); each switch within two
poll intervals (plus load and warm-up, generously bounded); the refusals are
logged naming the file and counted in attn_model_load_failures_total; the
RSS after the old version is freed is below the peak of the swap; "other"'s
p99 inside the server (AttendResponse.timing queue + compute: the client's
own figure includes the GIL it shares with the other client threads) during
the swaps stays within 2x of its p99 before. Prints the figures.
"""
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import unittest
import urllib.request

import numpy as np
import torch

import attnserve
import server_harness as h

D_MODEL = 1024  # 16 MiB of fp32 weights per version: visible in the RSS
HEADS = 8
SEQ = 8
POLL_S = 1
CLIENTS = 4
SWITCH_BOUND_S = 2 * POLL_S + 10  # two polls + load/warm-up on a busy CI box


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def metric(text, name, **labels):
    """Value of the sample `name` whose labels include `labels` (None if absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_]+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


class SwapUnderLoadTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.repo = os.path.join(self.tmp.name, "repo")
        self.staging = os.path.join(self.tmp.name, "staging")
        os.makedirs(self.repo)
        exporter = h.import_exporter()
        self.modules = {}
        for version in (1, 2, 4):
            torch.manual_seed(100 + version)
            m = torch.nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True).eval()
            self.modules[version] = m
            exporter.export_module(m, self.staging, "swap", version=version)
        shutil.copytree(os.path.join(self.staging, "swap", "1"),
                        os.path.join(self.repo, "swap", "1"))
        shutil.copy(os.path.join(self.staging, "swap", "config.json"),
                    os.path.join(self.repo, "swap", "config.json"))
        torch.manual_seed(7)
        self.other = torch.nn.MultiheadAttention(64, 4, batch_first=True).eval()
        exporter.export_module(self.other, self.repo, "other", version=1)

        rng = np.random.default_rng(3)
        self.inputs = [h.random_array(rng, 1, SEQ, D_MODEL) for _ in range(CLIENTS)]
        self.other_input = h.random_array(rng, 1, 16, 64)
        self.expected = {}
        with torch.no_grad():
            for version, m in self.modules.items():
                for i, x in enumerate(self.inputs):
                    t = torch.from_numpy(x)
                    self.expected[(version, i)] = m(t, t, t, need_weights=False)[0].numpy()
            t = torch.from_numpy(self.other_input)
            self.other_expected = self.other(t, t, t, need_weights=False)[0].numpy()

    def tearDown(self):
        self.tmp.cleanup()

    def start_server(self):
        for _ in range(5):
            self.metrics_port = free_port()
            server = h.ServerProcess(self.repo, [
                f"--metrics_port={self.metrics_port}", "--threads=1",
                f"--repository_poll_s={POLL_S}"])
            try:
                server.start()
                return server
            except RuntimeError as e:
                if "metrics" not in str(e):
                    raise
        raise RuntimeError("attn_server did not start")

    def scrape(self):
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode()

    def test_swap_rollback_and_refusals_under_load(self):
        server = self.start_server()
        try:
            self.run_scenario(server)
        except BaseException:
            print(server.stderr_text()[-4000:])
            server._kill()
            raise
        server.stop()

    def run_scenario(self, server):
        pid = server.proc.pid
        stop = threading.Event()
        lock = threading.Lock()
        state = {"count": 0, "failures": [], "mismatches": [], "first_seen": {},
                 "versions": [], "other": [], "rss_max": 0}
        phase = {"name": "baseline"}

        def swap_client(i):
            client = attnserve.Client(server.target)
            x = self.inputs[i]
            while not stop.is_set():
                try:
                    r = client.attend(x, model="swap", timeout=30)
                except Exception as e:  # noqa: BLE001 - every failure counts
                    with lock:
                        state["failures"].append(repr(e))
                    continue
                ok = (r.version, i) in self.expected and np.allclose(
                    r.output, self.expected[(r.version, i)], rtol=1e-4, atol=1e-4)
                now = time.monotonic()
                with lock:
                    state["count"] += 1
                    state["first_seen"].setdefault(r.version, now)
                    state["versions"].append((now, r.version))
                    if not ok:
                        state["mismatches"].append(r.version)
            client.close()

        def other_client():
            client = attnserve.Client(server.target)
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    r = client.attend(self.other_input, model="other", timeout=30)
                except Exception as e:  # noqa: BLE001
                    with lock:
                        state["failures"].append(repr(e))
                    continue
                took = time.monotonic() - t0
                inside = (r.timing.queue_us + r.timing.compute_us) * 1e-6
                if not np.allclose(r.output, self.other_expected, rtol=1e-4, atol=1e-4):
                    with lock:
                        state["mismatches"].append("other")
                with lock:
                    state["count"] += 1
                    state["other"].append((phase["name"], took, inside))
                time.sleep(0.005)
            client.close()

        def rss_monitor():
            while not stop.is_set():
                rss = rss_bytes(pid)
                with lock:
                    state["rss_max"] = max(state["rss_max"], rss)
                time.sleep(0.02)

        def newest_since(t):
            with lock:
                return [v for (when, v) in state["versions"] if when >= t]

        def wait_for_version(version, since, bound=SWITCH_BOUND_S):
            """Waits until answers come from `version`; returns the time from
            `since` to its first answer."""
            deadline = since + bound
            while time.monotonic() < deadline:
                seen = newest_since(since)
                # switched: the last answers all come from `version`
                if seen and seen[-CLIENTS:] == [version] * len(seen[-CLIENTS:]) \
                        and version in seen:
                    with lock:
                        first = next(w for (w, v) in state["versions"]
                                     if w >= since and v == version)
                    return first - since
                time.sleep(0.05)
            self.fail(f"answers did not switch to version {version} within {bound}s; "
                      f"recent: {newest_since(since)[-20:]}")

        threads = [threading.Thread(target=swap_client, args=(i,)) for i in range(CLIENTS)]
        threads.append(threading.Thread(target=other_client))
        monitor = threading.Thread(target=rss_monitor)
        for t in threads:
            t.start()
        monitor.start()
        try:
            time.sleep(4)  # baseline: version 1 only
            rss_before = rss_bytes(pid)
            with lock:
                state["rss_max"] = 0

            # 1. A new version is copied in (the copy itself is seen by scans).
            phase["name"] = "swap"
            t_copy = time.monotonic()
            shutil.copytree(os.path.join(self.staging, "swap", "2"),
                            os.path.join(self.repo, "swap", "2"))
            wait_for_version(2, t_copy)
            copy_to_first_new = state["first_seen"][2] - t_copy
            # Version 1 leaves and is freed once its requests are done.
            deadline = time.monotonic() + 20
            while "freed model 'swap' version 1" not in server.stderr_text():
                self.assertLess(time.monotonic(), deadline, "version 1 never freed")
                time.sleep(0.05)
            time.sleep(0.3)
            with lock:
                rss_during = state["rss_max"]
            rss_after = rss_bytes(pid)
            metrics = self.scrape()
            memory = metric(metrics, "attn_model_memory_bytes", model="swap", version="2")
            self.assertEqual(metric(metrics, "attn_model_ready", model="swap", version="1"), 0)
            self.assertEqual(metric(metrics, "attn_model_ready", model="swap", version="2"), 1)
            self.assertEqual(metric(metrics, "attn_model_memory_bytes", model="swap",
                                    version="1"), 0)
            self.assertGreaterEqual(memory, 4 * D_MODEL * D_MODEL * 4)
            self.assertGreaterEqual(metric(metrics, "attn_model_load_duration_seconds_count",
                                           model="swap"), 2)

            # 2. A corrupt version and one whose file is still being written.
            failures_before = metric(metrics, "attn_model_load_failures_total", model="swap")
            os.makedirs(os.path.join(self.repo, "swap", "3"))
            with open(os.path.join(self.repo, "swap", "3", "model.safetensors"), "wb") as f:
                f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
            with open(os.path.join(self.staging, "swap", "4", "model.safetensors"),
                      "rb") as f:
                good4 = f.read()
            os.makedirs(os.path.join(self.repo, "swap", "4"))
            path4 = os.path.join(self.repo, "swap", "4", "model.safetensors")
            t_written = time.monotonic()
            with open(path4, "wb") as f:
                chunk = len(good4) // 8
                for k in range(7):  # grows across ~3 scans, never complete
                    f.write(good4[k * chunk:(k + 1) * chunk])
                    f.flush()
                    time.sleep(0.45)
                self.assertEqual(set(newest_since(t_written)), {2})
                f.write(good4[7 * chunk:])
            t_complete = time.monotonic()
            complete_to_v4 = wait_for_version(4, t_complete)
            stderr = server.stderr_text()
            self.assertIn(os.path.join(self.repo, "swap", "3", "model.safetensors"), stderr)
            self.assertRegex(stderr, re.escape(path4) + r".*(still being written|truncated|"
                             r"extends past|bytes)")
            metrics = self.scrape()
            self.assertGreaterEqual(
                metric(metrics, "attn_model_load_failures_total", model="swap")
                - failures_before, 2)

            # 3. The folder of an older version is removed: nothing changes.
            shutil.rmtree(os.path.join(self.repo, "swap", "1"))
            t_rm_old = time.monotonic()
            time.sleep(2 * POLL_S + 0.5)
            self.assertEqual(set(newest_since(t_rm_old)), {4})

            # 4. Rollback: the newest folders go; 2 serves again before 4 stops.
            t_rollback = time.monotonic()
            shutil.rmtree(os.path.join(self.repo, "swap", "4"))
            shutil.rmtree(os.path.join(self.repo, "swap", "3"))
            rollback_to_v2 = wait_for_version(2, t_rollback)
            stderr = server.stderr_text()
            loaded_again = stderr.rfind("loaded model 'swap' version 2")
            unloading_4 = stderr.find("unloading model 'swap' version 4")
            self.assertGreater(unloading_4, loaded_again)
            phase["name"] = "after"
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
            monitor.join(timeout=10)

        with lock:
            count, failures = state["count"], list(state["failures"])
            mismatches = list(state["mismatches"])
            other = list(state["other"])
        def p99(phase_name, column):
            xs = sorted(o[column] for o in other if o[0] == phase_name)
            return xs[min(len(xs) - 1, int(0.99 * len(xs)))], len(xs)
        (base, n_base), (during, n_during) = p99("baseline", 2), p99("swap", 2)
        (base_client, _), (during_client, _) = p99("baseline", 1), p99("swap", 1)
        print(f"requests {count}, failures {len(failures)}, wrong answers {len(mismatches)}")
        print(f"copy -> first answer of version 2: {copy_to_first_new:.2f} s "
              f"(poll interval {POLL_S} s)")
        print(f"version 4's file completed -> first answer of 4: {complete_to_v4:.2f} s "
              f"(two scans must agree on its size); rollback (rm 4, 3) -> first answer "
              f"of 2: {rollback_to_v2:.2f} s")
        print(f"RSS before {rss_before / 2**20:.1f} MiB, peak during swap "
              f"{rss_during / 2**20:.1f} MiB, after version 1 freed "
              f"{rss_after / 2**20:.1f} MiB (weights of a version {memory / 2**20:.1f} MiB)")
        print(f"other model p99 in the server (queue + compute): before "
              f"{base * 1e3:.2f} ms ({n_base} calls), during swaps {during * 1e3:.2f} ms "
              f"({n_during} calls); at the client (Python, GIL shared with 4 "
              f"clients): {base_client * 1e3:.2f} -> {during_client * 1e3:.2f} ms")
        self.assertEqual(failures, [])
        self.assertEqual(mismatches, [])
        self.assertGreater(count, 100)
        self.assertLessEqual(copy_to_first_new, SWITCH_BOUND_S)
        with open(f"/proc/{pid}/maps") as f:
            sanitized = "libasan" in f.read()
        if sanitized:
            # ASan's allocator quarantines freed memory (RSS does not drop)
            # and slows compute unevenly: the figures are printed, not judged.
            print("AddressSanitizer build: RSS and p99 figures not asserted")
            return
        # The freed version's memory went back to the system.
        self.assertLess(rss_after, rss_during - memory / 2)
        # Loads and warm-ups do not slow the other model beyond 2x its p99.
        self.assertLessEqual(during, 2 * base)


if __name__ == "__main__":
    unittest.main(verbosity=2)
