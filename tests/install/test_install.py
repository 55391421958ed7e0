"""`cmake --install` of the C++ client, then a separate project that does
find_package(attnserve CONFIG) and links attnserve::client, built against
the installed tree only and run against a real server: its output must equal
the Python client's on the same input.

Environment (ctest): ATTN_BUILD_DIR, ATTN_SERVER, PYTHONPATH,
ATTN_CONSUMER_CXX_FLAGS (the build's CMAKE_CXX_FLAGS).
"""
import os
import subprocess
import tempfile
import unittest

import numpy as np

import attnserve
import server_harness as h

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ["ATTN_BUILD_DIR"]


def run(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")


class InstallTest(unittest.TestCase):
    def test_consumer_project_against_installed_tree(self):
        with tempfile.TemporaryDirectory() as tmp:
            prefix = os.path.join(tmp, "prefix")
            run("cmake", "--install", BUILD, "--prefix", prefix)
            self.assertTrue(os.path.exists(
                os.path.join(prefix, "lib", "cmake", "attnserve", "attnserveConfig.cmake")))
            consumer = os.path.join(tmp, "consumer")
            # A sanitizer build's static libraries need its runtime.
            flags = os.environ.get("ATTN_CONSUMER_CXX_FLAGS", "")
            run("cmake", "-S", os.path.join(HERE, "consumer"), "-B", consumer, "-G", "Ninja",
                f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release",
                f"-DCMAKE_CXX_FLAGS={flags}", f"-DCMAKE_EXE_LINKER_FLAGS={flags}")
            run("cmake", "--build", consumer, "-j", "2")
            out = os.path.join(tmp, "out.txt")
            x = (np.arange(4 * 256) % 17 / 17).astype(np.float32).reshape(1, 4, 256)
            with h.running_server() as target:
                run(os.path.join(consumer, "consumer"), target, out)
                with attnserve.Client(target) as c:
                    expected = c.attend(x).output.reshape(-1)
            got = np.loadtxt(out, dtype=np.float32)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    unittest.main(verbosity=2)
