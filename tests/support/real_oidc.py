"""A real OpenID provider (the npm package `oidc-provider`) on loopback, for browser sign-in.

The package is installed once per lock file into a cache directory (`npm ci`, from the npm
registry) and started with `node`; the provider prints its issuer URL when it listens.
Its development interaction pages accept any login and password; the login becomes `sub`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

SOURCE = Path(__file__).resolve().parent / "oidc_provider"


def _cache_dir() -> Path:
    lock = (SOURCE / "package-lock.json").read_bytes()
    base = Path(os.environ.get("ICA_TEST_CACHE", Path.home() / ".cache" / "ica-tests"))
    return base / f"oidc-provider-{hashlib.sha256(lock).hexdigest()[:12]}"


def install() -> Path:
    """The directory holding node_modules/oidc-provider, installed when missing."""
    target = _cache_dir()
    if not (target / "node_modules" / "oidc-provider" / "package.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(SOURCE / name, target / name)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            cwd=target,
            check=True,
            timeout=600,
            capture_output=True,
        )
    shutil.copyfile(SOURCE / "provider.mjs", target / "provider.mjs")
    return target


class RealOidcProvider:
    def __init__(
        self, *, client_id: str, client_secret: str, redirect_uri: str, groups: dict[str, list[str]]
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.groups = groups
        self.issuer = ""
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> RealOidcProvider:
        directory = install()
        options = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uri": self.redirect_uri,
            "groups": self.groups,
        }
        self._process = subprocess.Popen(
            ["node", "provider.mjs", json.dumps(options)],
            cwd=directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], 30)
        if not ready:
            self.stop()
            raise RuntimeError("the OpenID provider did not start within 30 s")
        self.issuer = json.loads(self._process.stdout.readline())["issuer"]
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None


def sign_in_at_provider(browser: Any, location: str, *, issuer: str, login: str) -> str:
    """Follow the provider's pages as a person would (log in, consent) from the
    authorization request at `location` until it sends the browser back to ICA; return
    that callback URL. `browser` is an httpx client that keeps the provider's cookies."""
    url = location
    for _ in range(10):
        response = browser.get(url)
        if response.status_code == 200:
            page = response.text
            action = re.search(r'<form[^>]*action="([^"]+)"', page)
            assert action, page[:500]
            fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
            if 'name="login"' in page:
                fields.update(login=login, password="any password")
            response = browser.post(urljoin(url, action.group(1)), data=fields)
        assert response.status_code in (302, 303), (response.status_code, response.text[:300])
        url = urljoin(url, response.headers["location"])
        if not url.startswith(issuer + "/"):
            return url
    raise AssertionError("the provider never sent the browser back")
