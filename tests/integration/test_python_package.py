"""The installable Python client: `pip install ./client/python` offline
(--no-index, into a venv over Debian's grpcio/protobuf/numpy) gives a working
attnserve package, and its checked-in generated stubs are the ones the build
generates from proto/ right now (a stale stub fails here).
"""
import filecmp
import os
import subprocess
import tempfile
import unittest

import server_harness as h

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "client", "python")
BUILD_PY = os.environ["PYTHONPATH"].split(os.pathsep)[0]  # <build>/python (ctest)


class PythonPackageTest(unittest.TestCase):
    def test_checked_in_stubs_match_the_proto(self):
        built = os.path.join(BUILD_PY, "attnserve", "_generated")
        checked_in = os.path.join(PACKAGE, "attnserve", "_generated")
        names = ["attn/v1/attention_pb2.py", "attn/v1/attention_pb2_grpc.py", "health_pb2.py"]
        for name in names:
            self.assertTrue(os.path.exists(os.path.join(built, name)), name)
            self.assertTrue(
                filecmp.cmp(os.path.join(built, name), os.path.join(checked_in, name),
                            shallow=False),
                f"client/python/attnserve/_generated/{name} is stale against proto/: "
                f"copy it from {built}")

    def test_pip_install_offline_and_call_a_server(self):
        with tempfile.TemporaryDirectory() as tmp:
            venv = os.path.join(tmp, "venv")
            subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv],
                           check=True, timeout=120)
            py = os.path.join(venv, "bin", "python")
            r = subprocess.run([py, "-m", "pip", "install", "--no-index", "--quiet", PACKAGE],
                               capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            script = (
                "import sys, numpy as np, attnserve\n"
                "assert '/site-packages/' in attnserve.__file__, attnserve.__file__\n"
                "x = np.random.default_rng(0).standard_normal((1, 8, 256), dtype=np.float32)\n"
                "with attnserve.Client(sys.argv[1]) as c:\n"
                "    np.save(sys.argv[2], c.attend(x, causal=True).output)\n")
            with h.running_server() as target:
                out = os.path.join(tmp, "out.npy")
                r = subprocess.run([py, "-c", script, target, out], capture_output=True,
                                   text=True, timeout=120, env=env, cwd=tmp)
                self.assertEqual(r.returncode, 0, r.stderr)
                import numpy as np
                import attnserve  # the build tree's package, as a reference
                x = np.random.default_rng(0).standard_normal((1, 8, 256), dtype=np.float32)
                with attnserve.Client(target) as c:
                    expected = c.attend(x, causal=True).output
                np.testing.assert_array_equal(np.load(out), expected)


if __name__ == "__main__":
    unittest.main(verbosity=2)
