"""The Prometheus rule file (deploy/prometheus/ica-rules.yaml): valid for `promtool check
rules`, its alerts fire as `promtool test rules` expects, and every metric its expressions
name is one a real scrape of ICA exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import bearer

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = RULES_DIR / "ica-rules.yaml"
RULES_TEST = RULES_DIR / "ica-rules.test.yaml"
# Series Prometheus makes itself for every scrape target.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make promtool` installs it (Debian package prometheus)"
    return found


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (a small parser, enough for rule files:
    strings, label matchers, grouping clauses, ranges and function calls are left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:ms|[smhdwy])?", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end() :].lstrip()
        if following.startswith("("):
            continue  # a function (rate, max, scalar, ...)
        if word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def rule_expressions() -> list[str]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule["expr"] for group in document["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules():
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_runs_the_rule_tests():
    done = subprocess.run(
        [promtool(), "test", "rules", str(RULES_TEST)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULES_DIR,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_seed_alerts_are_there():
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    alerts = {rule["alert"] for group in document["groups"] for rule in group["rules"]}
    assert {
        "IcaApprovalPending",
        "IcaApprovalTimeout",
        "IcaPipelineFailureStreak",
        "IcaUnreachable",
        "IcaDeploymentQueueLong",
        "IcaBudgetThreshold",
        "IcaLedgerStalled",
        "IcaWitnessSilent",
    } <= alerts


def test_the_parser_finds_names_and_nothing_else():
    expression = (
        'sum(rate(ica_http_requests_total{status=~"5.."}[5m])) / sum by (route) '
        '(rate(ica_http_requests_total[5m])) > 0.05 or up{job="ica"} == 0 '
        "or (a_b - scalar(min(c_d))) > 900 and on() ica_x offset 5m"
    )
    assert metric_names(expression) == {"ica_http_requests_total", "up", "a_b", "c_d", "ica_x"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_metric_the_rules_name_is_exported(client, make_key):
    response = client.get("/metrics", headers=bearer(make_key("azdev_monitoring")))
    assert response.status_code == 200
    exported = set()
    for family in text_string_to_metric_families(response.text):
        if family.type == "counter":
            exported |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            exported |= {f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum")}
        else:
            exported.add(family.name)
    used = set().union(*(metric_names(expression) for expression in rule_expressions()))
    assert used - PROMETHEUS_OWN, "no ICA metric found in the rules"
    assert used - PROMETHEUS_OWN - exported == set()
