"""`ica user ...` as an operator types it, on SQLite and PostgreSQL: add, grant per tenant,
link, list, enrol (the person follows the link and mints their own token, which then works
against the served API), revoke, disable. Bad input is
a message and exit 3 or 64, never a traceback."""

from __future__ import annotations

import json
import re

import pytest

from azdev_ica.cli.main import main
from tests.cli.conftest import RUNS
from tests.conftest import bearer

TOKEN_RE = re.compile(r"icp_[a-z2-7]{10}_[A-Za-z0-9_-]{43}")


def test_a_grant_limited_to_stages(initialised, http):
    instance, _ = initialised
    assert instance.run("user", "add", "sione@example.to", "--name", "Sione")[0] == 0
    code, out, err = instance.run(
        "user", "grant", "sione@example.to", "azdev_approver_tech", "--tenant", "to",
        "--stage", "test", "--stage", "development",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert "stages development, test" in out
    code, out, _ = instance.run("user", "list", "--output", "json")
    [sione] = json.loads(out)
    assert sione["grants"] == [
        {
            "role": "azdev_approver_tech",
            "tenant": "to",
            "stages": ["development", "test"],
            "until": None,
        }
    ]
    code, out, _ = instance.run("user", "list")
    assert "azdev_approver_tech@to[development,test]" in out


def _enrol_and_mint(http, link: str, login: str) -> str:
    """Ana follows her enrolment link (the console's page over HTTP), sets her password and
    authenticator, then mints her own personal token; no command mints it for her."""
    import base64
    from urllib.parse import urlsplit

    from sqlalchemy import select

    from azdev_ica.auth import totp
    from azdev_ica.db.tables import Person
    from azdev_ica.services.people import issue_personal_token, person_actor

    path = urlsplit(link).path
    html = {"Accept": "text/html"}
    page = http.get(path, headers=html)
    assert page.status_code == 200
    pending = re.search(r'name="pending" value="([^"]+)"', page.text).group(1)
    key = re.search(r'id="totp-key"[^>]*>([A-Z2-7 ]+)<', page.text).group(1).replace(" ", "")
    secret = base64.b32decode(key + "=" * (-len(key) % 8))
    ctx = http.app.state.ctx
    form = {
        "pending": pending,
        "password": "a long enough password",
        "password2": "a long enough password",
        "code": totp.code_at_step(secret, totp.time_step(ctx.clock.now())),
    }
    done = http.post(path, data=form, headers={**html, "Origin": str(http.base_url)})
    assert done.status_code == 200, done.text
    assert "Your sign-in is set up" in done.text
    assert http.get(path, headers=html).status_code == 404  # single use
    with ctx.read() as session:
        person_id = session.scalars(select(Person.id).where(Person.login == login)).one()
    return issue_personal_token(
        ctx, actor=person_actor(person_id), login=login, name="laptop"
    ).secret


def test_the_life_of_a_person(initialised, http):
    instance, _ = initialised
    code, out, _ = instance.run("user", "add", "Ana@Example.org", "--name", "Ana Fifita")
    assert code == 0
    [link] = re.findall(r"https://\S+/ui/enrol/\S+", out)
    code, out, err = instance.run(
        "user", "grant", "ana@example.org", "azdev_auditor", "--tenant", "to"
    )
    assert (code, err) == (0, "")
    assert instance.run("user", "link", "ana@example.org", "github", "583231")[0] == 0
    code, out, _ = instance.run("user", "list", "--output", "json")
    assert code == 0
    [ana] = json.loads(out)
    assert ana["login"] == "ana@example.org"
    assert ana["grants"] == [
        {"role": "azdev_auditor", "tenant": "to", "stages": None, "until": None}
    ]
    assert ana["links"] == [{"provider": "github", "id": "583231"}]

    # Ana's own token: she enrols with the link 'user add' printed (through the service,
    # as the console's page does) and mints it herself; no command mints it for her.
    token = _enrol_and_mint(http, link, "ana@example.org")
    assert http.get(RUNS, headers=bearer(token)).status_code == 200

    code, _, _ = instance.run(
        "user", "revoke", "ana@example.org", "azdev_auditor", "--tenant", "to", "--reason", "moved"
    )
    assert code == 0
    assert http.get(RUNS, headers=bearer(token)).status_code == 403

    assert instance.run("user", "disable", "ana@example.org", "--reason", "left")[0] == 0
    assert http.get(RUNS, headers=bearer(token)).status_code == 401
    code, out, _ = instance.run("user", "list")
    assert "ana@example.org" not in out
    code, out, _ = instance.run("user", "list", "--all")
    assert "ana@example.org  disabled" in out


def test_a_grant_for_every_tenant_is_said_explicitly(initialised):
    instance, _ = initialised
    instance.run("user", "add", "ben@example.org", "--name", "Ben")
    code, _, err = instance.run("user", "grant", "ben@example.org", "azdev_auditor")
    assert code == 64
    assert "--tenant" in err
    assert (
        instance.run("user", "grant", "ben@example.org", "azdev_auditor", "--tenant", "*")[0] == 0
    )
    _, out, _ = instance.run("user", "list")
    assert "azdev_auditor@*" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "x y", "--name", "X"], "a login is"),
        (["grant", "nobody@example.org", "azdev_devops", "--tenant", "to"], "no person"),
        (["grant", "cara@example.org", "azdev_devops", "--tenant", "zz"], "unknown tenant"),
        (["link", "cara@example.org", "github", "a b"], "provider user id"),
        (["reset", "nobody@example.org", "--reason", "x"], "no person"),
        (["enrol", "nobody@example.org"], "no person"),
        (
            ["revoke", "cara@example.org", "azdev_devops", "--tenant", "to", "--reason", "x"],
            "holds no",
        ),
        (["disable", "nobody@example.org", "--reason", "x"], "no person"),
    ],
)
def test_bad_input_is_a_clear_message(initialised, args, message):
    instance, _ = initialised
    instance.run("user", "add", "cara@example.org", "--name", "Cara")
    code, _, err = instance.run("user", *args)
    assert code == 3
    assert message in err


def test_a_second_add_of_the_same_login_is_refused(initialised):
    instance, _ = initialised
    assert instance.run("user", "add", "dan@example.org", "--name", "Dan")[0] == 0
    code, _, err = instance.run("user", "add", "DAN@example.org", "--name", "Dan")
    assert code == 3
    assert "exists already" in err


def test_help_names_every_action(initialised):
    instance, _ = initialised
    with pytest.raises(SystemExit):
        main(["user", "--help"])
    out, _ = instance.capsys.readouterr()
    for action in ("add", "enrol", "reset", "list", "disable", "grant", "revoke", "link"):
        assert action in out
    listed = set(re.findall(r"^    ([a-z]+)\s", out, flags=re.MULTILINE))
    assert listed == {"add", "enrol", "reset", "list", "disable", "grant", "revoke", "link"}
