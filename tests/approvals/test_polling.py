"""Polling an approval cheaply (issue 21): the status answer names the server's back-off
(`Retry-After`) and its version (`ETag`); `If-None-Match` with that version answers 304 after
one primary-key read; `ica approval wait` follows the back-off and asks conditionally.
At the HTTP boundary and with the CLI against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from azdev_ica.cli import wire
from azdev_ica.cli.main import main
from azdev_ica.queries.approvals import etag_matches
from tests.approvals.conftest import RUN_KEY
from tests.conftest import bearer
from tests.support.liveserver import LiveServer

API = "/api/v1/azdev"


@pytest.fixture
def devops(make_key: Any) -> dict[str, str]:
    return bearer(make_key("azdev_devops", ["to"]))


@pytest.fixture
def approval_id(client: Any, devops: dict[str, str], run_key: str, people: Any) -> int:
    response = client.post(f"{API}/approval", json={"run_key": run_key}, headers=devops)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


class Statements(list[str]):
    """SQL statements sent, and for each whether it ran in autocommit mode (no BEGIN and
    ROLLBACK round trips around it on PostgreSQL)."""

    def __init__(self) -> None:
        super().__init__()
        self.autocommit: list[bool] = []

    def clear(self) -> None:
        super().clear()
        self.autocommit.clear()


@pytest.fixture
def statements(database: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Statements]:
    """Every SQL statement the server sends while the test runs (cleared by the test); on
    PostgreSQL recorded at the driver, so that a read sent straight through it
    (`Database.first_row`) is seen as well as the engine's."""
    seen = Statements()
    if database.dialect == "postgresql":
        import psycopg

        execute = psycopg.Cursor.execute

        def recorded(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(str(query))
            seen.autocommit.append(cursor.connection.autocommit)
            return execute(cursor, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", recorded)
        yield seen
        return

    def record(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)
        seen.autocommit.append(bool(getattr(conn.connection.dbapi_connection, "autocommit", 0)))

    event.listen(database.engine, "before_cursor_execute", record)
    yield seen
    event.remove(database.engine, "before_cursor_execute", record)


def test_an_open_request_names_its_back_off_and_version(client, devops, approval_id, clock):
    path = f"{API}/approval/{approval_id}"
    first = client.get(path, headers=devops)
    assert first.status_code == 200
    assert first.headers["retry-after"] == "5"
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    # The back-off grows with the request's age; the version does not move by itself.
    clock.advance(timedelta(minutes=2))
    later = client.get(path, headers=devops)
    assert (later.headers["retry-after"], later.headers["etag"]) == ("15", etag)
    clock.advance(timedelta(minutes=9))
    assert client.get(path, headers=devops).headers["retry-after"] == "30"


def test_an_unchanged_request_answers_304_after_one_cheap_read(
    client, devops, approval_id, statements, database
):
    path = f"{API}/approval/{approval_id}"
    etag = client.get(path, headers=devops).headers["etag"]
    statements.clear()
    again = client.get(path, headers={**devops, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert (again.headers["etag"], again.headers["retry-after"]) == (etag, "5")
    touched = [s for s in statements if "azdev_approval" in s or "azdev_person" in s]
    # The approval's row by its primary key, nothing of signatures or people.
    assert len(touched) == 1, touched
    assert "FROM azdev_approval " in touched[0] + " "
    if database.dialect == "postgresql":  # one round trip: no transaction around it
        assert statements.autocommit[statements.index(touched[0])], statements
    assert "azdev_approval_signature" not in " ".join(statements)
    # A list of versions, one of them current, and `*` match too; another version does not.
    listed = client.get(path, headers={**devops, "If-None-Match": f'W/"old", {etag}'})
    assert listed.status_code == 304
    assert client.get(path, headers={**devops, "If-None-Match": "*"}).status_code == 304
    stale = client.get(path, headers={**devops, "If-None-Match": 'W/"old"'})
    assert stale.status_code == 200
    assert stale.json()["id"] == approval_id


def test_a_poll_costs_one_hand_off_to_the_thread_pool(client, devops, approval_id, monkeypatch):
    import anyio.to_thread

    path = f"{API}/approval/{approval_id}"
    etag = client.get(path, headers=devops).headers["etag"]
    original = anyio.to_thread.run_sync
    handed: list[str] = []

    async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(getattr(function, "__name__", repr(function)))
        return await original(function, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    again = client.get(path, headers={**devops, "If-None-Match": etag})
    assert again.status_code == 304
    assert len(handed) == 1, handed
    handed.clear()
    assert client.get(path, headers=devops).status_code == 200  # a full answer alike
    assert len(handed) == 1, handed


def test_a_signature_changes_the_version_and_a_decision_ends_the_back_off(
    client, devops, approval_id, people
):
    path = f"{API}/approval/{approval_id}"
    etag = client.get(path, headers=devops).headers["etag"]
    signed = client.post(
        f"{path}/sign", json={"decision": "approve"}, headers=people["alice"].headers
    )
    assert signed.status_code == 200, signed.text
    after = client.get(path, headers={**devops, "If-None-Match": etag})
    assert after.status_code == 200
    assert after.json()["status"] == "technical_approved"
    assert after.headers["etag"] != etag
    assert after.headers["retry-after"] == "5"
    client.post(f"{path}/sign", json={"decision": "approve"}, headers=people["bob"].headers)
    final = client.get(path, headers={**devops, "If-None-Match": after.headers["etag"]})
    assert final.status_code == 200
    assert final.json()["status"] == "approved"
    assert "retry-after" not in final.headers  # nothing more to wait for
    assert (
        client.get(path, headers={**devops, "If-None-Match": final.headers["etag"]}).status_code
        == 304
    )


def test_an_expiry_changes_the_version_before_the_job_writes_it(client, devops, approval_id, clock):
    path = f"{API}/approval/{approval_id}"
    first = client.get(path, headers=devops)
    clock.advance(timedelta(days=30))
    expired = client.get(path, headers={**devops, "If-None-Match": first.headers["etag"]})
    assert expired.status_code == 200
    assert expired.json()["status"] == "expired"
    assert "retry-after" not in expired.headers


def test_another_tenants_caller_gets_404_whatever_version_it_sends(
    client, devops, approval_id, make_key
):
    path = f"{API}/approval/{approval_id}"
    etag = client.get(path, headers=devops).headers["etag"]
    samoa = bearer(make_key("azdev_devops", ["ws"]))
    for headers in ({**samoa, "If-None-Match": etag}, {**samoa, "If-None-Match": "*"}):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 404
        assert "etag" not in answer.headers


def test_weak_comparison_of_entity_tags() -> None:
    assert etag_matches('"abc"', 'W/"abc"')
    assert etag_matches('W/"x", W/"abc"', 'W/"abc"')
    assert etag_matches(" * ", 'W/"abc"')
    assert not etag_matches(None, 'W/"abc"')
    assert not etag_matches("", 'W/"abc"')
    assert not etag_matches('W/"abcd"', 'W/"abc"')


# --- the CLI against a real server -------------------------------------------------------------

_EXCHANGE = wire.exchange


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    """A POST over real HTTP (the client's own wire, before any test observes it)."""
    status, _, answer = _EXCHANGE(
        "POST",
        url,
        json.dumps(body).encode(),
        {**headers, "Content-Type": "application/json"},
        120.0,  # a busy machine
    )
    return status, json.loads(answer)


@pytest.fixture
def server(app: Any) -> Iterator[Any]:
    live = LiveServer(app).start()
    yield live
    live.stop()


def test_wait_follows_retry_after_and_polls_conditionally(
    server, monkeypatch, capsys, devops, run_key, people, make_key
):
    """`ica approval wait` sleeps what the server asks and sends the version it holds: while
    nothing changes ICA answers 304; after both signatures wait reads the decision and exits 0."""
    monkeypatch.setenv("ICA_URL", server.url)
    monkeypatch.setenv("ICA_TOKEN", make_key("azdev_devops", ["to"]))
    status, asked = post(f"{server.url}{API}/approval", {"run_key": run_key}, devops)
    assert status == 201, asked
    path = f"{server.url}{API}/approval/{asked['id']}"
    exchanges: list[tuple[str | None, int]] = []
    real_exchange = wire.exchange

    def observed(method: str, url: str, body: Any, headers: Any, timeout: float) -> Any:
        answer = real_exchange(method, url, body, headers, timeout)
        exchanges.append((headers.get("If-None-Match"), answer[0]))
        return answer

    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:  # people sign while the pipeline waits
            for person in ("alice", "bob"):
                status, signed = post(
                    f"{path}/sign", {"decision": "approve"}, people[person].headers
                )
                assert status == 200, signed

    monkeypatch.setattr(wire, "exchange", observed)
    from azdev_ica.cli import approvals as cli_approvals

    monkeypatch.setitem(cli_approvals._wait.__kwdefaults__, "sleep", sleep)
    code = main(["approval", "wait", str(asked["id"]), "--interval", "1"])
    out, _ = capsys.readouterr()
    assert code == 0, out
    assert out.split(" ")[2] == "approved"
    # The server's 5 s, not the client's own 1 s, 1.5 s, 2.25 s.
    assert pauses == [5.0, 5.0, 5.0]
    etag = exchanges[1][0]
    assert etag is not None
    assert etag.startswith('W/"')
    assert exchanges == [(None, 200), (etag, 304), (etag, 304), (etag, 200)]


def test_wait_still_works_against_a_server_that_names_no_back_off(
    server, monkeypatch, capsys, run_key, make_key
):
    """An older ICA (no Retry-After, no ETag): wait keeps its own growing back-off."""
    monkeypatch.setenv("ICA_URL", server.url)
    monkeypatch.setenv("ICA_TOKEN", make_key("azdev_devops", ["to"]))
    assert main(["approval", "request", "--run-key", RUN_KEY]) == 0
    real_exchange = wire.exchange

    def without_poll_headers(*args: Any) -> Any:
        status, headers, body = real_exchange(*args)
        plain = {k: v for k, v in headers.items() if k not in ("retry-after", "etag")}
        return status, plain, body

    pauses: list[float] = []
    monkeypatch.setattr(wire, "exchange", without_poll_headers)
    from azdev_ica.cli import approvals as cli_approvals

    monkeypatch.setitem(cli_approvals._wait.__kwdefaults__, "sleep", pauses.append)
    ticks = iter(range(0, 1000, 4))
    monkeypatch.setitem(cli_approvals._wait.__kwdefaults__, "clock", lambda: float(next(ticks)))
    code = main(["approval", "wait", "1", "--wait", "15", "--interval", "2"])
    capsys.readouterr()
    assert code == 2
    assert pauses == [2.0, 3.0, 3.0]  # its own 2, 3, then what remains
