"""`make screenshots`: PNGs of the console's main pages under docs/screenshots/, taken in the
machine's Chromium from a server seeded as the browser tests seed it (a small fleet reported
over HTTP, a dual approval waiting, a lock with a waiter, a sealed ledger).

Not part of the test suite (the file name does not start with `test_`); `make screenshots`
runs it with pytest to reuse the suite's fixtures: `pytest tests/console/screenshots.py`.
The pages are the same every time (a frozen clock), so the PNGs change only when the pages do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from azdev_ica.jobs.sealer import seal_now
from azdev_ica.services.gates import EvaluateGate, evaluate
from tests.console.conftest import PHONE
from tests.console.test_approval import approval_id, approvers  # noqa: F401  (fixtures)
from tests.console.test_areas import fleet  # noqa: F401  (fixture)
from tests.console.test_foundation import sign_in
from tests.gates.conftest import PIPELINE, new_run

OUT = Path(os.environ.get("ICA_SCREENSHOTS_DIR", Path(__file__).parents[2] / "docs/screenshots"))
DESKTOP = {"width": 1280, "height": 800}
MAX_HEIGHT = 1300


def test_take_the_screenshots(new_context, ctx, local_user, fleet, approval_id, approvers):  # noqa: F811
    OUT.mkdir(parents=True, exist_ok=True)
    # A lock held on Tonga's test stage with a run waiting for it.
    first, second = new_run(ctx, stage="test"), new_run(ctx, stage="test")
    for key in (first, second):
        evaluate(ctx, principal=PIPELINE, command=EvaluateGate(run_key=key, tenant="to"))
    seal_now(ctx)
    person = local_user(
        "ana@example.org",
        [("azdev_approver_biz", "to"), ("azdev_auditor", None), ("azdev_devops", None)],
        totp=True,
    )
    desktop = new_context(viewport=DESKTOP).new_page()
    sign_in(desktop, ctx, person)
    shots: list[tuple[Any, str, str]] = [
        (desktop, "/ui/", "home.png"),
        (desktop, "/runs", "runs.png"),
        (desktop, "/inventory", "inventory.png"),
        (desktop, "/dashboards", "dashboards.png"),
        (desktop, "/audit", "audit.png"),
    ]
    phone = new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()
    sign_in(phone, ctx, approvers["alice"], start=f"/approvals/{approval_id}")
    shots.append((phone, f"/approvals/{approval_id}", "approval-phone.png"))
    for page, path, name in shots:
        page.goto(path)
        page.wait_for_load_state("networkidle")
        if path == "/dashboards":
            page.locator("[data-chart] canvas, [data-chart] svg").first.wait_for()
        # The whole page, cut at a height that keeps the files small.
        height = min(page.evaluate("document.documentElement.scrollHeight"), MAX_HEIGHT)
        width = page.viewport_size["width"]
        clip = {"x": 0, "y": 0, "width": width, "height": height}
        page.screenshot(path=str(OUT / name), full_page=True, clip=clip)
