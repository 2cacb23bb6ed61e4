"""A bounded schemathesis pass over every operation of the checked-in OpenAPI file, as each
role and anonymously, over real HTTP: no answer is a 5xx, and every answer matches the file
(content type and body schema, problem documents included).

`make fuzz` runs the long pass (ICA_FUZZ_EXAMPLES=50 examples per operation and role)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from azdev_ica.auth.principal import Actor
from azdev_ica.auth.roles import Role
from tests.conftest import T0
from tests.support.liveserver import LiveServer

COMMITTED = Path(__file__).resolve().parents[2] / "api" / "azdev-ica-openapi.yaml"
EXAMPLES = int(os.environ.get("ICA_FUZZ_EXAMPLES", "1"))
# Whether every status an operation can answer is declared (ST103) is not checked yet: public
# routes do not declare their 404s and 405s.
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]
CALLERS = ["anonymous", *(role.value for role in Role)]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, sqlite_policy_template: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """One server for the module, with an API key for every role (keys of all tenants)."""
    from azdev_ica.api.app import create_app
    from azdev_ica.clock import FrozenClock
    from azdev_ica.db.engine import Database
    from azdev_ica.ledger.keyfile import create_key_file
    from azdev_ica.services.apikeys import create_api_key
    from azdev_ica.settings import Settings

    folder = tmp_path_factory.mktemp("fuzz")
    shutil.copyfile(sqlite_policy_template, folder / "ica.db")
    configured = Settings(
        data_dir=folder,
        database_url=f"sqlite:///{folder / 'ica.db'}",
        secret_key="f" * 48,
        ledger_sealer=False,
        jobs_scheduler=False,
    )
    create_key_file(configured.resolved_ledger_key_file(), f"{configured.public_host}/audit")
    database = Database.from_url(configured.database_url, pool_size=5)
    app = create_app(configured, database=database, clock=FrozenClock(T0))
    operator = Actor(kind="operator", id="fuzz")
    keys = {
        role.value: create_api_key(
            app.state.ctx, actor=operator, name=role.value, role=role, tenants=None,
            expires_at=None,
        ).secret
        for role in Role
    }  # fmt: skip
    server = LiveServer(app).start()
    try:
        yield server.url, keys
    finally:
        server.stop()
        database.dispose()


def _count_operations() -> int:
    import yaml

    document = yaml.safe_load(COMMITTED.read_text(encoding="utf-8"))
    methods = {"get", "put", "post", "delete", "patch"}
    return sum(1 for item in document["paths"].values() for method in item if method in methods)


OPERATIONS = _count_operations()


def _operations() -> list[Any]:
    schema = schemathesis.openapi.from_path(COMMITTED)
    return [result.ok() for result in schema.get_all_operations()]


def _exerciser(operation: Any, base_url: str, headers: dict[str, str], failures: list[str]) -> Any:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def exercise(case: Any) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as failure:  # a check's failure, or a group
            failures.append(f"{operation.label}: {str(failure)[:600]}")

    return exercise


@pytest.mark.parametrize("caller", CALLERS)
def test_every_operation_answers_as_the_file_says(served, caller):
    base_url, keys = served
    headers = {} if caller == "anonymous" else {"Authorization": f"Bearer {keys[caller]}"}
    failures: list[str] = []
    operations = _operations()
    assert len(operations) == OPERATIONS  # every operation of the file, not a few

    for operation in operations:
        _exerciser(operation, base_url, headers, failures)()

    assert not failures, "\n\n".join(failures[:10])
