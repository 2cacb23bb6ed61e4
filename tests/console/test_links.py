"""Every link ICA sends opens a page of the console.

The links are not listed by hand: `link_templates()` reads ICA's source and finds every place
that writes a `link` (a notification payload's `"link": ...`, a `link=...` argument, such as
an alert's or an API answer's `link` field), following the `*_link()` builders, and turns
each into a path template (`/approvals/{}`). The test fails on a template it cannot make a
real object for, so a new kind of link must be given one (and so must open a page).

Then real objects are made (a denied run with a critical scan, a dual approval over budget,
an emergency override, a policy proposal), and every link they put in the outbox and in the
API's answers, and every template filled with them, is opened in Chromium: a page (200,
HTML, the console's layout), never a 404 or JSON.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from sqlalchemy import select

import azdev_ica
from azdev_ica.db.tables import OutboxMessage
from azdev_ica.services.approvals import RequestApproval, request_approval
from azdev_ica.services.gates import EvaluateGate, evaluate
from azdev_ica.services.monthly_reports import keep_monthly_report
from azdev_ica.services.overrides import request_override
from azdev_ica.services.policy_changes import propose_policy
from tests.conftest import example_policy
from tests.console.test_foundation import sign_in
from tests.gates.conftest import PIPELINE, new_run

SOURCE = Path(azdev_ica.__file__).resolve().parent
# The console builds its own in-page links; the CLI prints links it received.
SKIPPED = ("web", "cli")


def _python_files() -> list[Path]:
    return [
        path
        for path in sorted(SOURCE.rglob("*.py"))
        if path.relative_to(SOURCE).parts[0] not in SKIPPED
    ]


def _template(node: ast.JoinedStr) -> str:
    text = "".join(
        str(part.value) if isinstance(part, ast.Constant) else "{}" for part in node.values
    )
    # The first value is the public URL (`ctx.public_url.rstrip('/')`, `_base(ctx)`).
    assert text.startswith("{}/"), f"a link not under the public URL: {text}"
    return text[2:]


def _builders(trees: dict[Path, ast.Module]) -> dict[str, ast.JoinedStr]:
    """`def x_link(...)` functions returning an f-string, by name."""
    found: dict[str, ast.JoinedStr] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_link"):
                returns = [n for n in ast.walk(node) if isinstance(n, ast.Return)]
                if len(returns) == 1 and isinstance(returns[0].value, ast.JoinedStr):
                    found[node.name] = returns[0].value
    return found


def link_templates() -> dict[str, set[str]]:
    """Every link ICA writes, as a path template, with where it is written (a copy: the
    source is read once per worker, and three tests ask)."""
    return {template: set(where) for template, where in _link_templates().items()}


@functools.cache
def _link_templates() -> dict[str, set[str]]:
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in _python_files()}
    builders = _builders(trees)
    templates: dict[str, set[str]] = {}
    for path, tree in trees.items():
        values: list[ast.expr] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                values += [
                    v
                    for k, v in zip(node.keys, node.values, strict=True)
                    if isinstance(k, ast.Constant) and k.value == "link"
                ]
            elif isinstance(node, ast.keyword) and node.arg == "link":
                values.append(node.value)
        for value in values:
            where = f"{path.relative_to(SOURCE)}:{value.lineno}"
            if isinstance(value, ast.JoinedStr):
                template = _template(value)
            elif isinstance(value, ast.Call):
                name = getattr(value.func, "attr", None) or getattr(value.func, "id", None)
                assert name in builders, f"{where}: a link built by {name}(), not understood"
                template = _template(builders[str(name)])
            elif isinstance(value, ast.Name | ast.Attribute | ast.Constant):
                # A link passed on (a parameter), none, or not a URL (the audit record of an
                # enrolment link holds the link's row id: the link itself is never sent).
                continue
            else:
                raise AssertionError(f"{where}: a link this test does not understand")
            templates.setdefault(template, set()).add(where)
    return templates


def test_the_links_are_found_in_the_source():
    templates = link_templates()
    # The kinds of link the notifications and API answers carry today (more may follow).
    for known in ("/approvals/{}", "/runs/{}", "/overrides/{}", "/policy/proposals/{}"):
        assert known in templates, sorted(templates)
    assert all(template.startswith("/") for template in templates)


@pytest.fixture
def objects(ctx: Any, run_key: str, make_person: Any) -> dict[str, Any]:
    """One real object behind each kind of link."""
    denied = new_run(ctx, tenant="to", critical=2)  # a scan.critical alert, then a denial
    assert evaluate(
        ctx, principal=PIPELINE, command=EvaluateGate(run_key=denied, tenant="to")
    ).status.value == ("deny")
    approval = request_approval(
        ctx,
        principal=PIPELINE,
        command=RequestApproval(
            run_key=run_key, cost_impact_minor=125_000, budget_minor=100_000, currency="NZD"
        ),
    ).approval  # over budget: a budget.threshold alert too
    broken = new_run(ctx, tenant="to", tests_passed=False)
    override = request_override(
        ctx, principal=PIPELINE, run_key=broken, reason="Farmers cannot register: hotfix"
    ).override
    admin = make_person("root@example.org", [("admin", None)])
    proposal = propose_policy(
        ctx,
        principal=admin.principal(ctx),
        document=example_policy().replace("sla_hours: 4", "sla_hours: 5"),
        reason="A longer SLA",
    ).proposal
    assert keep_monthly_report(ctx, month="2026-10")  # the report.monthly notification
    return {
        "report": "2026-10",
        "approval": approval.id,
        "run": denied,
        "override": override.id,
        "proposal": proposal.id,
        "admin": admin,
    }


# How to make each template real from the objects above.
FILL = {
    "/approvals/{}": "approval",
    "/runs/{}": "run",
    "/overrides/{}": "override",
    "/policy/proposals/{}": "proposal",
    "/reports/{}": "report",
}


def _outbox_links(ctx: Any) -> set[str]:
    with ctx.read() as session:
        rows = session.scalars(select(OutboxMessage)).all()
    return {str(row.payload["link"]) for row in rows if row.payload.get("link")}


def _api_links(server: Any, objects: dict[str, Any]) -> set[str]:
    links = set()
    base = f"{server.url}/api/v1/azdev"
    with httpx2.Client(headers=objects["admin"].headers, timeout=60) as client:
        for path in (
            f"/approval/{objects['approval']}",
            "/approvals",
            f"/override/{objects['override']}",
        ):
            answer = client.get(base + path)
            assert answer.status_code == 200, (path, answer.text)
            body = answer.json()
            for item in body.get("items", [body]):
                links.add(item["link"])
    return links


def test_every_link_opens_a_console_page(page, ctx, local_user, objects, server):
    templates = link_templates()
    unknown = {t: sorted(where) for t, where in templates.items() if "{}" in t and t not in FILL}
    assert not unknown, f"links with no object to open them with (add one to FILL): {unknown}"
    paths = {
        template.replace("{}", str(objects[FILL[template]])) if "{}" in template else template
        for template in templates
    }
    sent = _outbox_links(ctx)
    answered = _api_links(server, objects)
    # Every link really sent or answered has the shape of one found in the source.
    shapes = {t.split("{}")[0] for t in templates}
    for link in sent | answered:
        assert any(urlsplit(link).path.startswith(shape) for shape in shapes), link
    paths |= {urlsplit(link).path for link in sent | answered}
    assert len(sent) >= 4, sent  # approval, alerts, override, policy proposal

    # An administrator and auditor of every tenant may open all of them.
    person = local_user("admin@example.org", [("admin", None), ("azdev_auditor", None)], totp=True)
    sign_in(page, ctx, person)
    for path in sorted(paths):
        answer = page.goto(path)
        assert answer is not None
        assert answer.status == 200, path
        assert answer.headers["content-type"].startswith("text/html"), path
        assert page.locator("header.top nav").is_visible(), path
        assert page.locator("main h1").count() == 1, path


def test_make_run_serves_links_at_its_own_address(tmp_path):
    """`make run` with stand-ins for the virtual environment's programs: what `ica serve`
    gets as ICA_PUBLIC_URL, without and with one set by the caller."""
    import os
    import stat
    import subprocess

    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    seen = tmp_path / "seen.txt"
    for name in ("python", "ica"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $1 $ICA_PUBLIC_URL" >> "{seen}"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def served(extra_env: dict[str, str]) -> str:
        seen.write_text("")
        env = {k: v for k, v in os.environ.items() if k != "ICA_PUBLIC_URL"} | extra_env
        subprocess.run(
            ["make", "-s", "run", f"VENV={tmp_path / 'venv'}", "HOST=127.0.0.9", "PORT=8765"],
            cwd=SOURCE.parent.parent,
            env=env,
            check=True,
            capture_output=True,
        )
        (line,) = [x for x in seen.read_text().splitlines() if x.startswith("ica serve")]
        return line.removeprefix("ica serve ")

    assert served({}) == "http://127.0.0.9:8765"
    assert served({"ICA_PUBLIC_URL": "https://ica.example.org"}) == "https://ica.example.org"
