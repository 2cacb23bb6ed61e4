"""A bounded schemathesis pass over every operation of the checked-in OpenAPI file, as each
role and anonymously, over real HTTP: no answer is a 5xx, and every answer matches the file
(content type and body schema, problem documents included). Then a stateful pass: scenarios
that follow the file's links from real answers (run/start -> run/event, gate, approval,
finish, lock, audit trail), as the pipeline's key and an administrator's, held to the same.

`make fuzz` runs the long passes (ICA_FUZZ_EXAMPLES=50 examples per operation and role;
ICA_FUZZ_SCENARIOS=100 scenarios of ICA_FUZZ_STEPS=40 steps per walker)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis.checks import not_a_server_error
from schemathesis.engine.errors import is_inconsistent_replay
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from azdev_ica.auth.principal import Actor
from azdev_ica.auth.roles import Role
from tests.conftest import EXAMPLE_POLICY, T0
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


# The stateful pass: schemathesis follows the file's links (run/start -> run/event, gate,
# approval, finish, audit ...) from the answers of a real server, as a pipeline does.
SCENARIOS = int(os.environ.get("ICA_FUZZ_SCENARIOS", "6"))
STEPS = int(os.environ.get("ICA_FUZZ_STEPS", "16"))
RUN_START = "POST /api/v1/azdev/run/start"
NEED_THE_RUN = {
    "POST /api/v1/azdev/run/event",
    "POST /api/v1/azdev/run/finish",
    "GET /api/v1/azdev/run/{run_key}",
    "POST /api/v1/azdev/gate/evaluate",
}
# Who walks the flows: the pipeline's key, and an administrator's (which reads the audit
# trail and releases locks too). Anonymous callers and the other roles cannot start a run,
# so no flow begins; the stateless pass covers them.
WALKERS = ["azdev_devops", "admin"]
SECRET_MARKERS = ["token", "secret", "password", "auth", "session", "passwd", "credential"]


def _post_or_listing(operation: Any, node: Any, produced_anywhere: Any) -> bool:
    """schemathesis's own root rule without its guess at foreign keys from names: that guess
    takes run/start's `project_id` for a reference to a "Project" nothing creates, and so never
    starts a scenario from run/start."""
    return operation.method == "post" or (
        operation.method == "get" and not operation.path_parameters
    )


def _policy_targets() -> dict[str, list[str]]:
    import yaml

    policy = yaml.safe_load(EXAMPLE_POLICY.read_text(encoding="utf-8"))
    return {
        "tenant": [tenant["code"] for tenant in policy["tenants"]],
        "stage": [stage["name"] for stage in policy["stages"]],
    }


TARGETS = _policy_targets()
WELL_FORMED_CODE = re.compile(r"^[a-z][a-z0-9_-]{1,31}$")


def _targets_of_the_policy(context: Any, body: Any) -> Any:
    """A well-formed tenant or stage in a generated body becomes one the policy has (the same
    one for the same value), so that runs have a target and the gate gets past "unknown
    tenant"; malformed ones are left for the server to refuse."""
    if isinstance(body, dict):
        for field, known in TARGETS.items():
            value = body.get(field)
            if isinstance(value, str) and WELL_FORMED_CODE.match(value) and value not in known:
                body[field] = known[len(value) % len(known)]
    return body


def _workflow(
    monkeypatch: pytest.MonkeyPatch,
    base_url: str,
    headers: dict[str, str],
    failures: list[str],
    walked: list[tuple[str | None, str, int]],
    scenarios: list[int],
) -> Any:
    import schemathesis.specs.openapi.stateful as stateful

    # The file's links only: links inferred from names would be followed too (and guessed).
    # A failure shows the run keys it used: schemathesis's markers of secrets' names less
    # "key" (the Authorization header is still filtered).
    config = schemathesis.Config.from_dict(
        {
            "phases": {"stateful": {"inference": {"algorithms": []}}},
            "output": {"sanitization": {"sensitive-markers": SECRET_MARKERS}},
        }
    )
    schema = schemathesis.openapi.from_path(COMMITTED, config=config)
    schema.hook("map_body")(_targets_of_the_policy)
    with monkeypatch.context() as patched:
        patched.setattr(stateful, "is_likely_root_transition", _post_or_listing)
        machine: Any = schema.as_state_machine()
    assert RUN_START in machine._root_labels  # else no scenario starts a run

    class Workflow(machine):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            self.steps: list[str] = []
            scenarios.append(len(walked))

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base_url, "headers": headers, "timeout": 30}

        def step(self, input: Any) -> Any:
            output = super().step(input)
            link = None if input.transition is None else input.transition.id
            walked.append((link, input.case.operation.label, output.response.status_code))
            return output

        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            self.steps.append(f"{case.operation.label} -> {response.status_code}")
            try:
                case.validate_response(
                    response, checks=CHECKS, transport_kwargs=kwargs, recorder=self.recorder
                )
            except (Exception, BaseExceptionGroup) as failure:
                # Kept, not raised: shrinking would replay the scenario against a server whose
                # state has moved on. The scenario's steps so far say how it got there.
                failures.append(
                    " | ".join(self.steps)
                    + f"\n{case.as_curl_command(headers=headers)}\n"
                    + str(failure)[:800]
                )

    return Workflow


def _walk(workflow: Any, scenarios: list[int]) -> int:
    """Run SCENARIOS scenarios; return how many Hypothesis runs that took.

    Hypothesis assumes that the same choices make the same test case. Against a live server
    they need not: a run/start repeated in a later scenario answers 200 where it answered 201,
    so other links become possible and the next draw differs, and Hypothesis stops the run
    with FlakyStrategyDefinition (schemathesis's own runner ends its stateful phase there).
    Here a fresh run, with the next seed, carries on until the scenarios are done. Nothing a
    check found is lost: failures are kept as they happen, not raised."""
    runs = 0
    stalled = 0
    while len(scenarios) < SCENARIOS:
        before = len(scenarios)
        runs += 1
        try:
            seed(runs)(workflow).run(
                settings=settings(
                    max_examples=SCENARIOS - before,
                    stateful_step_count=STEPS,
                    deadline=None,
                    database=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
            )
        except (FlakyStrategyDefinition, AssertionError) as inconsistent:
            if isinstance(inconsistent, AssertionError) and not is_inconsistent_replay(
                inconsistent
            ):
                raise
        stalled = stalled + 1 if len(scenarios) == before else 0
        assert stalled < 3, "Hypothesis runs end before a scenario starts"
    return runs


@pytest.mark.parametrize("caller", WALKERS)
def test_linked_flows_answer_as_the_file_says(served, caller, monkeypatch):
    base_url, keys = served
    failures: list[str] = []
    walked: list[tuple[str | None, str, int]] = []
    scenarios: list[int] = []
    workflow = _workflow(
        monkeypatch,
        base_url,
        {"Authorization": f"Bearer {keys[caller]}"},
        failures,
        walked,
        scenarios,
    )
    runs = _walk(workflow, scenarios)
    print(f"{caller}: {len(scenarios)} scenarios, {len(walked)} steps, {runs} Hypothesis runs")
    assert not failures, "\n\n".join(failures[:10])
    # Not a pass that never got going: a run was started, and an operation that answers 404
    # for an unknown run, reached by a link from run/start's answer, answered 2xx (the run's
    # key went where the link says).
    assert (None, RUN_START, 201) in walked, f"no run was started: {walked}"
    assert any(
        link is not None and link.startswith(RUN_START) and label in NEED_THE_RUN and status < 300
        for link, label, status in walked
    ), f"no step reached a started run by a link: {walked}"
