"""`ica audit replay`: the projections rebuilt from the ledger alone equal the live tables, and
any state change without its audit record shows up as a difference. Erasing a person keeps
both the ledger's verification and the replay intact."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from azdev_ica.audit.replay import replay_ledger
from azdev_ica.audit.verify import verify_ledger
from azdev_ica.auth.principal import Actor
from azdev_ica.auth.roles import Role
from azdev_ica.db.tables import AuditEntry, PersonalDataOpening, PipelineRun
from azdev_ica.domain.runs import Provider
from azdev_ica.errors import NotFound
from azdev_ica.jobs.sealer import checkpoint_store, seal_now
from azdev_ica.services.apikeys import create_api_key, revoke_api_key
from azdev_ica.services.ledger import erase_personal_data
from azdev_ica.services.runs import FinishRun, StartRun, finish_run, start_run
from tests.audit.ledgerdb import PIPELINE, activity, start, unguarded

OPERATOR = Actor(kind="operator", id="test")


def history(ctx: Any, clock: Any) -> str:
    """Every kind of action the projections know; the last ones still in the inbox."""
    activity(ctx, 2)
    key = create_api_key(
        ctx,
        actor=OPERATOR,
        name="ado-ws",
        role=Role.DEVOPS,
        tenants=["ws"],
        expires_at=clock.now() + timedelta(days=30),
    )
    revoke_api_key(ctx, actor=OPERATOR, prefix=key.key.prefix, reason="rotated")
    clock.advance(timedelta(minutes=5))
    run = start(ctx, 1, requested_for="aad-1", requested_for_email="ana@example.org")
    finish_run(ctx, principal=PIPELINE, command=FinishRun(run_key=run, status="Failed"))
    seal_now(ctx)
    clock.advance(timedelta(minutes=5))
    start_run(  # a re-run reopens the run; left unsealed
        ctx,
        principal=PIPELINE,
        command=StartRun(
            provider=Provider.AZURE,
            project_id="proj",
            run_id="1",
            pipeline_name="farmer-registry",
            attempt=2,
            tenant="ws",
            stage="test",
        ),
    )
    return run


def test_the_ledger_rebuilds_the_live_tables_exactly(ctx, clock):
    history(ctx, clock)
    report = replay_ledger(ctx.db)
    assert report.ok, report.text()
    assert report.pending >= 1
    assert report.rows["azdev_pipeline_run"] == (3, 3)
    assert report.rows["azdev_pipeline_run_attempt"] == (4, 4)
    assert report.rows["azdev_pipeline_event"] == (2, 2)
    assert report.rows["azdev_api_key"] == (1, 1)
    assert report.rows["azdev_policy_version"] == (1, 1)
    assert "ledger.open" in report.other_actions
    assert "RESULT: OK" in report.text()


def test_a_change_without_its_audit_record_is_a_gap(ctx, clock, database):
    run = history(ctx, clock)
    with database.engine.begin() as conn:
        conn.execute(
            text("UPDATE azdev_pipeline_run SET status = 'success' WHERE run_key = :k"),
            {"k": run},
        )
        run_pk = conn.scalar(
            text("SELECT id FROM azdev_pipeline_run WHERE run_key = :k"), {"k": run}
        )
        conn.execute(
            text(
                "INSERT INTO azdev_pipeline_event (run_pk, event_id, attempt, phase, "
                "occurred_at, recorded_at, data) VALUES (:pk, 'ghost', 1, 'deploy', "
                "'2026-11-02 10:00:00', '2026-11-02 10:00:00', '{}')"
            ),
            {"pk": run_pk},
        )
    report = replay_ledger(ctx.db)
    assert not report.ok
    found = {(d.table, d.key, d.column) for d in report.differences}
    assert found == {
        ("azdev_pipeline_run", run, "status"),
        ("azdev_pipeline_event", f"{run}/ghost", "(row)"),
    }
    assert "no audit record" in report.text()


def test_a_lost_audit_record_is_a_gap_too(ctx, clock, database):
    history(ctx, clock)
    seal_now(ctx)
    with unguarded(database, "azdev_audit_entry") as conn:
        conn.execute(text("DELETE FROM azdev_audit_entry WHERE action = 'apikey.revoke'"))
    report = replay_ledger(ctx.db)
    assert not report.ok
    assert [(d.table, d.column) for d in report.differences] == [("azdev_api_key", "revoked_at")]
    assert "apikey.revoke" in report.problems[0]
    assert "its entry was removed" in report.problems[0]


def test_erasing_a_person_keeps_the_ledger_verifiable_and_replayable(ctx, clock):
    run = history(ctx, clock)
    seal_now(ctx)
    with ctx.read() as session:
        before = [bytes(e) for e in session.scalars(select(AuditEntry.entry))]
    erased = erase_personal_data(ctx, actor=OPERATOR, kind="email", value="ana@example.org")
    assert erased.runs_cleared == 1
    seal_now(ctx)
    with ctx.read() as session:
        after = [bytes(e) for e in session.scalars(select(AuditEntry.entry))]
        values = set(session.scalars(select(PersonalDataOpening.value)))
        row = session.scalars(select(PipelineRun).where(PipelineRun.run_key == run)).one()
    assert after[: len(before)] == before  # nothing in the ledger changed
    assert b"ana@example.org" not in b"".join(after)
    assert "ana@example.org" not in values
    assert "aad-1" in values
    assert (row.requested_for, row.requested_for_email) == ("aad-1", None)
    assert verify_ledger(ctx.db, checkpoint_store(ctx.ledger)).ok
    report = replay_ledger(ctx.db)
    assert report.ok, report.text()
    assert "personal.erase" not in report.other_actions  # replayed: it clears people too
    with pytest.raises(NotFound):
        erase_personal_data(ctx, actor=OPERATOR, kind="email", value="ana@example.org")


def test_people_grants_links_and_tokens_replay_exactly(ctx, clock, database):
    from azdev_ica.services.people import (
        create_person,
        disable_person,
        grant_role,
        issue_personal_token,
        link_person,
        person_actor,
        revoke_grant,
    )

    create_person(ctx, actor=OPERATOR, login="ana@example.org", display_name="Ana", email="a@x.to")
    ben = create_person(ctx, actor=OPERATOR, login="ben@example.org", display_name="Ben")
    grant_role(ctx, actor=OPERATOR, login="ana@example.org", role=Role.APPROVER_TECH, tenant="to")
    grant_role(
        ctx,
        actor=OPERATOR,
        login="ben@example.org",
        role=Role.AUDITOR,
        expires_at=clock.now() + timedelta(days=1),
        reason="audit week",
    )
    link_person(
        ctx, actor=OPERATOR, login="ana@example.org", provider="ado", provider_user_id="u-1"
    )
    issue_personal_token(ctx, actor=person_actor(ben.id), login="ben@example.org", name="cli")
    seal_now(ctx)
    clock.advance(timedelta(minutes=1))
    revoke_grant(
        ctx,
        actor=OPERATOR,
        login="ana@example.org",
        role=Role.APPROVER_TECH,
        tenant="to",
        reason="x",
    )
    disable_person(ctx, actor=OPERATOR, login="ben@example.org", reason="left")  # unsealed
    report = replay_ledger(ctx.db)
    assert report.ok, report.text()
    assert report.rows["azdev_person"] == (2, 2)
    assert report.rows["azdev_role_grant"] == (2, 2)
    assert report.rows["azdev_person_link"] == (1, 1)
    assert report.rows["azdev_person_token"] == (1, 1)

    # A grant slipped in behind the services' back is a gap.
    with database.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO azdev_role_grant (person_id, role, tenant, granted_at, granted_by) "
                "SELECT id, 'admin', NULL, '2026-11-02 10:00:00', 'nobody' FROM azdev_person "
                "WHERE login = 'ana@example.org'"
            )
        )
    report = replay_ledger(ctx.db)
    assert [(d.table, d.column) for d in report.differences] == [("azdev_role_grant", "(row)")]


def test_stage_scopes_of_keys_and_grants_replay_exactly(ctx, clock, database):
    from azdev_ica.services.people import create_person, grant_role

    create_api_key(
        ctx,
        actor=OPERATOR,
        name="tonga-dev",
        role=Role.DEVOPS,
        tenants=["to"],
        expires_at=None,
        stages=["test", "development"],
    )
    create_person(ctx, actor=OPERATOR, login="ana@example.org", display_name="Ana")
    grant_role(
        ctx,
        actor=OPERATOR,
        login="ana@example.org",
        role=Role.APPROVER_TECH,
        tenant="to",
        stages=["staging"],
    )
    seal_now(ctx)
    report = replay_ledger(ctx.db)
    assert report.ok, report.text()
    assert report.rows["azdev_api_key"] == (1, 1)
    assert report.rows["azdev_role_grant"] == (1, 1)
    # Widening a scope behind the services' back is a gap.
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE azdev_role_grant SET stages = NULL"))
    report = replay_ledger(ctx.db)
    assert [(d.table, d.column) for d in report.differences] == [("azdev_role_grant", "stages")]
