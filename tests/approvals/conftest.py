"""Shared set-up for approvals: a production run of Tonga and the people around it."""

from __future__ import annotations

from typing import Any

import pytest

from azdev_ica.auth.principal import Principal
from azdev_ica.auth.roles import Role
from azdev_ica.domain.runs import Provider
from azdev_ica.services.runs import StartRun, start_run

PROJECT = "6c3f0e1a-1111-4c2b-9d1e-0123456789ab"
RUN_KEY = f"ado:{PROJECT}:4711"
DIGEST = "sha256:" + "ab" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"
RITA_ADO_ID = "a1b2c3d4-0000-4000-8000-00000000rita"
TECH, BIZ = "azdev_approver_tech", "azdev_approver_biz"

PIPELINE = Principal.with_role(
    kind="api_key", id="api_key:ci", name="ci", role=Role.DEVOPS, tenants=None
)


@pytest.fixture
def run_key(ctx: Any) -> str:
    start_run(
        ctx,
        principal=PIPELINE,
        command=StartRun(
            provider=Provider.AZURE,
            project_id=PROJECT,
            run_id="4711",
            pipeline_name="farmer-registry-ci",
            commit=COMMIT,
            tenant="to",
            stage="production",
            artifact_digest=DIGEST,
            requested_for=RITA_ADO_ID,
        ),
    )
    return RUN_KEY


PEOPLE: dict[str, tuple[list[tuple[str, str | None]], list[tuple[str, str]]]] = {
    # rita triggered the run (and is a technical approver too)
    "rita": ([("azdev_devops", "to"), (TECH, "to")], [("ado", RITA_ADO_ID)]),
    # the approvers of Tonga; carol holds both roles
    "alice": ([(TECH, "to")], []),
    "bob": ([(BIZ, "to")], []),
    "carol": ([(TECH, "to"), (BIZ, "to")], []),
    # an approver for Samoa only
    "walt": ([(TECH, "ws"), (BIZ, "ws")], []),
}


class People:
    """The people of PEOPLE, each created on first use (a test pays only for whom it needs)."""

    def __init__(self, make_person: Any) -> None:
        self._make = make_person
        self._made: dict[str, Any] = {}

    def __getitem__(self, login: str) -> Any:
        if login not in self._made:
            grants, links = PEOPLE[login]
            self._made[login] = self._make(login, grants, links)
        return self._made[login]


@pytest.fixture
def people(make_person: Any) -> People:
    return People(make_person)
