"""bench/isa_matrix.sh on this CPU, on the smallest bench case: the default
path (ATTN_KERNEL_ISA unset) is timed first, and every known core path is
either timed (each case names that path as its core, and the
bf16 case's error against fp32 is small) or listed as not runnable with
the FAILED_PRECONDITION it gave when forced; the Markdown table has a
column per timed path. Asserts no time: efficiencies are only required to
be positive and finite.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.environ.get("ATTN_BENCH", os.path.join(ROOT, "build", "bench", "attn_bench"))


def lines(*args):
    return subprocess.run([BENCH, *args], check=True, capture_output=True,
                          text=True).stdout.split()


class IsaMatrixTest(unittest.TestCase):

    def test_every_known_path_is_timed_or_refused(self):
        known = lines("--list_known_isas")
        runnable = lines("--list_isas")
        self.assertEqual(runnable[0], "scalar")
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "m")
            subprocess.run(
                [os.path.join(ROOT, "bench", "isa_matrix.sh"), "--out", out,
                 "--filter", "^single_1x16_d256_h4_", "--min_time", "0.05",
                 "--threads", "1", "--max_cpu_isas", "default"],
                check=True, env=dict(os.environ, ATTN_BENCH=BENCH),
                stdout=subprocess.DEVNULL, timeout=600)
            doc = json.load(open(out + ".json"))
            table = open(out + ".md").read()
        self.assertEqual(len(doc["runs"]), 1)
        run = doc["runs"][0]
        self.assertIsNone(run["onednn_max_cpu_isa"])
        self.assertEqual(list(run["paths"]),
                         ["default"] + [i for i in known if i in runnable])
        self.assertEqual(sorted(run["not_runnable_here"]),
                         sorted(i for i in known if i not in runnable))
        for isa, msg in run["not_runnable_here"].items():
            self.assertIn("FAILED_PRECONDITION: ATTN_KERNEL_ISA=" + isa, msg)
        for isa, cases in run["paths"].items():
            names = [c["name"] for c in cases]
            self.assertEqual(names, ["single_1x16_d256_h4_fp32",
                                     "single_1x16_d256_h4_bf16"], isa)
            for c in cases:
                # The bf16 cores serve bf16 layers; fp32 layers get avx512.
                core = ("avx512" if isa in ("avx512_bf16", "amx_bf16")
                        and c["dtype"] == "fp32" else isa)
                if isa == "default":  # whichever core this CPU picks
                    self.assertRegex(c["implementation"], r"^core \S+")
                else:
                    self.assertIn("core " + core + ",", c["implementation"])
                self.assertTrue(math.isfinite(c["efficiency"]) and c["efficiency"] > 0)
                self.assertIn(c["roofline_dtype"], ("f32", "bf16"))
            self.assertLess(cases[1]["max_abs_err_vs_fp32"], 0.05, isa)
        header = next(l for l in table.splitlines() if l.startswith("| case |"))
        self.assertEqual(header, "| case | " + " | ".join(run["paths"]) + " |")
        if run["not_runnable_here"]:
            self.assertIn("Not runnable here: ", table)


if __name__ == "__main__":
    unittest.main(verbosity=2)
