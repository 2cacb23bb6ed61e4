"""Debian's nginx, run by the tests with deploy/nginx/ica.conf.template (its throwaway CA
is tests/support/tls.py's).

The template is filled in as the nginx image's entrypoint does it (envsubst of the given
variables only: nginx's own `$host` and friends are left alone) and included in a small main
configuration of the test's own, as the image's /etc/nginx/nginx.conf includes conf.d/."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.deploy.conftest import DEPLOY
from tests.support.tls import Certificates, make_certificates

__all__ = ["Certificates", "Nginx", "fill_in", "make_certificates", "nginx_binary"]

TEMPLATE = DEPLOY / "nginx" / "ica.conf.template"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    assert found, "nginx is missing: `make nginx` installs Debian's"
    return found


def fill_in(template: str, variables: dict[str, str]) -> str:
    """envsubst restricted to `variables`, as the nginx image runs it."""
    named = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", template))
    missing = {name for name in named if name.startswith("ICA_")} - set(variables)
    assert not missing, f"the template needs {sorted(missing)}"
    for name, value in variables.items():
        template = template.replace("${" + name + "}", value)
    return template


class Nginx:
    """nginx in the foreground with the template filled in; stopped by its process id."""

    def __init__(self, directory: Path, variables: dict[str, str]) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ica.conf").write_text(fill_in(TEMPLATE.read_text(), variables))
        temp = directory / "temp"
        temp.mkdir(exist_ok=True)
        lines = [
            f"pid {directory / 'nginx.pid'};",
            "worker_processes 1;",
            "events { worker_connections 512; }",
            "http {",
            "    access_log off;",
        ]
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            path = temp / kind
            path.mkdir(exist_ok=True)
            lines.append(f"    {kind}_temp_path {path};")
        lines += [f"    include {directory / 'ica.conf'};", "}"]
        (directory / "nginx.conf").write_text("\n".join(lines) + "\n")
        if os.geteuid() == 0:
            # nginx's workers run as `nobody` when the master is root: let them in.
            nobody = pwd.getpwnam("nobody")
            for path in [directory, temp, *temp.iterdir()]:
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        self.port = int(variables["ICA_NGINX_HTTPS_PORT"])
        self.process: subprocess.Popen[bytes] | None = None

    def command(self, *extra: str) -> list[str]:
        return [
            nginx_binary(),
            "-p",
            str(self.directory),
            "-c",
            str(self.directory / "nginx.conf"),
            "-e",
            "stderr",
            *extra,
        ]

    def start(self) -> Nginx:
        checked = subprocess.run(self.command("-t"), capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr
        log = (self.directory / "nginx.log").open("wb")
        self.process = subprocess.Popen(
            self.command("-g", "daemon off;"), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        for _ in range(400):  # bounded
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert self.process.poll() is None, self.log()
                time.sleep(0.05)
        raise AssertionError(f"nginx did not listen: {self.log()}")

    def log(self) -> str:
        return (self.directory / "nginx.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: nginx's fast shutdown
            self.process.wait(timeout=30)
