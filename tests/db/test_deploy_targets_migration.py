"""Migration 0014 fills in the target of deploy events recorded before it, exactly as the
service does for new ones (domain/runs.py `deploy_target`)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, select

from azdev_ica.db import migrate
from azdev_ica.db.engine import make_engine
from azdev_ica.db.tables import PipelineEvent, PipelineRun
from azdev_ica.domain.runs import deploy_target

AT = datetime(2026, 11, 1, 12, tzinfo=UTC)
RUN_DIGEST = "sha256:" + "a" * 64
EVENT_DIGEST = "sha256:" + "b" * 64


def test_existing_deploy_events_get_their_target(empty_db_url):
    engine = make_engine(empty_db_url)
    try:
        migrate.upgrade(engine, "0013_commit_time")
        events = {
            "own-target": ("deploy", {"status": "succeeded", "tenant": "ws", "stage": "test",
                                      "artifact_digest": EVENT_DIGEST}),
            "run-target": ("deploy", {"status": "succeeded"}),
            "blank-values": ("deploy", {"status": "failed", "tenant": "", "stage": 7}),
            "not-a-deploy": ("test", {"passed": True, "tenant": "ws"}),
        }  # fmt: skip
        with engine.begin() as conn:
            run_pk = conn.execute(
                insert(PipelineRun.__table__)
                .values(
                    run_key="ado:p:1", provider="ado", project_id="p", run_id="1",
                    pipeline_name="deploy", status="running", flagged=False, attempt=1,
                    start_time=AT, created_at=AT, updated_at=AT, tenant="to",
                    stage="production", artifact_digest=RUN_DIGEST,
                )
                .returning(PipelineRun.__table__.c.id)
            ).scalar_one()  # fmt: skip
            for event_id, (phase, data) in events.items():
                conn.execute(
                    insert(PipelineEvent.__table__).values(
                        run_pk=run_pk, event_id=event_id, attempt=1, phase=phase,
                        occurred_at=AT, recorded_at=AT, data=data,
                    )
                )  # fmt: skip
        migrate.upgrade(engine)
        with engine.connect() as conn:
            got = {
                row.event_id: (row.target_tenant, row.target_stage, row.target_digest)
                for row in conn.execute(select(PipelineEvent.__table__))
            }
    finally:
        engine.dispose()
    assert got == {
        "own-target": ("ws", "test", EVENT_DIGEST),
        "run-target": ("to", "production", RUN_DIGEST),
        "blank-values": ("to", "production", RUN_DIGEST),
        "not-a-deploy": (None, None, None),
    }
    # The same answer the service gives new events.
    for event_id, (phase, data) in events.items():
        expected = deploy_target(
            phase, data, run_tenant="to", run_stage="production", run_digest=RUN_DIGEST
        )
        assert got[event_id] == expected
