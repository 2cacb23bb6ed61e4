"""The README's quick start, as a newcomer follows it: its shell blocks run verbatim, in order,
in one shell environment (what one block exports, the next sees), against a fresh instance
that `make run` serves; what the prose between them asks of a person (open the enrolment
link, sign in, approve on the console) is done in the machine's Chromium. It must end with
a signed approval, an allowed production gate and a verified ledger.

Only the data directory (`ICA_DATA_DIR`) and the port (`PORT`, which `make run` and the
blocks honour) differ from a newcomer's terminal.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from azdev_ica.auth import totp
from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PASSWORD = "a long passphrase of my own"
LINK_RE = re.compile(r"added (\S+) \(person \d+\).*?\n(https?://\S+/ui/enrol/\S+)", re.S)
PENDING_RE = re.compile(r"approval (\d+) pending")


def section(markdown: str, heading: str) -> str:
    """The text under `## heading`, up to the next heading of that level or higher."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^#{{1,2}} )", markdown, re.M | re.S)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def shell_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", markdown, re.M | re.S)


def quickstart_blocks() -> list[str]:
    return shell_blocks(section(README.read_text(encoding="utf-8"), "Quick start"))


def test_the_quick_start_has_the_server_block_first_and_the_steps_after() -> None:
    blocks = quickstart_blocks()
    assert blocks[0].strip() == "make run POLICY=examples/quickstart.yaml"
    assert len(blocks) >= 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Person:
    login: str
    secret: bytes = b""
    last_step: int = 0

    def code(self) -> str:
        """A code the server has not seen yet (each is good once), within its skew."""
        step = max(totp.time_step(datetime.now(UTC)), self.last_step + 1)
        self.last_step = step
        return totp.code_at_step(self.secret, step)


@dataclass
class Terminal:
    """The second terminal: each block runs in bash with what the blocks before exported."""

    env: dict[str, str]
    state: Path
    outputs: list[str] = field(default_factory=list)

    def run(self, block: str) -> str:
        script = f"set -e -o pipefail\nsource {self.state}\n{block}\nexport -p > {self.state}\n"
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        shown = f"$ {block}\n{done.stdout}{done.stderr}"
        self.outputs.append(shown)
        assert done.returncode == 0, shown
        return done.stdout + done.stderr


@pytest.fixture
def fresh_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICA_", "BUILD_", "SYSTEM_"))}
    for name in ("GITHUB_ACTIONS", "TF_BUILD", "GITHUB_RUN_ID", "MAKEFLAGS", "MFLAGS"):
        env.pop(name, None)
    env["ICA_DATA_DIR"] = str(tmp_path / "var")
    env["PORT"] = str(free_port())
    return env


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/ready", timeout=5) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def served(fresh_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The first block (`make run ...`), left serving as in the first terminal."""
    log = (tmp_path / "make-run.log").open("w")
    server = subprocess.Popen(
        ["bash", "-c", quickstart_blocks()[0]],
        cwd=ROOT,
        env=fresh_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{fresh_env['PORT']}"
    try:
        for _ in range(600):
            assert server.poll() is None, (tmp_path / "make-run.log").read_text()
            if ready(url):
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=0.5)
        else:
            pytest.fail("make run never got ready:\n" + (tmp_path / "make-run.log").read_text())
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def enrol(browser: Any, url: str, link: str, person: Person) -> None:
    """What the person does with their link: a password, the authenticator, a first code."""
    assert link.startswith(url + "/ui/enrol/"), link  # the printed link reaches this server
    context = browser.new_context()
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto(link)
    page.get_by_label("New password", exact=True).fill(PASSWORD)
    page.get_by_label("The new password again").fill(PASSWORD)
    text = page.locator("#totp-key").inner_text().replace(" ", "")
    person.secret = base64.b32decode(text + "=" * (-len(text) % 8))
    page.get_by_label("The code your app shows now").fill(person.code())
    page.get_by_role("button", name="Save and finish").click()
    page.get_by_role("heading", name="Your sign-in is set up").wait_for()
    context.close()


def approve_on_the_console(browser: Any, url: str, person: Person, approval: str) -> None:
    """Sign in, find the approval on the home page, read it, Approve."""
    context = browser.new_context(base_url=url)
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto("/")
    page.get_by_label("Sign-in name").fill(person.login)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("One-time code").fill(person.code())
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name=f"#{approval}").click()
    page.get_by_role("button", name="Approve").click()
    page.get_by_role("status").filter(has_text="Signed.").wait_for()
    context.close()


def test_the_quick_start_reaches_a_signed_approval_and_an_allowed_gate(
    served: str, fresh_env: dict[str, str], tmp_path: Path, playwright_driver: Any
) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `make chromium`")
    state = tmp_path / "terminal.env"
    state.write_text("")
    terminal = Terminal(env=fresh_env, state=state)
    people: dict[str, Person] = {}
    signed: list[str] = []
    browser = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        for block in quickstart_blocks()[1:]:
            out = terminal.run(block)
            for login, link in LINK_RE.findall(out):
                people[login] = Person(login)
                enrol(browser, served, link, people[login])
            for approval in PENDING_RE.findall(out):
                if approval in signed:
                    continue
                for person in people.values():
                    approve_on_the_console(browser, served, person, approval)
                signed.append(approval)
    finally:
        browser.close()

    transcript = "\n".join(terminal.outputs)
    assert sorted(people) == ["ana", "ben"], transcript
    assert signed == ["1"], transcript
    # The gate before the signatures is pending; after them it allows.
    gates = re.findall(r"^gate: (\w+) for", transcript, re.M)
    assert gates == ["pending", "allow"], transcript
    assert re.search(r"approval 1 approved", transcript), transcript
    assert "RESULT: OK" in terminal.outputs[-1], transcript
