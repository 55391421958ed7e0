"""attn.v1.ModelService and per-model health, through the real attn_server
and attn_cli (load|unload|reload|status), with and without bearer tokens.

- Without --enable_model_control the service does not exist (UNIMPLEMENTED).
- With --auth_token_file its calls need a token (health does not).
- unload: the model answers NOT_FOUND, its health name turns NOT_SERVING,
  readiness and liveness stay SERVING, polls do not bring it back; load:
  it serves again (answers checked against PyTorch).
- Names that leave the repository are INVALID_ARGUMENT; unknown ones
  NOT_FOUND; a model whose only version is corrupt is FAILED_PRECONDITION
  and its status is FAILED with the file named.
- --exit_on_load_error=false starts without the broken model;
  the default refuses to start, naming the file.
"""
import os
import subprocess
import tempfile
import time
import unittest

import grpc
import numpy as np
import torch

import attnserve
import server_harness as h

TOKEN = "lifecycle-test-token-0123456789abcdef"


def cli(*args):
    return subprocess.run([h.CLI, *args], capture_output=True, text=True, timeout=120)


class ModelControlTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.repo = os.path.join(cls.tmp.name, "repo")
        exporter = h.import_exporter()
        torch.manual_seed(21)
        cls.mha = torch.nn.MultiheadAttention(64, 4, batch_first=True).eval()
        exporter.export_module(cls.mha, cls.repo, "alpha", version=1)
        exporter.export_module(cls.mha, cls.repo, "beta", version=3)
        cls.tokens = os.path.join(cls.tmp.name, "tokens")
        with open(cls.tokens, "w") as f:
            f.write(f"{TOKEN}\n")
        cls.server = h.ServerProcess(cls.repo, [
            "--enable_model_control", f"--auth_token_file={cls.tokens}",
            "--repository_poll_s=1", "--threads=1"])
        cls.server.start()
        cls.client = attnserve.Client(cls.server.target, auth_token=TOKEN)
        cls.x = h.random_array(np.random.default_rng(1), 1, 8, 64)

    @classmethod
    def tearDownClass(cls):
        h.tear_down_class(cls)

    def admin(self, *args):
        return cli(*args, f"--target={self.server.target}",
                   f"--auth_token_file={self.tokens}")

    def health(self, service):
        r = cli("health", f"--target={self.server.target}", f"--service={service}")
        return r.stdout.strip()

    def check_answer(self, model):
        r = self.client.attend(self.x, model=model, timeout=30)
        with torch.no_grad():
            t = torch.from_numpy(self.x)
            want = self.mha(t, t, t, need_weights=False)[0].numpy()
        np.testing.assert_allclose(r.output, want, rtol=1e-4, atol=1e-4)
        return r

    def test_status_lists_versions(self):
        r = self.admin("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("alpha\tpolicy=latest 1", r.stdout)
        self.assertRegex(r.stdout, r"version=3\tREADY\tmemory_bytes=\d+")
        r = self.admin("status", "--model=nope")
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)

    def test_needs_a_token(self):
        r = cli("status", f"--target={self.server.target}")
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAUTHENTICATED", r.stderr)
        self.assertEqual(self.health(""), "SERVING")  # health stays open

    def test_unload_and_load(self):
        self.check_answer("beta")
        self.assertEqual(self.health("attn.v1.AttentionService/beta"), "SERVING")
        r = self.admin("unload", "--model=beta")
        self.assertEqual(r.returncode, 0, r.stderr)
        with self.assertRaises(grpc.RpcError) as e:
            self.client.attend(self.x, model="beta", timeout=30)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertEqual(self.health("attn.v1.AttentionService/beta"), "NOT_SERVING")
        self.assertEqual(self.health("attn.v1.AttentionService"), "SERVING")
        self.assertEqual(self.health(""), "SERVING")
        self.check_answer("alpha")  # the other model is untouched
        time.sleep(2.5)  # two polls: an unloaded model stays unloaded
        with self.assertRaises(grpc.RpcError):
            self.client.attend(self.x, model="beta", timeout=30)
        r = self.admin("unload", "--model=beta")
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)
        r = self.admin("load", "--model=beta")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("version=3\tREADY", r.stdout)
        self.assertEqual(self.check_answer("beta").version, 3)
        self.assertEqual(self.health("attn.v1.AttentionService/beta"), "SERVING")

    def test_names_stay_inside_the_repository(self):
        for bad in ("..", "../repo", "/etc", "a/b"):
            r = self.admin("load", f"--model={bad}")
            self.assertEqual(r.returncode, 1, bad)
            self.assertIn("INVALID_ARGUMENT", r.stderr, bad)
        outside = tempfile.mkdtemp(dir=self.tmp.name)
        h.import_exporter().export_module(self.mha, outside, "evil", version=1)
        os.symlink(os.path.join(outside, "evil"), os.path.join(self.repo, "evil"))
        r = self.admin("load", "--model=evil")
        self.assertEqual(r.returncode, 1)
        self.assertIn("INVALID_ARGUMENT", r.stderr)
        self.assertIn("out of the repository", r.stderr)
        r = self.admin("load", "--model=missing")
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)

    def test_reload_and_failed_model(self):
        broken = os.path.join(self.repo, "broken")
        h.import_exporter().export_module(self.mha, self.repo, "broken", version=1)
        path = os.path.join(broken, "1", "model.safetensors")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        r = self.admin("load", "--model=broken")
        self.assertEqual(r.returncode, 1)
        self.assertIn("FAILED_PRECONDITION", r.stderr)
        self.assertIn(path, r.stderr)
        r = self.admin("status", "--model=broken")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("version=1\tFAILED", r.stdout)
        self.assertIn(path, r.stdout)
        r = self.admin("reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.health("attn.v1.AttentionService"), "SERVING")
        self.check_answer("alpha")


class ModelControlOffTest(unittest.TestCase):

    def test_service_absent_and_start_up_policy(self):
        with tempfile.TemporaryDirectory() as repo:
            torch.manual_seed(2)
            mha = torch.nn.MultiheadAttention(32, 2, batch_first=True).eval()
            exporter = h.import_exporter()
            exporter.export_module(mha, repo, "ok", version=1)
            exporter.export_module(mha, repo, "bad", version=1)
            bad = os.path.join(repo, "bad", "1", "model.safetensors")
            with open(bad, "wb") as f:
                f.write(b"garbage")
            # Default: fail fast, naming the file.
            r = subprocess.run([h.SERVER, "--port=0", "--metrics_port=0",
                                f"--model_repository={repo}"],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 1)
            self.assertIn(bad, r.stderr)
            with h.running_server(repo, ["--exit_on_load_error=false"]) as target:
                r = cli("status", f"--target={target}")
                self.assertEqual(r.returncode, 1)
                self.assertIn("UNIMPLEMENTED", r.stderr)
                self.assertIn("--enable_model_control", r.stderr)
                self.assertEqual(cli("health", f"--target={target}",
                                     "--service=attn.v1.AttentionService").stdout.strip(),
                                 "SERVING")
                self.assertEqual(cli("health", f"--target={target}",
                                     "--service=attn.v1.AttentionService/ok").stdout.strip(),
                                 "SERVING")
                client = attnserve.Client(target)
                with self.assertRaises(grpc.RpcError) as e:
                    client.attend(np.zeros((4, 32), np.float32), model="bad")
                self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
                client.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
