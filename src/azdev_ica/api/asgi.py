"""The ASGI factory `ica serve` hands to uvicorn: settings come from the environment."""

from __future__ import annotations

from fastapi import FastAPI

from azdev_ica.api.app import create_app
from azdev_ica.settings import Settings


def app_factory() -> FastAPI:
    return create_app(Settings())
