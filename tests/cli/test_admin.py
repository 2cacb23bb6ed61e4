"""The admin commands an operator types: `ica init`, `ica apikey ...`, `ica db ...`, `ica policy
show`, on the embedded SQLite file and on PostgreSQL. Bad input is a message, never a traceback."""

from __future__ import annotations

import json
import re
import stat

import pytest

from azdev_ica.cli.main import main
from azdev_ica.db import migrate
from azdev_ica.policy import load_policy_file
from tests.cli.conftest import KEY_RE, RUNS
from tests.conftest import EXAMPLE_POLICY, bearer


class TestInit:
    def test_the_first_run_prepares_everything_and_shows_a_key_once(self, instance):
        code, out, err = instance.init()
        assert code == 0, err
        secret = instance.data_dir / "secret.key"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert len(secret.read_text().strip()) >= 32
        assert f"created the server secret {secret}" in out
        sha = load_policy_file(EXAMPLE_POLICY).sha256
        assert f"policy {sha[:12]} applied" in out
        assert len(KEY_RE.findall(out)) == 1
        if instance.database_url.startswith("sqlite"):
            assert (instance.data_dir / "ica.db").exists()

    def test_a_second_run_changes_nothing_and_shows_no_key(self, initialised):
        instance, _ = initialised
        secret = (instance.data_dir / "secret.key").read_text()
        code, out, _ = instance.init()
        assert code == 0
        assert KEY_RE.search(out) is None
        assert "unchanged" in out
        assert "created the server secret" not in out
        assert (instance.data_dir / "secret.key").read_text() == secret

    def test_the_printed_key_is_an_admin_key_of_the_served_app(self, initialised, http):
        _, key = initialised
        assert http.get("/ready").status_code == 200
        assert http.get(RUNS, headers=bearer(key)).status_code == 200
        assert (
            http.get(
                RUNS, headers=bearer(key[:-1] + ("B" if key.endswith("A") else "A"))
            ).status_code
            == 401
        )
        start = {"provider": "gh", "project_id": "1", "run_id": "2", "pipeline_name": "ci"}
        response = http.post("/api/v1/azdev/run/start", json=start, headers=bearer(key))
        assert response.status_code == 201  # a writer, as an admin is

    def test_a_changed_policy_is_not_applied_by_init(self, initialised, tmp_path):
        # Only the very first policy is applied directly: changes are proposed and signed
        # by two approvers (`ica policy propose`), see tests/policy/test_governance*.py.
        instance, _ = initialised
        changed = tmp_path / "policy.yaml"
        changed.write_text(EXAMPLE_POLICY.read_text().replace("Cook Islands", "Kūki ʻĀirani"))
        code, out, err = instance.run("init", "--policy", str(changed))
        assert code == 0  # `make run` goes on serving the active, signed policy
        assert "changes are governed" in err
        assert "not applied" in err
        assert "applied" not in out
        assert KEY_RE.search(out) is None

    def test_a_missing_policy_file_is_refused(self, instance, tmp_path):
        code, _, err = instance.run("init", "--policy", str(tmp_path / "absent.yaml"))
        assert code == 3
        assert "cannot read the policy file" in err

    def test_an_invalid_policy_is_refused_with_its_line(self, instance, tmp_path):
        bad = tmp_path / "bad.yaml"
        bad.write_text(EXAMPLE_POLICY.read_text().replace("Pacific/Efate", "Pacific/Nowhere"))
        code, out, err = instance.run("init", "--policy", str(bad))
        assert code == 3
        assert re.search(rf"{re.escape(str(bad))}:\d+: .*Pacific/Nowhere", err)
        assert KEY_RE.search(out) is None


class TestApiKeys:
    def test_create_list_revoke(self, initialised, http):
        instance, _ = initialised
        code, out, _ = instance.run(
            "apikey", "create", "--name", "samoa-ci", "--role", "azdev_devops", "--tenant", "ws"
        )
        assert code == 0
        [key] = KEY_RE.findall(out)
        prefix = key.split("_")[1]
        assert http.get(RUNS, headers=bearer(key)).status_code == 200

        code, out, _ = instance.run("apikey", "list")
        assert code == 0
        [line] = [line for line in out.splitlines() if line.startswith(prefix)]
        assert "active" in line
        assert "azdev_devops" in line
        assert "tenants=ws" in line
        assert "samoa-ci" in line
        assert key not in out  # a secret is shown once, never listed

        code, out, _ = instance.run("apikey", "revoke", prefix, "--reason", "rotated")
        assert code == 0
        assert f"revoked {prefix}" in out
        assert http.get(RUNS, headers=bearer(key)).status_code == 401

        code, out, _ = instance.run("apikey", "list", "--output", "json")
        assert code == 0
        listed = {item["prefix"]: item for item in json.loads(out)}
        assert listed[prefix]["revoked_at"] is not None
        assert listed[prefix]["tenants"] == ["ws"]
        assert listed[prefix]["last_used_at"] is not None
        assert sum(1 for item in listed.values() if item["role"] == "admin") == 1

    def test_revoke_takes_the_key_as_it_starts(self, initialised, http):
        # `ica_<prefix>` is how a key starts and how it shows up in a leaked log line.
        instance, _ = initialised
        _, out, _ = instance.run("apikey", "create", "--name", "leaky", "--role", "azdev_auditor")
        [key] = KEY_RE.findall(out)
        prefix = key.split("_")[1]
        code, out, err = instance.run("apikey", "revoke", f"ica_{prefix}", "--reason", "leaked")
        assert code == 0, err
        assert f"revoked {prefix}" in out
        assert http.get(RUNS, headers=bearer(key)).status_code == 401

    def test_a_key_limited_to_stages(self, initialised, http):
        instance, _ = initialised
        code, out, err = instance.run(
            "apikey", "create", "--name", "tonga-dev", "--role", "azdev_devops",
            "--tenant", "to", "--stage", "development", "--stage", "test",
        )  # fmt: skip
        assert code == 0, err
        [key] = KEY_RE.findall(out)
        prefix = key.split("_")[1]
        code, out, _ = instance.run("apikey", "list")
        [line] = [line for line in out.splitlines() if line.startswith(prefix)]
        assert "tenants=to" in line
        assert "stages=development,test" in line
        start = {
            "provider": "ado",
            "project_id": "6c3f0e1a-1111-4c2b-9d1e-0123456789ab",
            "run_id": "1",
            "pipeline_name": "registry",
            "tenant": "to",
            "stage": "production",
        }
        refused = http.post("/api/v1/azdev/run/start", json=start, headers=bearer(key))
        assert refused.status_code == 403
        allowed = {**start, "stage": "development"}
        assert (
            http.post("/api/v1/azdev/run/start", json=allowed, headers=bearer(key)).status_code
            == 201
        )
        code, _, err = instance.run(
            "apikey", "create", "--name", "x", "--role", "azdev_devops", "--stage", "moon"
        )
        assert code != 0
        assert "moon" in err

    def test_json_output_of_create(self, initialised):
        instance, _ = initialised
        code, out, _ = instance.run(
            "apikey", "create", "--name", "auditor", "--role", "azdev_auditor", "--output", "json"
        )
        assert code == 0
        created = json.loads(out)
        assert KEY_RE.fullmatch(created["key"])
        assert created["key"].split("_")[1] == created["prefix"]

    def test_a_key_with_a_future_expiry_works(self, initialised, http):
        instance, _ = initialised
        code, out, _ = instance.run(
            "apikey",
            "create",
            "--name",
            "temp",
            "--role",
            "azdev_auditor",
            "--expires",
            "2999-01-01",
        )
        assert code == 0
        assert http.get(RUNS, headers=bearer(KEY_RE.findall(out)[0])).status_code == 200

    @pytest.mark.parametrize("expires", ["2000-01-01", "2001-02-03T04:05:06+13:00"])
    def test_an_expiry_in_the_past_is_refused(self, initialised, expires):
        instance, _ = initialised
        code, out, err = instance.run(
            "apikey", "create", "--name", "old", "--role", "azdev_devops", "--expires", expires
        )
        assert code == 3
        assert "expiry must be in the future" in err
        assert KEY_RE.search(out) is None

    @pytest.mark.parametrize(
        ("args", "code", "message"),
        [
            (["--name", "x", "--role", "root"], 64, "invalid choice"),
            (["--name", "x", "--role", "admin", "--expires", "soon"], 64, "not a date or time"),
            (["--role", "admin"], 64, "--name"),
            (["--name", "x", "--role", "admin", "--tenant", "fiji"], 3, "unknown tenants: fiji"),
            (["--name", "  ", "--role", "admin"], 3, "1 to 100 characters"),
            (["--name", "n" * 101, "--role", "admin"], 3, "1 to 100 characters"),
        ],
    )
    def test_bad_input_is_a_clear_message(self, initialised, args, code, message):
        instance, _ = initialised
        got, out, err = instance.run("apikey", "create", *args)
        assert got == code
        assert message in err
        assert KEY_RE.search(out) is None

    def test_revoking_an_unknown_prefix(self, initialised):
        instance, _ = initialised
        code, _, err = instance.run("apikey", "revoke", "zzzzzzzzzz", "--reason", "x")
        assert code == 3
        assert "no API key" in err

    def test_revoke_needs_a_reason(self, initialised):
        instance, _ = initialised
        code, _, err = instance.run("apikey", "revoke", "zzzzzzzzzz")
        assert code == 64
        assert "--reason" in err


class TestDbAndPolicy:
    def test_db_current_is_head_after_init(self, initialised):
        instance, _ = initialised
        head = migrate.head_revision()
        code, out, _ = instance.run("db", "current")
        assert code == 0
        assert out.strip() == f"{head} (head: {head})"

    def test_db_current_on_an_empty_database_is_3(self, instance):
        code, out, _ = instance.run("db", "current")
        assert code == 3
        assert "(empty)" in out

    def test_policy_show_prints_the_active_policy(self, initialised):
        instance, _ = initialised
        code, out, _ = instance.run("policy", "show")
        assert code == 0
        shown = json.loads(out)
        assert [tenant["code"] for tenant in shown["tenants"]] == ["ck", "ws", "sb", "to", "vu"]
        assert shown == load_policy_file(EXAMPLE_POLICY).content

    def test_policy_show_without_a_policy(self, instance):
        (instance.data_dir).mkdir()
        (instance.data_dir / "secret.key").write_text("k" * 48)
        assert instance.run("db", "upgrade")[0] == 0
        code, _, err = instance.run("policy", "show")
        assert code == 3
        assert "no policy has been applied" in err


class TestBeforeInit:
    def test_commands_that_need_the_secret_say_so(self, instance):
        for argv in (
            ["apikey", "create", "--name", "x", "--role", "admin"],
            ["apikey", "list"],
            ["policy", "show"],
        ):
            code, _, err = instance.run(*argv)
            assert code == 3, argv
            assert "no server secret" in err
            assert "ica init" in err

    def test_commands_on_an_unmigrated_database_say_so(self, instance):
        instance.data_dir.mkdir()
        (instance.data_dir / "secret.key").write_text("k" * 48)
        for argv in (
            ["apikey", "list"],
            ["policy", "show"],
            ["apikey", "revoke", "x", "--reason", "r"],
        ):
            code, _, err = instance.run(*argv)
            assert code == 3, argv
            assert "ica db upgrade" in err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://localhost/ica", "unsupported database"),
        ("not a url", "not a database URL"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/ica", "the database refused"),
    ],
)
def test_a_bad_database_url_is_a_message(monkeypatch, tmp_path, capsys, url, message):
    monkeypatch.setenv("ICA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ICA_DATABASE_URL", url)
    for argv in (["db", "current"], ["db", "upgrade"]):
        assert main(argv) == 3
        err = capsys.readouterr().err
        assert message in err
        assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv", [[], ["frobnicate"], ["db"], ["db", "nonsense"], ["policy"], ["apikey"]]
)
def test_usage_errors_exit_64(capsys, argv):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 64
    assert "usage: ica" in capsys.readouterr().err
