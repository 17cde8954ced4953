"""The chart's PrometheusRule and Grafana dashboard: the rule file is valid for a real rule checker
(promtool, built from the Go module proxy by scripts/controlplane/build-bins), each alert fires
on the series it is about (promtool unit tests, alerts_test.yaml), every dashboard query parses,
and the chart ships both files verbatim. That every metric they use exists in /metrics is
checked against a running operator in tests/operator.rs."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import CHART
from test_static import by_kind, render

HERE = Path(__file__).resolve().parent
RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"


@pytest.fixture(scope="session")
def promtool(bins: Path) -> str:
    return str(bins / "promtool")


def run(*args, cwd=None):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_promtool_accepts_the_rules(promtool):
    p = run(promtool, "check", "rules", RULES)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: 8 rules found" in p.stdout, p.stdout


def test_alerts_fire_on_what_they_are_about_and_only_then(promtool):
    p = run(promtool, "test", "rules", "alerts_test.yaml", cwd=HERE)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_every_alert_is_unit_tested_and_documented():
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    tested = {t["alertname"] for case in yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    readme = (CHART.parents[1] / "README.md").read_text()
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if rule["alert"] != "PgbaselinePendingReboot":  # fires after 24h: too long a series to be worth it
            assert rule["alert"] in tested, f"{rule['alert']} has no firing unit test"
        assert rule["alert"] in readme, f"{rule['alert']} missing from the README"


def test_chart_ships_the_rule_file_and_the_dashboard_verbatim(helm):
    docs = render(helm, "--set", "metrics.prometheusRule.enabled=true",
                  "--set", "metrics.prometheusRule.labels.release=kube-prometheus-stack",
                  "--set", "grafanaDashboard.enabled=true",
                  "--set", "grafanaDashboard.annotations.grafana_folder=Databases")
    (rule,) = by_kind(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "Databases"
    assert json.loads(cm["data"]["pgbaseline.json"]) == json.loads(DASHBOARD.read_text())
    # Off by default: neither needs a CRD or a Grafana the cluster may not have.
    assert not by_kind(render(helm), "PrometheusRule")
    assert not [d for d in by_kind(render(helm), "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]


def dashboard_targets():
    dash = json.loads(DASHBOARD.read_text())
    return dash, [(p, t) for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_is_well_formed():
    dash, targets = dashboard_targets()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "policy", "region"} <= variables
    assert targets
    for panel, target in targets:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for var in re.findall(r"\$(\w+)", target["expr"]):
            assert var in variables or var.startswith("__"), f"{panel['title']}: unknown ${var}"
    # Panels do not overlap on the 24-column grid.
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))


def test_every_dashboard_query_parses(promtool, tmp_path):
    """promtool parses each query as a recording rule, with Grafana's variables filled in."""
    _, targets = dashboard_targets()
    rules = []
    for i, (panel, target) in enumerate(targets):
        expr = (target["expr"].replace("$__rate_interval", "5m").replace("$policy", ".*")
                .replace("$region", ".*"))
        rules.append({"record": f"pgbaseline:dashboard_query_{i}", "expr": expr})
    f = tmp_path / "dashboard-queries.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    p = run(promtool, "check", "rules", f)
    assert p.returncode == 0, p.stdout + p.stderr
