"""The policy's gate sections: validated with the line of each problem, parsed into rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from azdev_ica.errors import PolicyError
from azdev_ica.policy import parse_policy
from azdev_ica.policy.gates import normalise_dependency
from tests.conftest import EXAMPLE_POLICY

EXAMPLE = EXAMPLE_POLICY.read_text()


def test_the_commented_example_sections_are_valid_when_uncommented():
    start = EXAMPLE.index("# gates:")
    block = "\n".join(line[2:] for line in EXAMPLE[start:].splitlines())
    policy = parse_policy(EXAMPLE[:start] + block)
    gates = policy.gates
    assert gates.approval_stages == frozenset({"production", "dr"})
    assert gates.dependency_allow_list == frozenset({"pkg:pypi/fastapi", "pkg:pypi/sqlalchemy"})
    assert (gates.lock_lease, gates.override_signatures) == (timedelta(hours=1), 1)
    schedule = gates.schedule(tenant="to", stage="production", timezone="Pacific/Tongatapu")
    assert schedule.evaluate(datetime(2026, 11, 7, 12, 0, tzinfo=UTC)).open  # Sun 01:00 local
    assert not schedule.evaluate(datetime(2026, 11, 2, 9, 0, tzinfo=UTC)).open  # Mon 22:00


def test_the_defaults_are_the_seeds():
    gates = parse_policy(EXAMPLE).gates
    assert (gates.min_coverage_percent, gates.require_tests, gates.require_scan) == (80, True, True)
    assert (gates.overrides_per_quarter, gates.override_review) == (2, timedelta(hours=72))
    assert gates.dependency_allow_list is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("windows:\n  - stage: moon\n", "unknown stage 'moon'"),
        ("windows:\n  - {stage: test, tenant: xx}\n", "unknown tenant 'xx'"),
        ("windows:\n  - {stage: test, open: ['someday 10:00-11:00']}\n", "not a window"),
        (
            "windows:\n  - {stage: test, freezes: [{rule: 'FREQ=NEVER', hours: 1}]}\n",
            "recurrence rule",
        ),
        ("windows:\n  - {stage: test, freezes: [{hours: 1}]}\n", "either a start or"),
        ("gates:\n  approval_stages: [moon]\n", "unknown stage 'moon'"),
        ("gates:\n  min_coverage_percent: 101\n", "maximum"),
        ("overrides:\n  signatures: 3\n", "maximum"),
        ("locks:\n  skip: true\n", "Additional properties"),
    ],
)
def test_a_bad_section_is_refused_with_its_line(section, message):
    with pytest.raises(PolicyError) as refused:
        parse_policy(EXAMPLE + section, source="p.yaml")
    assert message in str(refused.value)
    assert "p.yaml:" in str(refused.value)


@pytest.mark.parametrize(
    ("given", "identity"),
    [
        ("pkg:pypi/Requests@2.32.3", "pkg:pypi/requests"),
        ("pkg:npm/%40scope/ui@1.0.0?arch=x64#dist", "pkg:npm/%40scope/ui"),
        ("pkg:pypi/requests", "pkg:pypi/requests"),
        (" left-pad ", "left-pad"),
    ],
)
def test_a_dependency_is_compared_without_its_version(given, identity):
    assert normalise_dependency(given) == identity
