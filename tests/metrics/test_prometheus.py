"""The shipped deploy/ artefacts against a real Prometheus.

Starts Debian's `prometheus` on 127.0.0.1 with the shipped
deploy/prometheus/prometheus.yml, rewritten only where a test must differ
(scrape target = the attn_server under test, 1 s scrape and evaluation
interval, absolute path of the shipped alerts.yml), waits for up == 1, sends
traffic with successes and every error class, and evaluates through
/api/v1/query EVERY PromQL expression of the shipped Grafana dashboard and
alert rules, parsed out of the shipped files:

  * dashboard: every panel target's `expr`, with Grafana's variables
    substituted ($__rate_interval -> 1m, $model -> .* i.e. "All"); the
    `label_values(SELECTOR, LABEL)` variable queries are evaluated as
    SELECTOR and must carry LABEL;
  * alert rules: each `expr` with its final threshold comparison removed
    ("... > 0.05" -> "..."): a healthy server fires no alert, so the
    comparison would (correctly) return nothing; the underlying expression
    must return data. Every rule must also be loaded and evaluated by
    Prometheus with health "ok".

Each query must return at least one series with a finite value.
"""
import json
import math
import os
import re
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import yaml

import attnserve
import metrics_harness as mh
import numpy as np

DASHBOARD = os.path.join(mh.DEPLOY_DIR, "grafana", "dashboards", "attnserve.json")
PROM_CONFIG = os.path.join(mh.DEPLOY_DIR, "prometheus", "prometheus.yml")
ALERTS = os.path.join(mh.DEPLOY_DIR, "prometheus", "alerts.yml")
WAIT_S = 60
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "model": ".*"}
_COMPARISON = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?[-+]?[0-9.]+(?:e[-+]?\d+)?\s*$")
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*(\w+)\)$", re.S)


def substitute(expr):
    def one(m):
        name = m.group(1) or m.group(2)
        if name not in GRAFANA_VARIABLES:
            raise AssertionError(f"dashboard uses an unknown variable ${name}: {expr}")
        return GRAFANA_VARIABLES[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def dashboard_queries():
    """[(where, promql, required label or None)] from the shipped dashboard."""
    with open(DASHBOARD) as f:
        dash = json.load(f)
    queries = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                queries.append((f"panel '{p['title']}' {t['refId']}",
                                substitute(t["expr"]), None))
    walk(dash["panels"])
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = _LABEL_VALUES.match(q.strip())
        assert m, f"variable {var['name']}: unsupported query {q}"
        queries.append((f"variable ${var['name']}", substitute(m.group(1)), m.group(2)))
    return queries


def alert_queries():
    """[(where, promql without its threshold)] from the shipped alert rules."""
    with open(ALERTS) as f:
        rules = yaml.safe_load(f)
    queries = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            expr = rule["expr"].strip()
            stripped = _COMPARISON.sub("", expr)
            assert stripped != expr, f"alert {rule['alert']}: no final comparison in {expr}"
            queries.append((f"alert {rule['alert']}", stripped))
    return queries


class Prometheus:
    """prometheus on 127.0.0.1 (free port, retried), storage in `tmp`."""

    def __init__(self, config_path, tmp):
        for _ in range(5):
            self.port = mh.free_port()
            self.log = open(os.path.join(tmp, f"prometheus-{self.port}.log"), "w+")
            self.proc = subprocess.Popen(
                [mh.PROMETHEUS, f"--config.file={config_path}",
                 f"--storage.tsdb.path={os.path.join(tmp, f'tsdb-{self.port}')}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError(f"prometheus did not start; log:\n{self.log_text()}")

    def _wait_ready(self):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # e.g. the port was taken: caller retries
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready",
                                            timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def log_text(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, promql):
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return data["result"]

    def wait_for(self, promql, predicate, what):
        deadline = time.monotonic() + WAIT_S
        result = None
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.3)
        raise AssertionError(f"{what}: not within {WAIT_S}s; last {promql} = {result}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def finite_values(result):
    return [float(s["value"][1]) for s in result
            if math.isfinite(float(s["value"][1]))]


class PrometheusTest(unittest.TestCase):

    def test_shipped_files_pass_promtool(self):
        for args in (["check", "rules", ALERTS], ["check", "config", PROM_CONFIG]):
            result = mh.run([mh.PROMTOOL] + args)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn("SUCCESS", result.stdout + result.stderr)

    def test_every_dashboard_and_alert_query_returns_data(self):
        dash = dashboard_queries()
        alerts = alert_queries()
        self.assertGreaterEqual(len(dash), 20)
        self.assertEqual(len(alerts), 5)
        with tempfile.TemporaryDirectory() as tmp:
            mh.write_repository(os.path.join(tmp, "models"))
            server = mh.MetricsServer(os.path.join(tmp, "models"))
            prometheus = None
            try:
                with open(PROM_CONFIG) as f:
                    config = yaml.safe_load(f)
                config["global"]["scrape_interval"] = "1s"
                config["global"]["evaluation_interval"] = "1s"
                config["rule_files"] = [os.path.join(os.path.dirname(PROM_CONFIG), r)
                                        for r in config["rule_files"]]
                (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "attnserve"]
                job["static_configs"] = [{"targets": [f"127.0.0.1:{server.metrics_port}"]}]
                config_path = os.path.join(tmp, "prometheus.yml")
                with open(config_path, "w") as f:
                    yaml.safe_dump(config, f)
                check = mh.run([mh.PROMTOOL, "check", "config", config_path])
                self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

                prometheus = Prometheus(config_path, tmp)
                prometheus.wait_for('up{job="attnserve"}',
                                    lambda r: r and r[0]["value"][1] == "1", "up == 1")

                tally = mh.Tally(("m", "t", "q"))
                mh.standard_traffic(attnserve.Client(server.target, retry=False), tally,
                                    np.random.default_rng(0))
                total = sum(tally.codes.values())
                prometheus.wait_for(
                    'sum(attn_requests_total{job="attnserve"})',
                    lambda r: r and float(r[0]["value"][1]) == total,
                    f"Prometheus to scrape all {total} requests")
                # Two more scrapes so that every rate() window holds
                # samples from after the traffic.
                time.sleep(2.5)

                evaluated = []
                for where, promql, label in dash:
                    result = prometheus.query(promql)
                    self.assertTrue(result, f"{where}: no data for {promql}")
                    self.assertTrue(finite_values(result),
                                    f"{where}: only NaN/Inf for {promql}: {result}")
                    if label:
                        self.assertTrue(all(label in s["metric"] for s in result),
                                        f"{where}: no label {label}")
                    evaluated.append((where, promql))
                for where, promql in alerts:
                    result = prometheus.query(promql)
                    self.assertTrue(result, f"{where}: no data for {promql}")
                    self.assertTrue(finite_values(result),
                                    f"{where}: only NaN/Inf for {promql}: {result}")
                    evaluated.append((where, promql))

                # The rules themselves: loaded from the shipped file and
                # evaluated without error.
                def rules_evaluated():
                    groups = prometheus.api("rules")["groups"]
                    rules = [r for g in groups for r in g["rules"]]
                    return rules if rules and all(
                        not r["lastEvaluation"].startswith("0001") for r in rules) else None
                deadline = time.monotonic() + WAIT_S
                while not rules_evaluated() and time.monotonic() < deadline:
                    time.sleep(0.3)
                rules = rules_evaluated()
                self.assertIsNotNone(rules, "rules were not evaluated")
                self.assertEqual(len(rules), len(alerts))
                for r in rules:
                    self.assertEqual(r["health"], "ok", r)
                # A healthy server under this traffic fires no alert but the
                # error ratio (its bursts provoke UNAVAILABLE on purpose).
                for r in rules:
                    if r["name"] in ("AttnInstanceDown", "AttnNoReadyModel",
                                     "AttnQueueNearFull"):
                        self.assertEqual(r["state"], "inactive", r)

                if os.environ.get("ATTN_PRINT_QUERIES"):
                    for where, promql in evaluated:
                        print(f"{where}: {promql}")
                print(f"evaluated {len(evaluated)} expressions "
                      f"({len(dash)} dashboard, {len(alerts)} alert)")
            finally:
                if prometheus is not None:
                    prometheus.stop()
                server.stop()


if __name__ == "__main__":
    unittest.main()
