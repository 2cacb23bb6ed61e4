"""deploy/compose/compose.yaml: valid against the Compose specification (the schema
check-jsonschema ships), and built as operate.md says: two identical ICA replicas behind
nginx, which alone is trusted for forwarded headers, secrets only as Compose secrets, and
read-only containers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, DOCKERFILE, tool
from tests.deploy.dockerfile import read_stages

COMPOSE = DEPLOY / "compose" / "compose.yaml"
REPLICAS = ("ica-1", "ica-2")


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_the_compose_file_follows_the_compose_specification():
    done = validate(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_can_fail(tmp_path, compose):
    broken = dict(compose)
    broken["services"] = {**compose["services"], "ica-1": {**compose["services"]["ica-1"]}}
    broken["services"]["ica-1"]["replica_count"] = 2  # no such key in the specification
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    done = validate(path)
    assert done.returncode == 1
    assert "replica_count" in done.stdout


def test_two_identical_replicas_serve_behind_nginx(compose):
    services = compose["services"]
    ica_1, ica_2 = (services[name] for name in REPLICAS)
    assert ica_1 == ica_2
    # The image's own command (tests/deploy/test_image.py runs it).
    assert ica_1["command"] == read_stages(DOCKERFILE)[-1].exec_form("CMD")
    nginx = services["nginx"]
    env = nginx["environment"]
    assert [env["ICA_UPSTREAM_1"], env["ICA_UPSTREAM_2"]] == [f"{n}:8000" for n in REPLICAS]
    # ICA believes X-Forwarded-For and -Proto from nginx's fixed address, and from no one else.
    address = nginx["networks"]["backend"]["ipv4_address"]
    assert ica_1["environment"]["ICA_TRUSTED_PROXIES"] == f"{address}/32"
    # nginx fills in the template the nginx tests run, with every one of its variables.
    (mount,) = nginx["volumes"]
    source, target, mode = mount.split(":")
    assert (COMPOSE.parent / source).resolve() == DEPLOY / "nginx" / "ica.conf.template"
    assert target.startswith("/etc/nginx/templates/")
    assert mode == "ro"
    template = (DEPLOY / "nginx" / "ica.conf.template").read_text()
    assert set(re.findall(r"\$\{(ICA_[A-Z0-9_]+)\}", template)) == set(env)
    # The replicas wait for the migration; nginx for healthy replicas.
    assert ica_1["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert {nginx["depends_on"][n]["condition"] for n in REPLICAS} == {"service_healthy"}
    assert services["witness"]["command"][:2] == ["witness", "serve"]


def test_containers_are_read_only_and_secrets_never_sit_in_the_environment(compose):
    declared = set(compose["secrets"])
    for name, service in compose["services"].items():
        if name != "postgres":  # PostgreSQL writes its own data directory
            assert service.get("read_only") is True, name
        used = {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
        assert used <= declared, name
        for variable, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|DATABASE_URL|TOKEN|_KEY$", variable):
                assert f"{value}/".startswith("/run/secrets/"), (name, variable)
    for secret in compose["secrets"].values():
        assert set(secret) == {"file"}
    replica = compose["services"]["ica-1"]
    assert replica["environment"]["ICA_SECRETS_DIR"] == "/run/secrets"
    assert {"ica_database_url", "ica_secret_key", "ica_ledger_key"} <= set(replica["secrets"])
    assert replica["user"] == "10001:10001"


def test_ica_reads_its_settings_from_the_secrets_directory(tmp_path, monkeypatch, capsys):
    # What the replicas do with /run/secrets: a file per setting, the environment winning.
    from azdev_ica.cli.main import main

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    database = tmp_path / "from-secret.db"
    (secrets / "ica_database_url").write_text(f"sqlite:///{database}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ICA_DATABASE_URL", raising=False)
    monkeypatch.setenv("ICA_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ICA_SECRETS_DIR", str(secrets))
    assert main(["db", "upgrade"]) == 0
    assert database.exists()
    assert not (tmp_path / "var" / "ica.db").exists()
    # A variable in the environment wins over the file.
    other = tmp_path / "from-env.db"
    monkeypatch.setenv("ICA_DATABASE_URL", f"sqlite:///{other}")
    assert main(["db", "upgrade"]) == 0
    assert other.exists()
    capsys.readouterr()
    # A secrets directory that is not there is an error, not a silent default.
    monkeypatch.setenv("ICA_SECRETS_DIR", str(tmp_path / "absent"))
    assert main(["db", "current"]) == 3
    assert "ICA_SECRETS_DIR is not a directory" in capsys.readouterr().err
