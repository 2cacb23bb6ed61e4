"""`ica run start` reports the commit's time for lead time: --commit-time, else `git show` of
the run's commit in the agent's checkout (a real git repository here); without git, the
checkout or the commit, the start goes on without it."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from azdev_ica.cli.main import main
from azdev_ica.cli.pipeline import commit_time_from_git
from tests.conftest import bearer
from tests.support.liveserver import LiveServer

PROJECT = "6f2d1c9e-0000-4000-8000-00000000cccc"
RUN_KEY = f"ado:{PROJECT}:77"
COMMITTED = "2026-11-01T20:30:00+13:00"  # in Tonga; 07:30 UTC


def git(repo: Path, *argv: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": COMMITTED,
        "GIT_COMMITTER_DATE": COMMITTED,
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(repo),
    }
    config = ["-c", "user.name=Dev", "-c", "user.email=dev@example.org"]
    config += ["-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]
    result = subprocess.run(
        ["git", *config, *argv], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, str]:
    """A git repository with one commit (committed at COMMITTED); returns it and the sha."""
    repo = tmp_path / "checkout"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "README").write_text("registry\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "first")
    return repo, git(repo, "rev-parse", "HEAD")


@pytest.fixture
def server(app: Any) -> Any:
    live = LiveServer(app).start()
    yield live
    live.stop()


@pytest.fixture
def ica(monkeypatch: pytest.MonkeyPatch, server: Any, make_key: Any, capsys: Any) -> Any:
    for name in ("TF_BUILD", "GITHUB_ACTIONS", "GITHUB_RUN_ID", "BUILD_SOURCEVERSION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ICA_URL", server.url)
    monkeypatch.setenv("ICA_TOKEN", make_key("azdev_devops"))
    monkeypatch.setenv("BUILD_BUILDID", "77")
    monkeypatch.setenv("SYSTEM_TEAMPROJECTID", PROJECT)
    monkeypatch.setenv("BUILD_DEFINITIONNAME", "registry-cd")

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


@pytest.fixture
def commit_at(client: Any, make_key: Any) -> Any:
    """The run's recorded commit time, as a datetime (None: not reported)."""
    reader = bearer(make_key("azdev_auditor"))

    def read() -> datetime | None:
        answer = client.get(f"/api/v1/azdev/run/{RUN_KEY}", headers=reader)
        assert answer.status_code == 200, answer.text
        value = answer.json()["commit_at"]
        return None if value is None else datetime.fromisoformat(value)

    return read


def test_the_commit_time_comes_from_the_agents_checkout(
    ica, checkout, commit_at, monkeypatch, tmp_path
):
    repo, sha = checkout
    monkeypatch.chdir(repo)
    monkeypatch.setenv("BUILD_SOURCEVERSION", sha)  # Azure's commit variable
    code, out, err = ica("run", "start", "--tenant", "to", "--stage", "production")
    assert (code, err) == (0, "")
    assert commit_at() == datetime(2026, 11, 1, 7, 30, tzinfo=UTC)
    code, out, _ = ica("run", "show")
    assert f"commit {sha} (2026-11-01T07:30:00Z)" in out


def test_the_flag_wins_over_git(ica, checkout, commit_at, monkeypatch):
    repo, sha = checkout
    monkeypatch.chdir(repo)
    code, _, err = ica("run", "start", "--commit", sha, "--commit-time", "2026-10-30T12:00:00Z")
    assert (code, err) == (0, "")
    assert commit_at() == datetime(2026, 10, 30, 12, 0, tzinfo=UTC)


def test_a_commit_the_checkout_lacks_is_no_reason_to_fail(ica, checkout, commit_at, monkeypatch):
    repo, _ = checkout
    monkeypatch.chdir(repo)
    code, _, err = ica("run", "start", "--commit", "fedcba9876543210fedcba9876543210fedcba98")
    assert (code, err) == (0, "")
    assert commit_at() is None


def test_outside_a_checkout_or_without_git_the_start_goes_on(
    ica, checkout, commit_at, monkeypatch, tmp_path
):
    repo, sha = checkout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert commit_time_from_git(sha, cwd=str(elsewhere)) is None
    assert commit_time_from_git(sha, cwd=str(repo)) == COMMITTED
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", str(elsewhere))  # no git on this agent
    assert commit_time_from_git(sha) is None
    code, _, err = ica("run", "start", "--commit", sha)
    assert (code, err) == (0, "")
    assert commit_at() is None


def test_only_a_hex_sha_reaches_git(checkout):
    repo, _ = checkout
    for commit in (None, "", "HEAD", "--output=/tmp/x", "main", "abc12"):
        assert commit_time_from_git(commit, cwd=str(repo)) is None, commit


def test_a_commit_time_in_the_future_is_refused(ica):
    code, _, err = ica("run", "start", "--commit-time", "2027-01-01T00:00:00Z")
    assert (code, "422" in err, "future" in err) == (3, True, True)
    code, _, err = ica("run", "start", "--commit-time", "yesterday")
    assert (code, "422" in err) == (3, True)
