"""Static checks of the deployment files that no engine can run here:
deploy/docker-compose.yml (with promtool on its Prometheus config) and every
manifest in deploy/k8s/ (probes, resources, grace period, services, policies,
and every attn_server flag they pass must exist in `attn_server --helpfull`).

Environment: ATTN_SERVER (attn_server binary, set by ctest).
"""
import glob
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
SERVER = os.environ.get("ATTN_SERVER", os.path.join(ROOT, "build", "server", "attn_server"))


def server_flags():
    out = subprocess.run([SERVER, "--helpfull"], capture_output=True, text=True, timeout=60)
    flags = set(re.findall(r"^\s+--([A-Za-z0-9_]+)", out.stdout + out.stderr, re.M))
    assert "port" in flags, f"no flags parsed from {SERVER} --helpfull"
    return flags


def parse_flags(args):
    """{"name": "value"} of --name=value arguments (every one must have =)."""
    flags = {}
    for a in args:
        m = re.fullmatch(r"--([A-Za-z0-9_]+)=(.*)", a)
        if not m:
            raise AssertionError(f"server argument {a!r} is not --name=value")
        flags[m.group(1)] = m.group(2)
    return flags


def split_volume(volume):
    """(source, target) of a Compose "source:/target[:ro|rw]" volume."""
    m = re.fullmatch(r"(.+?):(/[^:]*)(?::(?:ro|rw))?", volume)
    if not m:
        raise AssertionError(f"volume {volume!r} is not source:/target[:mode]")
    return m.group(1), m.group(2)


def mounts_of(service):
    """{target: source} of a Compose service's volumes."""
    return {t: s for s, t in map(split_volume, service.get("volumes", []))}


class ComposeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(DEPLOY, "docker-compose.yml")) as f:
            cls.compose = yaml.safe_load(f)
        cls.services = cls.compose["services"]

    def test_services(self):
        self.assertEqual(set(self.services), {"attnserve", "prometheus", "grafana"})
        build = self.services["attnserve"]["build"]
        self.assertTrue(os.path.isfile(os.path.join(DEPLOY, build["context"],
                                                    build["dockerfile"])))

    def test_every_mounted_file_exists(self):
        checked = 0
        for name, svc in self.services.items():
            for target, source in mounts_of(svc).items():
                if source.startswith("${"):
                    # The user's model repository (ATTN_MODELS), not a repo file.
                    self.assertEqual((name, target), ("attnserve", "/models"))
                    continue
                path = os.path.normpath(os.path.join(DEPLOY, source))
                self.assertTrue(os.path.exists(path), f"{name} mounts missing {source}")
                checked += 1
        self.assertGreaterEqual(checked, 5)

    def test_ports_agree_with_server_flags(self):
        svc = self.services["attnserve"]
        flags = parse_flags(svc["command"])
        self.assertEqual(set(flags) - server_flags(), set())
        container_ports = {int(p.split(":")[1]) for p in svc["ports"]}
        self.assertEqual(container_ports, {int(flags["port"]), int(flags["metrics_port"])})
        self.assertEqual(flags["model_repository"], "/models")

    def test_scrape_target_names_the_service(self):
        flags = parse_flags(self.services["attnserve"]["command"])
        prom = self.services["prometheus"]
        mounts = mounts_of(prom)
        config_path = os.path.join(DEPLOY, mounts["/etc/prometheus/prometheus.yml"])
        with open(config_path) as f:
            config = yaml.safe_load(f)
        targets = [t for job in config["scrape_configs"]
                   for sc in job["static_configs"] for t in sc["targets"]]
        self.assertEqual(targets, [f"attnserve:{flags['metrics_port']}"])
        # Rule files resolve next to the config inside the container.
        for rule in config["rule_files"]:
            self.assertIn(f"/etc/prometheus/{rule}", mounts)
        # promtool on the config and rules laid out as the container sees them.
        with tempfile.TemporaryDirectory() as tmp:
            for target, source in mounts.items():
                shutil.copy(os.path.join(DEPLOY, source),
                            os.path.join(tmp, os.path.basename(target)))
            r = subprocess.run(["promtool", "check", "config",
                                os.path.join(tmp, "prometheus.yml")],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_grafana_datasource_names_prometheus_service(self):
        graf = self.services["grafana"]
        mounts = mounts_of(graf)
        ds = [s for t, s in mounts.items() if "/provisioning/datasources/" in t]
        with open(os.path.join(DEPLOY, ds[0])) as f:
            url = yaml.safe_load(f)["datasources"][0]["url"]
        port = self.services["prometheus"]["ports"][0].split(":")[1]
        self.assertEqual(url, f"http://prometheus:{port}")
        provider = [s for t, s in mounts.items() if "/provisioning/dashboards/" in t]
        with open(os.path.join(DEPLOY, provider[0])) as f:
            path = yaml.safe_load(f)["providers"][0]["options"]["path"]
        self.assertTrue(any(t.startswith(path + "/") and t.endswith(".json")
                            for t in mounts), f"no dashboard mounted under {path}")


class KubernetesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = []
        for path in sorted(glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml"))):
            with open(path) as f:
                cls.docs += [d for d in yaml.safe_load_all(f) if d]
        cls.by_kind = {}
        for d in cls.docs:
            for key in ("apiVersion", "kind", "metadata"):
                assert key in d, f"manifest without {key}: {d}"
            cls.by_kind.setdefault(d["kind"], []).append(d)
        cls.deploy = cls.by_kind["Deployment"][0]
        cls.pod = cls.deploy["spec"]["template"]["spec"]
        cls.container = cls.pod["containers"][0]
        cls.flags = parse_flags(cls.container["args"])

    def test_every_flag_exists(self):
        self.assertEqual(set(self.flags) - server_flags(), set(),
                         "flags the manifests use that attn_server does not have")

    def test_resources_and_threads(self):
        res = self.container["resources"]
        self.assertEqual(res["requests"]["cpu"], res["limits"]["cpu"])
        self.assertEqual(int(self.flags["threads"]), int(res["limits"]["cpu"]))
        self.assertIn("memory", res["limits"])

    def test_probes(self):
        port = int(self.flags["port"])
        self.assertEqual(self.container["livenessProbe"]["grpc"],
                         {"port": port, "service": ""})
        for probe in ("readinessProbe", "startupProbe"):
            self.assertEqual(self.container[probe]["grpc"],
                             {"port": port, "service": "attn.v1.AttentionService"})
        startup = self.container["startupProbe"]
        self.assertGreaterEqual(startup["periodSeconds"] * startup["failureThreshold"], 120)

    def test_grace_period_covers_drain(self):
        needed = int(self.flags["drain_delay_s"]) + int(self.flags["shutdown_timeout_s"])
        self.assertGreater(self.pod["terminationGracePeriodSeconds"], needed)
        self.assertIn("grpc_max_connection_age_s", self.flags)
        self.assertIn("grpc_max_connection_age_grace_s", self.flags)
        for flag in ("grpc_keepalive_time_s", "grpc_keepalive_timeout_s",
                     "grpc_keepalive_min_client_ping_interval_s"):
            self.assertIn(flag, self.flags)
        # The grace after a max-age GOAWAY fits in the pod's termination grace.
        self.assertLess(int(self.flags["grpc_max_connection_age_grace_s"]),
                        self.pod["terminationGracePeriodSeconds"])

    def test_non_root_and_model_volume(self):
        self.assertEqual(self.pod["securityContext"]["runAsUser"], 10001)
        mounts = {m["name"]: m["mountPath"] for m in self.container["volumeMounts"]}
        self.assertEqual(mounts.get("models"), self.flags["model_repository"])
        self.assertIn("models", {v["name"] for v in self.pod["volumes"]})

    def test_services(self):
        labels = self.deploy["spec"]["template"]["metadata"]["labels"]
        services = {s["metadata"]["name"]: s["spec"] for s in self.by_kind["Service"]}
        headless = [s for s in services.values() if s.get("clusterIP") == "None"]
        regular = [s for s in services.values() if s.get("clusterIP") != "None"]
        self.assertEqual((len(headless), len(regular)), (1, 1))
        port_names = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.assertEqual(port_names["grpc"], int(self.flags["port"]))
        self.assertEqual(port_names["metrics"], int(self.flags["metrics_port"]))
        for spec in services.values():
            self.assertEqual(spec["selector"], labels)
            for p in spec["ports"]:
                self.assertIn(p["targetPort"], port_names)

    def test_policies_and_monitoring(self):
        labels = self.deploy["spec"]["template"]["metadata"]["labels"]
        pdb = self.by_kind["PodDisruptionBudget"][0]["spec"]
        self.assertEqual(pdb["selector"]["matchLabels"], labels)
        self.assertLess(pdb["minAvailable"], self.deploy["spec"]["replicas"])
        hpa = self.by_kind["HorizontalPodAutoscaler"][0]["spec"]
        self.assertEqual(hpa["scaleTargetRef"]["name"], self.deploy["metadata"]["name"])
        metric = hpa["metrics"][0]["pods"]["metric"]["name"]
        # The prometheus-adapter rule serves exactly that metric, from a
        # metric the server exports.
        rules = yaml.safe_load(
            self.by_kind["ConfigMap"][0]["data"]["config.yaml"])["rules"]
        self.assertIn(metric, [r["name"]["as"] for r in rules])
        series = rules[0]["seriesQuery"].split("{")[0]
        with open(os.path.join(ROOT, "server", "observability", "metrics.cc")) as f:
            self.assertIn(f'"{series}"', f.read())
        sm = self.by_kind["ServiceMonitor"][0]["spec"]
        self.assertEqual(sm["selector"]["matchLabels"], labels)
        self.assertEqual(sm["endpoints"][0]["port"], "metrics")


if __name__ == "__main__":
    unittest.main(verbosity=2)
