"""The audit explorer in a real browser: search, an entry whose inclusion proof is checked in
the page (WebCrypto SHA-256 over RFC 6962 hashes) against the latest checkpoint — "verified"
only when the recomputed root equals the checkpoint's, so a tampered proof or root fails —
the checkpoints, and a year's export bundle."""

from __future__ import annotations

import io
import re
import tarfile
from typing import Any

import httpx2
from playwright.sync_api import expect

from azdev_ica.jobs.sealer import seal_now
from tests.console.test_areas import EVERYONE, Fleet
from tests.console.test_foundation import sign_in

PROOF_PATTERN = re.compile(r'data-proof="([^"]*)"')


def seeded(server: Any, make_key: Any, ctx: Any) -> Fleet:
    with httpx2.Client(timeout=60) as client:
        fleet = Fleet(client, server.url, make_key("azdev_devops"))
        fleet.release("to-staging", "to", "staging", gate=True, version="1.4.0")
        seal_now(ctx)
        fleet.incident("to-db", "to")  # later entries: the first ones' proofs are not empty
        seal_now(ctx)
    return fleet


def wait_for_the_check(page: Any) -> None:
    """Until the page's proof check has an outcome. Polled by Playwright's own injected
    script: a string predicate (`wait_for_function`) is eval'd in the page once the first
    try fails, which the console's CSP (no 'unsafe-eval') refuses, failing the test when
    the check is slower than the first try."""
    expect(page.locator("#proof-result")).not_to_have_attribute(
        "data-state", "checking", timeout=60_000
    )


def open_entry(page: Any, index: int) -> Any:
    answer = page.goto(f"/audit/entries/2026/{index}")
    assert answer.status == 200
    result = page.get_by_role("status")
    wait_for_the_check(page)
    return result


def test_search_and_verify_an_entry_in_the_page(page, ctx, local_user, server, make_key):
    seeded(server, make_key, ctx)
    person = local_user("auditor@example.org", [("azdev_auditor", None)])
    sign_in(page, ctx, person, start="/audit")
    page.get_by_label("Action").fill("run.start")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/audit?*action=run.start*")
    rows = page.locator("#entries tbody tr")
    assert rows.count() == 1
    rows.first.get_by_role("link").click()
    page.wait_for_url("**/audit/entries/2026/*")
    wait_for_the_check(page)
    result = page.get_by_role("status")
    assert result.get_attribute("data-state") == "verified"
    assert result.inner_text().startswith("Verified")
    assert "does not check the checkpoint's signature" in page.locator("main").inner_text()
    assert page.locator("ol.hashes li code").count() >= 1
    # Every entry of the log verifies, the first and the last included.
    for index in (0, 3):
        assert open_entry(page, index).get_attribute("data-state") == "verified"


def test_a_tampered_proof_is_not_verified(page, ctx, local_user, server, make_key):
    """The page's check can fail: the same page served with one proof hash changed (or with
    another root in the checkpoint) says "not verified"."""
    seeded(server, make_key, ctx)
    person = local_user("auditor2@example.org", [("azdev_auditor", None)])
    sign_in(page, ctx, person, start="/audit")
    assert open_entry(page, 1).get_attribute("data-state") == "verified"

    def flip_first_proof_hash(route: Any) -> None:
        answer = route.fetch()
        body = answer.text()
        proof = PROOF_PATTERN.search(body)
        assert proof is not None
        assert proof.group(1), "the entry has an audit path to tamper with"
        first = proof.group(1).split()[0]
        tampered = ("B" if first[0] != "B" else "C") + first[1:]
        route.fulfill(response=answer, body=body.replace(first, tampered, 1))

    page.route("**/audit/entries/2026/1", flip_first_proof_hash)
    result = open_entry(page, 1)
    assert result.get_attribute("data-state") == "failed"
    assert result.inner_text().startswith("Not verified")
    page.unroute("**/audit/entries/2026/1")

    def other_root(route: Any) -> None:
        answer = route.fetch()
        body = answer.text()
        root = re.search(r'data-checkpoint="[^\n]*\n[0-9]+\n([A-Za-z0-9+/=]{44})', body)
        assert root is not None
        first = root.group(1)
        forged = ("A" if first[0] != "A" else "B") + first[1:]
        route.fulfill(response=answer, body=body.replace(first, forged))

    page.route("**/audit/entries/2026/1", other_root)
    assert open_entry(page, 1).get_attribute("data-state") == "failed"


def test_checkpoints_and_the_export_bundle(page, ctx, local_user, server, make_key):
    seeded(server, make_key, ctx)
    person = local_user("auditor3@example.org", EVERYONE)
    sign_in(page, ctx, person, start="/audit/checkpoints")
    assert page.locator("section.checkpoint").count() == 2
    assert "Witness cosignatures" in page.locator("main").inner_text()
    page.goto("/audit")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export bundle 2026").click()
    data = download.value.path().read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as bundle:
        names = bundle.getnames()
    assert "ica-audit-2026/verify.py" in names
