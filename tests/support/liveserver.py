"""A real HTTP server (uvicorn) around an app, in a background thread, on a free port."""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import uvicorn


class LiveServer:
    def __init__(self, app: Any, *, lifespan: Literal["auto", "on", "off"] = "off") -> None:
        """``lifespan="on"`` runs the app's lifespan too (its sealer and scheduler, when the
        settings enable them)."""
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            access_log=False,
            ws="none",
            lifespan=lifespan,
            # As `ica serve` without ICA_TRUSTED_PROXIES: no peer's X-Forwarded-For is
            # believed by uvicorn (ICA reads it itself, from trusted proxies only).
            proxy_headers=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="live-server", daemon=True)
        self.url = ""

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live server did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
