"""The committed OpenAPI document is the one the app generates."""

from pathlib import Path

from azdev_ica.api.openapi import openapi_yaml

COMMITTED = Path(__file__).resolve().parents[2] / "api" / "azdev-ica-openapi.yaml"


def test_the_committed_openapi_file_is_current():
    assert COMMITTED.read_text(encoding="utf-8") == openapi_yaml(), (
        "api/azdev-ica-openapi.yaml is stale: run `make openapi`"
    )


def test_the_document_is_openapi_3_1_and_lists_the_run_ledger():
    import yaml

    document = yaml.safe_load(COMMITTED.read_text(encoding="utf-8"))
    assert document["openapi"].startswith("3.1")
    assert {
        "/api/v1/azdev/run/start",
        "/api/v1/azdev/run/event",
        "/api/v1/azdev/run/finish",
        "/api/v1/azdev/run/{run_key}",
        "/api/v1/azdev/runs",
    } <= set(document["paths"])
    assert not any(path.startswith("/api/azdev/") for path in document["paths"])


ACCESS_MATRIX = Path(__file__).resolve().parents[2] / "docs" / "access-matrix.md"


def test_the_published_access_matrix_is_current():
    from azdev_ica.api.rbac import access_matrix

    assert ACCESS_MATRIX.read_text(encoding="utf-8") == access_matrix(), (
        "docs/access-matrix.md is stale: run `ica rbac --out docs/access-matrix.md`"
    )


def test_the_access_matrix_lists_every_route_with_its_roles():
    from azdev_ica.api.rbac import access_matrix

    text = access_matrix()
    assert "| POST | `/run/start` | `run:write` | ✓ | – | – | – | ✓ |" in text
    assert "| GET | `/health` | `public` | any | any |" in text
    assert "NONE" not in text  # every route declares a permission
