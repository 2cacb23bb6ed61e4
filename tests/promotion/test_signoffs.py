"""Sign-offs over HTTP, on both databases: bound to tenant, stage and digest; signed only by a
person holding the kind's role for that tenant; never by the run's requester; never across
tenants; a second sign-off of the same binding answers with the first; replayed from the
ledger; append-only."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from azdev_ica.audit.replay import replay_ledger
from azdev_ica.errors import PolicyError
from azdev_ica.policy import parse_policy
from tests.conftest import bearer, example_policy
from tests.promotion.conftest import API, V1, V2, sign_off


@pytest.fixture
def people(make_person: Any) -> dict[str, Any]:
    return {
        "quinn": make_person("quinn", [("azdev_signoff_qa", "ws")]),
        "rae": make_person("rae", [("azdev_signoff_qa", None)]),
        "uma": make_person("uma", [("azdev_signoff_uat", "ws")], [("ado", "uma-ado")]),
        "tui": make_person("tui", [("azdev_signoff_uat", "to")]),
    }


def test_a_signoff_is_bound_to_tenant_stage_and_digest(client, people, ctx):
    given = sign_off(client, people["quinn"], "ws", "staging", V1, "qa", comment="regression ok")
    assert given.status_code == 201, given.text
    body = given.json()
    assert (body["tenant"], body["stage"], body["artifact_digest"], body["kind"]) == (
        "ws",
        "staging",
        V1,
        "qa",
    )
    assert (body["signed_by"], body["role"]) == ("quinn", "azdev_signoff_qa")
    # The same binding again, by anyone allowed: the recorded one, not a second record.
    again = sign_off(client, people["rae"], "ws", "staging", V1, "qa")
    assert (again.status_code, again.json()["id"], again.json()["signed_by"]) == (
        200,
        body["id"],
        "quinn",
    )
    # Another digest or stage is another sign-off.
    assert sign_off(client, people["rae"], "ws", "staging", V2, "qa").status_code == 201
    assert sign_off(client, people["rae"], "ws", "test", V1, "qa").status_code == 201
    listed = client.get(
        f"{API}/signoff?tenant=ws&stage=staging&digest={V1}", headers=people["rae"].headers
    )
    assert [item["id"] for item in listed.json()] == [body["id"]]


def test_the_role_must_be_held_for_that_tenant(client, people):
    # Quinn signs QA for Samoa only: not UAT, not for Tonga.
    refused = sign_off(client, people["quinn"], "ws", "production", V1, "uat")
    assert refused.status_code == 403
    assert (refused.json()["type"], refused.json()["code"]) == (
        "urn:ica:problem:signoff-refused",
        "role_not_held",
    )
    cross = sign_off(client, people["quinn"], "to", "staging", V1, "qa")
    assert cross.status_code == 403
    assert cross.json()["type"] == "urn:ica:problem:tenant-out-of-scope"
    # Tonga's national counterpart cannot sign Samoa's UAT either.
    other = sign_off(client, people["tui"], "ws", "production", V1, "uat")
    assert other.status_code == 403


def test_only_people_sign_off_and_ci_is_not_signed(client, make_key, people):
    key = bearer(make_key("azdev_signoff_qa"))
    body = {"tenant": "ws", "stage": "staging", "artifact_digest": V1, "kind": "qa"}
    refused = client.post(f"{API}/signoff", json=body, headers=key)
    assert refused.status_code == 403
    assert refused.json()["type"] == "urn:ica:problem:person-required"
    ci = sign_off(client, people["quinn"], "ws", "test", V1, "ci")
    assert ci.status_code == 422
    for bad in ({"artifact_digest": "sha256:xyz"}, {"tenant": "WS"}, {"stage": "moon"}):
        response = client.post(
            f"{API}/signoff", json={**body, **bad}, headers=people["quinn"].headers
        )
        assert response.status_code == 422, bad


def test_the_requester_of_a_run_of_that_artifact_cannot_sign_it_off(client, make_key, people):
    ci = bearer(make_key("azdev_devops"))
    start = {
        "provider": "ado",
        "project_id": "p1",
        "run_id": "77",
        "pipeline_name": "cd",
        "tenant": "ws",
        "stage": "staging",
        "artifact_digest": V1,
        "requested_for": "uma-ado",
    }
    assert client.post(f"{API}/run/start", json=start, headers=ci).status_code == 201
    refused = sign_off(client, people["uma"], "ws", "production", V1, "uat")
    assert refused.status_code == 403
    assert refused.json()["code"] == "requester_cannot_sign"
    # Another artifact she did not run: fine.
    assert sign_off(client, people["uma"], "ws", "production", V2, "uat").status_code == 201


def test_whoever_triggered_any_attempt_of_the_run_cannot_sign_it_off(
    client, make_key, make_person, people
):
    """A re-run started by someone else: the person who re-ran it and the person who triggered
    the first attempt are both requesters of the run, and neither signs its artifact off."""
    ci = bearer(make_key("azdev_devops"))
    ulla = make_person("ulla", [("azdev_signoff_uat", "ws")], [("ado", "ulla-ado")])
    start = {"provider": "ado", "project_id": "p1", "run_id": "78", "pipeline_name": "cd",
             "tenant": "ws", "stage": "staging", "artifact_digest": V1,
             "requested_for": "ulla-ado"}  # fmt: skip
    assert client.post(f"{API}/run/start", json=start, headers=ci).status_code == 201
    rerun = {**start, "attempt": 2, "requested_for": "uma-ado"}  # uma re-ran ulla's run
    assert client.post(f"{API}/run/start", json=rerun, headers=ci).status_code == 200
    for person in (people["uma"], ulla):
        refused = sign_off(client, person, "ws", "production", V1, "uat")
        assert (refused.status_code, refused.json().get("code")) == (403, "requester_cannot_sign")
    assert sign_off(client, people["uma"], "ws", "production", V2, "uat").status_code == 201


def test_a_scoped_reader_sees_only_its_tenants(client, people, make_key):
    assert sign_off(client, people["quinn"], "ws", "staging", V1, "qa").status_code == 201
    assert sign_off(client, people["tui"], "to", "production", V1, "uat").status_code == 201
    tonga = bearer(make_key("azdev_auditor", ["to"]))
    assert [s["tenant"] for s in client.get(f"{API}/signoff", headers=tonga).json()] == ["to"]
    everyone = bearer(make_key("azdev_auditor"))
    assert len(client.get(f"{API}/signoff", headers=everyone).json()) == 2


def test_signoffs_replay_and_are_append_only(client, people, ctx, database):
    assert sign_off(client, people["quinn"], "ws", "staging", V1, "qa").status_code == 201
    assert sign_off(client, people["uma"], "ws", "production", V1, "uat").status_code == 201
    report = replay_ledger(ctx.db)
    assert report.ok, report.text()
    assert report.rows["azdev_signoff"] == (2, 2)
    with pytest.raises(DBAPIError), database.engine.begin() as conn:
        conn.execute(text("UPDATE azdev_signoff SET kind = 'uat'"))


def test_the_policy_section_is_validated_with_line_numbers():
    policy = parse_policy(example_policy(promotion=True))
    assert policy.promotion is not None
    assert {
        stage: sorted(k.value for k in kinds) for stage, kinds in policy.promotion.requires.items()
    } == {
        "test": ["ci"],
        "staging": ["qa"],
        "production": ["data", "uat"],
    }
    assert not policy.promotion.rollback_without_approval("production")
    assert parse_policy(example_policy()).promotion is None
    base = example_policy()
    per_stage = parse_policy(base + "promotion:\n  rollback_without_approval: {production: true}\n")
    assert per_stage.promotion is not None
    assert per_stage.promotion.rollback_without_approval("production")
    assert not per_stage.promotion.rollback_without_approval("staging")
    lines = base.count("\n")
    for section, message in (
        (
            "promotion:\n  requires:\n    moon: [qa]\n",
            f"policy.yaml:{lines + 3}: /promotion/requires/moon: unknown stage",
        ),
        (
            "promotion:\n  requires:\n    test: [cake]\n",
            f"policy.yaml:{lines + 3}: /promotion/requires/test/0",
        ),
        ("promotion:\n  rollback_without_approval: {moon: true}\n", "unknown stage 'moon'"),
        ("promotion:\n  surprise: 1\n", f"policy.yaml:{lines + 2}"),
    ):
        with pytest.raises(PolicyError) as caught:
            parse_policy(base + section, source="policy.yaml")
        assert message in caught.value.detail, caught.value.detail
