"""The policy file's `approvals` section: defaults, limits and the rules across its fields."""

from __future__ import annotations

import pytest

from azdev_ica.errors import PolicyError
from azdev_ica.policy import ApprovalPolicy, parse_policy
from tests.conftest import EXAMPLE_POLICY

BASE = EXAMPLE_POLICY.read_text().split("\napprovals:")[0]


def with_approvals(section: str) -> str:
    return BASE + "\napprovals:\n" + section


def test_without_the_section_the_seed_defaults_apply():
    policy = parse_policy(BASE)
    assert policy.approvals == ApprovalPolicy(
        sla_hours=4, warning_hours=2, expiry_hours=24, business_first_stages=frozenset()
    )


def test_the_shipped_example_spells_the_defaults():
    assert parse_policy(EXAMPLE_POLICY.read_text()).approvals == ApprovalPolicy()


def test_values_are_read():
    policy = parse_policy(
        with_approvals(
            "  sla_hours: 8\n  warning_hours: 6.5\n  expiry_hours: 47.5\n"
            "  business_first_stages: [staging, production]\n"
        )
    )
    assert policy.approvals == ApprovalPolicy(
        sla_hours=8,
        warning_hours=6.5,
        expiry_hours=47.5,
        business_first_stages=frozenset({"staging", "production"}),
    )


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ("  expiry_hours: 48\n", "/approvals/expiry_hours"),
        ("  expiry_hours: 0\n", "/approvals/expiry_hours"),
        ("  sla_hours: true\n", "/approvals/sla_hours"),
        ("  sla_hours: 2\n  warning_hours: 2\n", "must come before the SLA"),
        ("  business_first_stages: [prod]\n", "unknown stage 'prod'"),
        ("  business_first_stages: [staging, staging]\n", "/approvals/business_first_stages"),
        ("  escalate_to: ceo\n", "escalate_to"),
    ],
)
def test_invalid_sections_are_refused_naming_the_field(section, says):
    with pytest.raises(PolicyError) as caught:
        parse_policy(with_approvals(section), source="policy.yaml")
    assert says in caught.value.detail
    assert "policy.yaml:" in caught.value.detail
