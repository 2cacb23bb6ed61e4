"""Who requested a run: whoever triggered any of its attempts.

A re-run started by someone else makes that person a requester too, and the person who
triggered the first attempt stays one. Every segregation-of-duties check that asks "did this
person request the change?" (approvals, emergency overrides, promotion sign-offs) reads the
answer here, so none of them compares with the first attempt's requester only.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from azdev_ica.db.tables import PipelineRun, RunRequester
from azdev_ica.services.people import person_for_provider_id

# The person-link provider of a run's provider (run keys say `gh`, links say `github`).
LINK_PROVIDER = {"ado": "ado", "gh": "github"}


def run_triggers(session: Session, run: PipelineRun) -> set[tuple[str, str]]:
    """Every (person-link provider, provider user id) that triggered an attempt of `run`.

    The run's own `requested_for` counts as well: runs started before attempts' triggers were
    recorded have it only; an erased id (None) names nobody."""
    triggers = {
        (provider, user_id)
        for provider, user_id in session.execute(
            select(RunRequester.provider, RunRequester.provider_user_id).where(
                RunRequester.run_pk == run.id
            )
        )
        if user_id is not None
    }
    provider = LINK_PROVIDER.get(run.provider)
    if provider is not None and run.requested_for:
        triggers.add((provider, run.requested_for))
    return triggers


def requester_people(
    session: Session, triggers: set[tuple[str, str]] | frozenset[tuple[str, str]]
) -> frozenset[int]:
    """The persons linked to any of `triggers` (an unlinked provider id names nobody yet)."""
    people = set()
    for provider, user_id in sorted(triggers):
        person = person_for_provider_id(session, provider, user_id)
        if person is not None:
            people.add(person.id)
    return frozenset(people)


def run_requester_people(session: Session, run: PipelineRun) -> frozenset[int]:
    """The person ids of everyone who triggered any attempt of `run`."""
    return requester_people(session, run_triggers(session, run))
