"""The OpenAPI document, generated from the app (and diff-tested against the committed file)."""

from __future__ import annotations

import yaml

from azdev_ica.api.app import create_app
from azdev_ica.db.engine import Database
from azdev_ica.settings import Settings


def openapi_yaml() -> str:
    # Generating the document touches no database; an in-memory engine is never connected.
    app = create_app(
        Settings(secret_key="openapi-generation-only-" + "x" * 16),
        database=Database.from_url("sqlite://"),
    )
    return yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True, width=100)
