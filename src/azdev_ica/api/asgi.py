"""The ASGI factory `ica serve` hands to uvicorn: settings come from the environment."""

from __future__ import annotations

import gc

from fastapi import FastAPI

from azdev_ica.api.app import create_app
from azdev_ica.settings import Settings


def app_factory() -> FastAPI:
    """The app of one `ica serve` worker process.

    Everything built up to here (modules, routes, schemas, the policy: about 216,000 objects)
    lives as long as the process, so it is moved out of the garbage collector's sight
    (`gc.freeze`): a full collection no longer walks it. Walking it took 260-360 ms (measured
    on the 2-core development machine under load), a pause of every request in flight each
    time the collector's third generation came due."""
    app = create_app(Settings())
    gc.collect()
    gc.freeze()
    return app
