"""`ica audit replay` rebuilds the gate's decisions, the locks and their queues, the overrides
and the unauthorised changes from the ledger alone, and they equal the live tables."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import text

from azdev_ica.audit.replay import replay_ledger
from azdev_ica.domain.runs import Phase
from azdev_ica.jobs.sealer import seal_now
from azdev_ica.services import locks, overrides
from azdev_ica.services.gates import EvaluateGate, evaluate
from azdev_ica.services.runs import FinishRun, RecordEvent, finish_run, record_event
from tests.gates.conftest import PIPELINE, new_run


def history(ctx: Any, clock: Any, people: dict[str, Any]) -> None:
    a, b, c = (new_run(ctx, stage="staging") for _ in range(3))
    for run_key in (a, b, c):
        evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key))
    record_event(ctx, principal=PIPELINE, command=RecordEvent(a, Phase.DEPLOY))
    finish_run(ctx, principal=PIPELINE, command=FinishRun(a, "success"))
    seal_now(ctx)
    evaluate(ctx, principal=PIPELINE, command=EvaluateGate(b))  # b takes the lock
    clock.advance(timedelta(minutes=61))
    evaluate(ctx, principal=PIPELINE, command=EvaluateGate(c))  # b's lease expired
    admin = people["admin"].principal(ctx)
    locks.release_lock(ctx, principal=admin, tenant="to", stage="staging", reason="stuck")
    rogue = new_run(ctx)
    record_event(ctx, principal=PIPELINE, command=RecordEvent(rogue, Phase.DEPLOY))
    hotfix = new_run(ctx, coverage=20)
    asked = overrides.request_override(ctx, principal=PIPELINE, run_key=hotfix, reason="CVE")
    ceo = people["ceo"].principal(ctx)
    overrides.sign_override(ctx, principal=ceo, override_id=asked.override.id, approve=True)
    evaluate(ctx, principal=PIPELINE, command=EvaluateGate(hotfix))
    clock.advance(timedelta(days=4))
    overrides.review_due(ctx)
    cfo = people["cfo"].principal(ctx)
    overrides.review_override(ctx, principal=cfo, override_id=asked.override.id, findings="ok")


def test_the_ledger_rebuilds_the_gate_tables_exactly(ctx, clock, make_person, database):
    people = {
        "admin": make_person("root", [("admin", None)]),
        "ceo": make_person("ceo", [("azdev_override_signer", None)]),
        "cfo": make_person("cfo", [("azdev_override_signer", "to")]),
    }
    history(ctx, clock, people)
    report = replay_ledger(ctx.db)
    assert report.ok, report.text()
    assert report.rows["azdev_gate_decision"] == (6, 6)
    assert report.rows["azdev_deploy_lock"] == (2, 2)
    assert report.rows["azdev_override"] == (1, 1)
    assert report.rows["azdev_override_signature"] == (1, 1)
    assert report.rows["azdev_unauthorised_change"] == (1, 1)

    with database.engine.begin() as conn:
        conn.execute(text("UPDATE azdev_deploy_lock SET holder_run_key = 'ado:x:1'"))
    tampered = replay_ledger(ctx.db)
    assert not tampered.ok
    assert {d.table for d in tampered.differences} == {"azdev_deploy_lock"}
