"""The test agent evaluates conditions as Azure DevOps documents them (learn.microsoft.com,
"Pipeline conditions"): the default is succeeded(); succeeded(), failed() and
succeededOrFailed() are false in a cancelled run; always() is true and canceled() is true only
then; a stage's condition does not carry over to its jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipelines.ado import Agent, Unsupported, _Condition


@pytest.mark.parametrize(
    ("condition", "canceled", "previous", "expected"),
    [
        ("succeeded()", False, ["Succeeded", "SucceededWithIssues"], True),
        ("succeeded()", False, ["Succeeded", "Failed"], False),
        ("succeeded()", True, ["Succeeded"], False),
        ("failed()", False, ["Succeeded", "Failed"], True),
        ("failed()", True, ["Failed"], False),
        ("succeededOrFailed()", False, ["Failed"], True),
        ("succeededOrFailed()", True, ["Failed"], False),
        ("always()", True, ["Failed"], True),
        ("canceled()", True, [], True),
        ("canceled()", False, [], False),
        ("and(always(), not(canceled()))", True, [], False),
        ("or(failed(), canceled())", True, [], True),
        ("eq(dependencies.a.result, 'Canceled')", False, [], True),
        ("in(dependencies.a.result, 'Failed', 'Succeeded')", False, [], False),
    ],
)
def test_status_functions(condition, canceled, previous, expected):
    assert _Condition(condition, canceled, previous, {"a": "Canceled"}).value() is expected


@pytest.mark.parametrize(
    "condition", ["succeeded('a')", "variables.x", "variables['x'", "eq(1)", "always("]
)
def test_anything_else_fails_the_test(condition):
    with pytest.raises((Unsupported, KeyError)):
        _Condition(condition, False, [], {}).value()


def _pipeline(job_condition: str | None) -> dict:
    job: dict = {"job": "close", "steps": [{"bash": "true", "condition": "always()"}]}
    if job_condition is not None:
        job["condition"] = job_condition
    return {
        "stages": [
            {"stage": "one", "jobs": [{"job": "a", "steps": [{"bash": "true"}]}]},
            {"stage": "two", "dependsOn": "one", "condition": "always()", "jobs": [job]},
        ]
    }


@pytest.mark.parametrize(("job_condition", "runs"), [(None, False), ("always()", True)])
def test_a_stage_condition_does_not_carry_over_to_its_job(tmp_path: Path, job_condition, runs):
    agent = Agent(workdir=tmp_path, path="/usr/bin:/bin", predefined={}, cancel_before="true")
    results = agent.run(_pipeline(job_condition))
    assert results["one"] == "Canceled"
    assert any(step.stage == "two" and step.code == 0 for step in agent.log) is runs


@pytest.mark.parametrize(
    ("condition", "variables", "expected"),
    [
        ("eq(variables['ICA_ROLLBACK'], 'true')", {"ICA_ROLLBACK": "true"}, True),
        ("eq(variables['ICA_ROLLBACK'], 'true')", {}, False),  # not set: the empty string
        ("and(failed(), eq(variables['A'], 'true'))", {"A": "true"}, True),
    ],
)
def test_variables_as_azure_devops_reads_them(condition, variables, expected):
    assert _Condition(condition, False, ["Failed"], {}, variables).value() is expected
