"""The tenant walk (issue 13, DESIGN.md rule 8): every route of the app's route table, called
with Samoa's (`ws`) credentials of every role against Tonga's (`to`) objects — their ids, run
keys, filters naming Tonga and bodies naming Tonga — must read nothing of Tonga's, change none
of Tonga's rows and write no ledger entry attributed to Tonga. New routes are walked as soon
as they exist: the walk reads the route table, not a list.

Tonga's objects carry markers (pipeline name, branch, titles, locations) that a Samoa caller
never sends, so any of them in an answer is a read of Tonga's data."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from azdev_ica.auth.roles import Role
from azdev_ica.db.tables import AuditInbox, Base, Person, PipelineRun
from tests.api.test_permissions import (
    BODIES,
    PATH_PARAMS,
    PUBLIC_PATHS,
    SIGN_IN_PATHS,
    SIGNED_PATHS,
    api_routes,
)
from tests.conftest import bearer

API = "/api/v1/azdev"
PROJECT = "6c3f0e1a-1111-4c2b-9d1e-0123456789ab"
DIGEST = "sha256:" + "cd" * 32
# What only Tonga's records hold; none of it may reach a Samoa caller.
MARKERS = (
    "tonga-pipeline-marker",
    "tonga-branch-marker",
    "tonga-requester-marker",
    "tonga-incident-marker",
    "tonga-backup-marker",
    "tonga-override-marker",
    "tonga-refresh-marker",
    "tonga-email-marker",
)
# Tables whose rows a Samoa caller's own requests may add or touch without concerning Tonga:
# the ledger (checked on its own: no entry attributed to Tonga), the caller's own credentials
# and idempotency records.
OWN_BOOKKEEPING = {"azdev_api_key", "azdev_idempotency"}


@pytest.fixture
def settings(settings: Any) -> Any:
    """The suite's settings, but a key's last use stamped at most once a minute, as shipped:
    the suite's default (every request) adds a write transaction to each of the walk's
    thousands of requests, and the stamp is no part of what the walk checks."""
    return settings.model_copy(update={"api_key_touch_seconds": 60})


def tonga_start(run_id: str, stage: str = "production") -> dict[str, Any]:
    return {
        "provider": "ado",
        "project_id": PROJECT,
        "run_id": run_id,
        "pipeline_name": "tonga-pipeline-marker",
        "branch": "refs/heads/tonga-branch-marker",
        "commit": "89abcdef0123456789abcdef0123456789abcdef",
        "tenant": "to",
        "stage": stage,
        "artifact_digest": DIGEST,
        "requested_for": "tonga-requester-marker",
    }


def ok(response: Any) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def tonga(client: Any, make_key: Any, make_person: Any, ctx: Any) -> dict[str, Any]:
    """Tonga's objects: runs with events, an approval, a lock, an override, an incident, a
    backup, a sign-off, a refresh request and a person."""
    admin = bearer(make_key("admin"))
    post = lambda path, body, headers=admin: client.post(f"{API}{path}", json=body, headers=headers)  # noqa: E731
    run = ok(post("/run/start", tonga_start("9001")))
    run_key = run["run_key"]
    ok(
        post(
            "/run/event",
            {"run_key": run_key, "phase": "build", "data": {"artifact_digest": DIGEST}},
        )
    )
    ok(post("/run/event", {"run_key": run_key, "phase": "deploy", "data": {"status": "succeeded"}}))
    finished = ok(post("/run/start", tonga_start("9002", "development")))
    ok(post("/run/finish", {"run_key": finished["run_key"], "status": "Succeeded"}))
    dev = ok(post("/run/start", tonga_start("9003", "development")))
    gate = ok(post("/gate/evaluate", {"run_key": dev["run_key"]}))
    approval = ok(post("/approval", {"run_key": run_key}))
    override = ok(post("/override", {"run_key": run_key, "reason": "tonga-override-marker"}))
    incident = ok(
        post(
            "/incident",
            {
                "title": "tonga-incident-marker",
                "severity": "high",
                "tenant": "to",
                "stage": "production",
            },
        )
    )
    backup = ok(
        post(
            "/dr/backup",
            {
                **BODIES["/dr/backup"],
                "location": "tonga-backup-marker",
            },
        )
    )
    refresh = ok(
        post(
            "/refresh",
            {
                **BODIES["/refresh"],
                "reason": "tonga-refresh-marker",
            },
        )
    )
    qa = make_person(
        "sione@example.to",
        [("azdev_signoff_qa", "to"), ("azdev_approver_tech", "to")],
        email="tonga-email-marker@example.to",
    )
    ok(
        client.post(
            f"{API}/signoff",
            json={"tenant": "to", "stage": "staging", "artifact_digest": DIGEST, "kind": "qa"},
            headers=qa.headers,
        )
    )
    with ctx.read() as session:
        run_pk = session.scalars(select(PipelineRun.id).where(PipelineRun.run_key == run_key)).one()
    return {
        "run_key": run_key,
        "finished_run_key": finished["run_key"],
        "run_pks": _tonga_run_pks(ctx),
        "run_pk": run_pk,
        "gate": gate["status"],
        "approval_id": str(approval["id"]),
        "override_id": str(override["id"]),
        "incident_id": str(incident["id"]),
        "backup_id": backup["id"],
        "request_id": str(refresh["id"]),
        "login": qa.login,
        "person_id": qa.person_id,
    }


def _tonga_run_pks(ctx: Any) -> list[int]:
    with ctx.read() as session:
        return list(session.scalars(select(PipelineRun.id).where(PipelineRun.tenant == "to")))


def tonga_rows(ctx: Any, run_pks: list[int], person_id: int) -> dict[str, set[str]]:
    """Every row of every table that belongs to Tonga: a tenant column naming it, a link to
    one of its runs, or its person."""
    found: dict[str, set[str]] = {}
    with ctx.read() as session:
        for table in Base.metadata.sorted_tables:
            if table.name in OWN_BOOKKEEPING or table.name.startswith("azdev_audit"):
                continue
            columns = table.c
            conditions = [
                columns[name] == "to" for name in ("tenant", "target_tenant") if name in columns
            ]
            if "run_pk" in columns:
                conditions.append(columns["run_pk"].in_(run_pks))
            if "person_id" in columns:
                conditions.append(columns["person_id"] == person_id)
            if table.name == Person.__tablename__:
                conditions.append(columns["id"] == person_id)
            if not conditions:
                continue
            query = select(table)
            clause = conditions[0]
            for condition in conditions[1:]:
                clause = clause | condition
            found[table.name] = {repr(tuple(row)) for row in session.execute(query.where(clause))}
    return found


def ledger_of_tonga(ctx: Any) -> int:
    with ctx.read() as session:
        return len(session.scalars(select(AuditInbox.id).where(AuditInbox.tenant == "to")).all())


def requests_for(route: Any, tonga: dict[str, Any], own_run_key: str) -> list[tuple[str, str, Any]]:
    """The requests a Samoa caller makes on one route: Tonga's ids in the path, a filter naming
    Tonga in the query, and bodies naming Tonga's run, Tonga itself, or Samoa's own run with a
    target in Tonga."""
    method = sorted(route.methods - {"HEAD"})[0]
    params = {**PATH_PARAMS, **{k: v for k, v in tonga.items() if isinstance(v, str)}}
    params.update(tenant="to", stage="production")
    path = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: params.get(m.group(1), "x"), route.path)
    suffix = re.sub(r"^/api(/v1)?/azdev", "", route.path)
    if method == "GET":
        query = "?tenant=to&stage=production&run_key=" + tonga["run_key"]
        if suffix == "/metrics/delivery":
            query += "&from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z"
        if suffix == "/report/monthly":
            query += "&month=2026-11"
        return [(method, path, None), (method, path + query, None)]
    if method not in {"POST", "PUT", "PATCH"}:
        return [(method, path, None)]
    body = _name_tonga(dict(BODIES.get(suffix, {})), tonga)
    bodies: list[Any] = [body]
    if suffix == "/run/start":
        # Tonga's run keys: the open one and the finished one, a higher attempt.
        for run_id in ("9001", "9002"):
            bodies.append({**body, "run_id": run_id, "tenant": "ws", "attempt": 2})
    if suffix == "/run/event":
        # Samoa's own run, deploying into Tonga.
        bodies.append(
            {
                "run_key": own_run_key,
                "phase": "deploy",
                "data": {"tenant": "to", "stage": "production", "status": "succeeded"},
            }
        )
        bodies.append(
            {"run_key": tonga["run_key"], "phase": "monitor", "data": {"trigger": "crash_loop"}}
        )
    if suffix == "/run/finish":
        bodies.append({"run_key": tonga["finished_run_key"], "status": "Failed", "attempt": 2})
    if suffix == "/approval/delegation":
        bodies.append({**body, "until": "2026-11-30T00:00:00Z", "to_login": tonga["login"]})
    if suffix == "/dr/drill":
        bodies.append({**body, "backup_id": tonga["backup_id"]})
    return [(method, path, item) for item in bodies]


def _name_tonga(body: dict[str, Any], tonga: dict[str, Any]) -> dict[str, Any]:
    if "run_key" in body:
        body["run_key"] = tonga["run_key"]
    if "tenant" in body:
        body["tenant"] = "to"
    return body


def caller_keys(make_key: Any, make_person: Any) -> dict[str, dict[str, str]]:
    """Samoa's callers: an API key of every role, and a person holding every role for Samoa
    (for what only a person may do: signing, sign-offs, decisions)."""
    callers = {f"key:{role.value}": bearer(make_key(role.value, ["ws"])) for role in Role}
    person = make_person("samoa-walker@example.ws", [(role.value, "ws") for role in Role])
    callers["person:all-roles"] = person.headers
    return callers


def test_samoa_reads_and_writes_nothing_of_tonga(app, client, ctx, make_key, make_person, tonga):
    callers = caller_keys(make_key, make_person)
    own = client.post(
        f"{API}/run/start",
        json={
            **tonga_start("5001"),
            "tenant": "ws",
            "pipeline_name": "samoa",
            "branch": None,
            "requested_for": None,
        },
        headers=callers["key:azdev_devops"],
    )
    assert own.status_code == 201, own.text
    own_run_key = own.json()["run_key"]
    rows_before = tonga_rows(ctx, tonga["run_pks"], tonga["person_id"])
    ledger_before = ledger_of_tonga(ctx)
    assert ledger_before > 0, "Tonga has nothing to walk"
    assert rows_before["azdev_pipeline_run"], "Tonga has nothing to walk"
    leaks: list[str] = []
    walked = 0
    for route in api_routes(app):
        if route.path in PUBLIC_PATHS | SIGN_IN_PATHS | SIGNED_PATHS:
            continue
        for method, path, body in requests_for(route, tonga, own_run_key):
            for who, headers in callers.items():
                response = client.request(method, path, json=body, headers=headers)
                walked += 1
                where = f"{who} {method} {path} {body}: {response.status_code}"
                assert response.status_code < 500, where
                leaks += [
                    f"{where} shows {marker}" for marker in MARKERS if marker in response.text
                ]
    assert walked > 1000, "the walk walked almost nothing"
    assert leaks == [], "\n".join(leaks)
    after = tonga_rows(ctx, tonga["run_pks"], tonga["person_id"])
    changed = {
        table: (sorted(map(str, rows_before.get(table, set()) ^ rows)))
        for table, rows in after.items()
        if rows != rows_before.get(table, set())
    }
    assert changed == {}
    assert ledger_of_tonga(ctx) == ledger_before


def production_rows(ctx: Any) -> dict[str, set[str]]:
    """Every row of Tonga's production stage: a tenant and stage column naming it, or a link
    to one of Tonga's production runs."""
    with ctx.read() as session:
        runs = list(
            session.scalars(
                select(PipelineRun.id).where(
                    PipelineRun.tenant == "to", PipelineRun.stage == "production"
                )
            )
        )
    found: dict[str, set[str]] = {}
    with ctx.read() as session:
        for table in Base.metadata.sorted_tables:
            if table.name in OWN_BOOKKEEPING or table.name.startswith("azdev_audit"):
                continue
            columns = table.c
            conditions = []
            for tenant_column, stage_column in (
                ("tenant", "stage"),
                ("tenant", "target_stage"),
                ("target_tenant", "target_stage"),
            ):
                if tenant_column in columns and stage_column in columns:
                    conditions.append(
                        (columns[tenant_column] == "to") & (columns[stage_column] == "production")
                    )
            if "run_pk" in columns:
                conditions.append(columns["run_pk"].in_(runs))
            if not conditions:
                continue
            clause = conditions[0]
            for condition in conditions[1:]:
                clause = clause | condition
            found[table.name] = {
                repr(tuple(row)) for row in session.execute(select(table).where(clause))
            }
    return found


def test_tongas_development_credentials_change_nothing_of_its_production(
    app, client, ctx, make_person, tonga
):
    """Stage scope: Tonga's own credentials limited to `development` (a key of every role,
    and a person holding every role there) walk every route against Tonga's production
    objects and change none of them."""
    from azdev_ica.auth.principal import Actor
    from azdev_ica.services.apikeys import create_api_key
    from azdev_ica.services.people import grant_role

    operator = Actor(kind="operator", id="test")
    callers = {
        f"key:{role.value}": bearer(
            create_api_key(
                ctx,
                actor=operator,
                name=f"dev-{role.value}",
                role=role,
                tenants=["to"],
                expires_at=None,
                stages=["development"],
            ).secret
        )
        for role in Role
    }
    person = make_person("dev-walker@example.to")
    for role in Role:
        grant_role(
            ctx, actor=operator, login=person.login, role=role, tenant="to", stages=["development"]
        )
    callers["person:all-roles"] = person.headers
    before = production_rows(ctx)
    assert before["azdev_pipeline_run"], "Tonga has no production run to walk"
    walked = 0
    for route in api_routes(app):
        if route.path in PUBLIC_PATHS | SIGN_IN_PATHS | SIGNED_PATHS:
            continue
        for method, path, body in requests_for(route, tonga, tonga["run_key"]):
            for who, headers in callers.items():
                response = client.request(method, path, json=body, headers=headers)
                walked += 1
                assert response.status_code < 500, f"{who} {method} {path}: {response.text}"
    assert walked > 1000, "the walk walked almost nothing"
    after = production_rows(ctx)
    changed = {
        table: sorted(before.get(table, set()) ^ rows)
        for table, rows in after.items()
        if rows != before.get(table, set())
    }
    assert changed == {}
