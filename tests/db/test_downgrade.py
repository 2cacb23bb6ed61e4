"""`ica db downgrade` and `ica db upgrade` on a populated database (seed 000 §8.1: ICA's own
upgrades and rollbacks): one migration back and forward again keeps every row and the ledger
verifies after both; the ledger's migrations are forward-only and a downgrade across one is
refused with the reason, changing nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from azdev_ica.db import migrate
from azdev_ica.db.engine import make_engine
from azdev_ica.db.tables import Approval, ApprovalSignature, AuditEntry, PipelineRun
from azdev_ica.domain.approvals import Decision
from azdev_ica.jobs.sealer import seal_now
from azdev_ica.services.approvals import RequestApproval, request_approval, sign_approval
from tests.gates.conftest import PIPELINE, new_run


def _ica(ctx: Any, monkeypatch: Any, capsys: Any, *argv: str) -> tuple[int, str]:
    from azdev_ica.cli.main import main

    monkeypatch.setenv("ICA_DATA_DIR", str(ctx.ledger.store_dir.parent))
    monkeypatch.setenv("ICA_DATABASE_URL", ctx.db.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("ICA_SECRET_KEY", "s" * 48)
    monkeypatch.setenv("ICA_LEDGER_STORE_DIR", str(ctx.ledger.store_dir))
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out + captured.err


def _counts(ctx: Any) -> dict[str, int]:
    with ctx.read() as session:
        return {
            table.__name__: int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in (PipelineRun, Approval, ApprovalSignature, AuditEntry)
        }


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_one_migration_back_and_forward_on_a_populated_database(
    ctx: Any, make_person: Any, monkeypatch: Any, capsys: Any
) -> None:
    alice = make_person("alice", [("azdev_approver_tech", None)])
    bob = make_person("bob", [("azdev_approver_biz", None)])
    for tenant in ("to", "ck", "ws"):
        run_key = new_run(ctx, tenant=tenant, stage="production")
        approval = request_approval(
            ctx, principal=PIPELINE, command=RequestApproval(run_key=run_key)
        ).approval
        for person in (alice, bob):
            sign_approval(
                ctx,
                principal=person.principal(ctx),
                approval_id=approval.id,
                decision=Decision.APPROVE,
                comment="ok",
            )
    seal_now(ctx)
    before = _counts(ctx)
    assert before["Approval"] == 3
    assert before["ApprovalSignature"] == 6
    code, out = _ica(ctx, monkeypatch, capsys, "audit", "verify", "--quiet")
    assert code == 0, out

    head = migrate.head_revision()
    assert head is not None
    reason = migrate.forward_only_reason(head)
    code, out = _ica(ctx, monkeypatch, capsys, "db", "downgrade")
    ctx.db.engine.dispose()  # the schema changed under the pool's connections
    if reason is not None:  # the newest migration is itself forward-only: refused, unchanged
        assert code != 0
        assert reason in out
        assert migrate.current_revision(ctx.db.engine) == head
    else:
        assert code == 0, out
        previous = migrate.previous_revision(head)
        assert f"from {head} to {previous}" in out
        assert migrate.current_revision(ctx.db.engine) == previous
        code, out = _ica(ctx, monkeypatch, capsys, "db", "current")
        assert code != 0  # no longer current
        assert f"(head: {head})" in out
    code, out = _ica(ctx, monkeypatch, capsys, "audit", "verify", "--quiet")
    assert code == 0, out

    code, out = _ica(ctx, monkeypatch, capsys, "db", "upgrade")
    ctx.db.engine.dispose()
    assert code == 0, out
    assert migrate.current_revision(ctx.db.engine) == head
    assert _counts(ctx) == before
    code, out = _ica(ctx, monkeypatch, capsys, "audit", "verify", "--quiet")
    assert code == 0, out
    # And the upgraded database takes new work: one more approval, sealed and verified.
    run_key = new_run(ctx, tenant="sb", stage="production")
    request_approval(ctx, principal=PIPELINE, command=RequestApproval(run_key=run_key))
    seal_now(ctx)
    code, out = _ica(ctx, monkeypatch, capsys, "audit", "verify", "--quiet")
    assert code == 0, out


@pytest.mark.parametrize("revision", sorted(migrate.FORWARD_ONLY))
def test_a_downgrade_across_a_ledger_migration_is_refused_and_changes_nothing(
    empty_db_url: str, revision: str, monkeypatch: Any, capsys: Any, tmp_path: Any
) -> None:
    from azdev_ica.cli.main import main

    engine = make_engine(empty_db_url)
    try:
        migrate.upgrade(engine, revision)
        monkeypatch.setenv("ICA_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("ICA_DATABASE_URL", empty_db_url)
        monkeypatch.setenv("ICA_SECRET_KEY", "s" * 48)
        capsys.readouterr()
        code = main(["db", "downgrade"])
        err = capsys.readouterr().err
        assert code == 3
        assert f"cannot downgrade: {revision} is forward-only" in err
        assert "Restore a backup" in err
        assert migrate.current_revision(engine) == revision
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "revision", ["0004_approvals", "0005_gates"]
)  # evidence outside the ledger tables: the migration's own downgrade() refuses
def test_a_migration_that_refuses_its_own_downgrade_is_rolled_back(
    empty_db_url: str, revision: str, monkeypatch: Any, capsys: Any, tmp_path: Any
) -> None:
    from azdev_ica.cli.main import main

    engine = make_engine(empty_db_url)
    try:
        migrate.upgrade(engine, revision)
        monkeypatch.setenv("ICA_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("ICA_DATABASE_URL", empty_db_url)
        monkeypatch.setenv("ICA_SECRET_KEY", "s" * 48)
        capsys.readouterr()
        code = main(["db", "downgrade"])
        captured = capsys.readouterr()
        assert code == 3
        assert f"cannot downgrade: {revision} is forward-only" in captured.err
        assert "Traceback" not in captured.err
        assert migrate.current_revision(engine) == revision
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", ["upgrade", "downgrade"])
def test_the_help_says_it_works_on_the_database_directly(command: str, capsys: Any) -> None:
    from azdev_ica.cli.main import main

    with pytest.raises(SystemExit):
        main(["db", command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "on the database directly" in text
    assert ("forward-only" if command == "downgrade" else "one transaction") in text
