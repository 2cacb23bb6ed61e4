"""`ica signoff ...`, `ica refresh ...` and `ica gate evaluate --rollback` against a real ICA
over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from azdev_ica.cli.main import main
from tests.promotion.conftest import V1, Pipeline, use_promotion_policy
from tests.support.liveserver import LiveServer


@pytest.fixture
def server(app: Any) -> Any:
    live = LiveServer(app).start()
    yield live
    live.stop()


@pytest.fixture
def ica(monkeypatch: pytest.MonkeyPatch, server: Any, capsys: Any) -> Any:
    for name in ("TF_BUILD", "BUILD_BUILDID", "GITHUB_ACTIONS", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ICA_URL", server.url)

    def run(*argv: str, token: str) -> tuple[int, str, str]:
        monkeypatch.setenv("ICA_TOKEN", token)
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


def test_signoff_give_and_list(ica, make_person, make_key):
    quinn = make_person("quinn", [("azdev_signoff_qa", "ws")])
    given = ("signoff", "give", "--tenant", "ws", "--stage", "staging")
    code, out, _ = ica(*given, "--artifact-digest", V1, "--kind", "qa", token=quinn.token)
    assert (code, "qa for ws/staging" in out, "by quinn" in out) == (0, True, True)
    code, _, err = ica(*given, "--artifact-digest", V1, "--kind", "uat", token=quinn.token)
    assert (code, "[role_not_held]" in err) == (4, True)
    reader = make_key("azdev_auditor")
    code, out, _ = ica("signoff", "list", "--tenant", "ws", "--output", "json", token=reader)
    assert code == 0
    assert [item["kind"] for item in json.loads(out)] == ["qa"]


def test_refresh_request_approve_complete_list(ica, make_person, make_key):
    ops = make_key("azdev_devops")
    lani = make_person("lani", [("azdev_approver_tech", "ws")])
    code, out, _ = ica(
        "refresh", "request", "--tenant", "ws", "--target-stage", "test",
        "--reason", "training data", "--evidence-sha256", "ab" * 32,
        "--evidence-uri", "https://evidence.example/m.json",
        "--evidence-description", "masked", "--output", "json",
        token=ops,
    )  # fmt: skip
    assert code == 0
    request_id = str(json.loads(out)["id"])
    code, out, _ = ica("refresh", "approve", request_id, token=lani.token)
    assert (code, "approved" in out) == (0, True)
    code, out, _ = ica("refresh", "complete", request_id, token=ops)
    assert (code, "completed" in out) == (0, True)
    code, out, _ = ica("refresh", "list", "--status", "completed", token=ops)
    assert (code, f"refresh {request_id}: ws production -> test" in out) == (0, True)


def test_gate_evaluate_rollback(ica, ctx, make_key, client):
    use_promotion_policy(ctx)
    ops = make_key("azdev_devops")
    run_key = Pipeline(client, ops).start("to", "development", V1)
    code, out, _ = ica("gate", "evaluate", "--run-key", run_key, "--rollback", token=ops)
    assert (code, "rollback_not_last_good" in out) == (1, True)
    code, out, _ = ica("gate", "evaluate", "--run-key", run_key, "--version", "1.0.0", token=ops)
    assert (code, "gate: allow" in out) == (0, True)
