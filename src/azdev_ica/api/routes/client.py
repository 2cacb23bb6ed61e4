"""The pipeline client for build agents: `GET /client/ica-<version>.pyz` and its SHA-256.

Public on purpose (tests/api/test_permissions.py lists it): it is the same code as the
published package, holds no secret, and an agent fetches it before it has any credential in
hand. The SHA-256 beside it is for people comparing by eye; a pipeline checks the file
against the hash pinned in its own parameters, never against this one.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from azdev_ica import client_zipapp
from azdev_ica.api.deps import public
from azdev_ica.errors import NotFound

router = APIRouter(tags=["health"])
Public = Annotated[None, Depends(public())]
Version = Annotated[str, Path(pattern=r"^[0-9][0-9A-Za-z.+-]{0,40}$")]


def _check(version: str) -> None:
    if client_zipapp.file_name(version) != client_zipapp.file_name():
        raise NotFound(f"this ICA serves the pipeline client {client_zipapp.file_name()} only")


@router.get(
    "/client/ica-{version}.pyz",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "the zipapp"}},
)
def client_zipapp_file(version: Version, _: Public) -> Response:
    """The pipeline client as a zipapp: `python3 ica-<version>.pyz run event build`
    (Python 3.8 or later, standard library only)."""
    _check(version)
    return Response(
        content=client_zipapp.build(),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{client_zipapp.file_name()}"',
            "Cache-Control": "public, max-age=86400, immutable",
        },
    )


@router.get(
    "/client/ica-{version}.pyz.sha256",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "sha256sum's line"}},
)
def client_zipapp_sha256(version: Version, _: Public) -> Response:
    """The zipapp's SHA-256 as `sha256sum` prints it (to pin in the pipeline's parameters)."""
    _check(version)
    line = f"{client_zipapp.sha256()}  {client_zipapp.file_name()}\n"
    return Response(content=line, media_type="text/plain; charset=utf-8")
