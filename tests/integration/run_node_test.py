"""Runs tests/node/attend.test.js (attn.v1), tests/node/kserve.test.js
(KServe v2 gRPC) and tests/node/kserve_http.test.js (KServe v2 REST) against
a real attn_server (demo model).

The expected output is the Python client's answer for the same query, so the
Node client is checked for byte-level agreement across languages.
Environment: as server_harness.py, plus ATTN_NODE (node binary),
ATTN_NODE_DIR (tests/node, with node_modules from `npm ci`) and
ATTN_PROTO_DIR.
"""
import base64
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import attnserve
import server_harness as h

NODE_TIMEOUT_S = 120


def main():
    node = os.environ.get("ATTN_NODE", "node")
    node_dir = os.environ["ATTN_NODE_DIR"]
    if not os.path.isdir(os.path.join(node_dir, "node_modules", "@grpc", "grpc-js")):
        print(f"missing {node_dir}/node_modules: run `npm ci --prefix {node_dir}`",
              file=sys.stderr)
        return 1
    query = h.random_array(np.random.default_rng(1), 2, 5, 256)
    http_port = h.free_port()
    with h.running_server(extra_args=[f"--http_port={http_port}"]) as target, \
            tempfile.TemporaryDirectory() as tmp:
        with attnserve.Client(target) as client:
            expected = client.attend(query, model="demo").output
        case = {
            "model": "demo",
            "query": {"shape": list(query.shape),
                      "data_b64": base64.b64encode(query.astype("<f4").tobytes()).decode()},
            "expected": {"shape": list(expected.shape),
                         "data_b64": base64.b64encode(expected.astype("<f4").tobytes()).decode()},
        }
        case_file = os.path.join(tmp, "case.json")
        with open(case_file, "w") as f:
            json.dump(case, f)
        env = dict(os.environ, ATTN_TARGET=target, ATTN_NODE_CASE=case_file,
                   ATTN_HTTP_BASE=f"http://127.0.0.1:{http_port}")
        result = subprocess.run([node, "--test", os.path.join(node_dir, "attend.test.js"),
                                 os.path.join(node_dir, "kserve.test.js"),
                                 os.path.join(node_dir, "kserve_http.test.js")],
                                env=env, timeout=NODE_TIMEOUT_S)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
