"""`ica audit erase --kind email` reaches every live copy of a person's e-mail: the people
table (e-mail, display name, a login that is the e-mail), their approval requests' requester
provider id, outbox payloads, the openings; the ledger still verifies and `ica audit replay`
rebuilds the same erased rows. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from azdev_ica.audit.replay import replay_ledger
from azdev_ica.audit.verify import verify_ledger
from azdev_ica.auth.principal import Actor, Principal
from azdev_ica.auth.roles import Role
from azdev_ica.db.tables import Approval, OutboxMessage, Person, PersonalDataOpening
from azdev_ica.domain.runs import Provider
from azdev_ica.jobs.sealer import checkpoint_store, seal_now
from azdev_ica.services.approvals import RequestApproval, request_approval
from azdev_ica.services.ledger import erase_personal_data
from azdev_ica.services.outbox import NOTIFY_CHANNEL, enqueue
from azdev_ica.services.runs import StartRun, start_run

OPERATOR = Actor(kind="operator", id="test")
PIPELINE = Principal.with_role(
    kind="api_key", id="api_key:ci", name="ci", role=Role.DEVOPS, tenants=None
)
EMAIL = "jane.roe@example.org"
ADO_ID = "a1b2c3d4-jane"


def jane_requests_a_deploy(ctx: Any, make_person: Any) -> tuple[int, int]:
    """Jane (login = e-mail), linked to her Azure DevOps id, triggers a run that asks for an
    approval; a notification naming her waits in the outbox. Bob bears another name."""
    jane = make_person(EMAIL, [("azdev_devops", "to")], [("ado", ADO_ID)], email=EMAIL)
    make_person("bob@example.org", email="bob@example.org")
    start_run(
        ctx,
        principal=PIPELINE,
        command=StartRun(
            provider=Provider.AZURE,
            project_id="proj",
            run_id="7",
            pipeline_name="farmer-registry",
            tenant="to",
            stage="production",
            requested_for=ADO_ID,
            requested_for_email=EMAIL,
        ),
    )
    outcome = request_approval(
        ctx, principal=PIPELINE, command=RequestApproval(run_key="ado:proj:7")
    )
    with ctx.db.write() as session:
        enqueue(
            session,
            topic="approval.requested",
            channel=NOTIFY_CHANNEL,
            subject_type="approval",
            subject_id=str(outcome.approval.id),
            tenant="to",
            payload={
                "summary": f"jane.roe ({EMAIL}) asks to deploy",
                "requester": {"login": EMAIL, "provider_id": ADO_ID, "name": "jane.roe"},
            },
            at=ctx.clock.now(),
        )
    return jane.person_id, outcome.approval.id


def test_erasing_an_email_reaches_every_live_copy_and_replay_agrees(ctx, make_person):
    person_id, approval_id = jane_requests_a_deploy(ctx, make_person)
    with ctx.read() as session:
        assert session.get(Approval, approval_id).requester_person_id == person_id
        assert session.get(Approval, approval_id).requester_provider_id == ADO_ID
    seal_now(ctx)

    erased = erase_personal_data(ctx, actor=OPERATOR, kind="email", value=EMAIL)
    assert (erased.people_cleared, erased.approvals_cleared) == (1, 1)
    assert erased.outbox_scrubbed >= 1
    assert erased.runs_cleared == 1
    seal_now(ctx)

    with ctx.read() as session:
        jane = session.get(Person, person_id)
        bob = session.scalars(select(Person).where(Person.login == "bob@example.org")).one()
        approval = session.get(Approval, approval_id)
        payloads = json.dumps([m.payload for m in session.scalars(select(OutboxMessage))])
        openings = set(session.scalars(select(PersonalDataOpening.value)))
    assert (jane.login, jane.display_name, jane.email) == (f"erased:{person_id}", "(erased)", None)
    assert (bob.display_name, bob.email) == ("bob", "bob@example.org")  # nobody else's data
    assert approval.requester_provider_id is None
    assert EMAIL not in payloads
    assert "jane.roe" not in payloads
    assert ADO_ID not in payloads
    assert EMAIL not in openings
    assert "jane.roe" not in openings
    assert "bob" in openings
    assert verify_ledger(ctx.db, checkpoint_store(ctx.ledger)).ok
    report = replay_ledger(ctx.db)
    assert report.ok, report.text()
