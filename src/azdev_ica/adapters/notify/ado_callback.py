"""Azure DevOps check callback: post `TaskCompleted` to the waiting check (callback mode).

    POST {PlanUrl}{ProjectId}/_apis/distributedtask/hubs/{HubName}/plans/{PlanId}/events
         ?api-version=2.0-preview.1
    Authorization: Bearer {AuthToken}
    {"name": "TaskCompleted", "taskId": "{TaskInstanceId}", "jobId": "{JobId}",
     "result": "succeeded" | "failed"}

(`../shared/reference/pipelines.md` §1.5.) The outbox row carries the URL and ids and the
AuthToken sealed with the server secret; it is opened only here, for the request. A 401 or 403
means the 48-hour token has lapsed or was revoked: retrying cannot help.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from azdev_ica.adapters.notify import DeliveryError, check_http_status
from azdev_ica.auth.secretbox import ADO_CALLBACK_TOKEN, unseal

if TYPE_CHECKING:
    from azdev_ica.db.tables import OutboxMessage
    from azdev_ica.settings import Settings

TIMEOUT = 10.0
WHAT = "Azure DevOps check callback"


def send(message: OutboxMessage, settings: Settings) -> None:
    payload = message.payload
    url = str(payload.get("url", ""))
    if not url.startswith(("https://", "http://")):
        raise DeliveryError(f"{WHAT}: the URL is not http(s)", permanent=True)
    try:
        token = unseal(settings.pepper(), ADO_CALLBACK_TOKEN, str(payload["token_sealed"]))
    except (KeyError, ValueError):
        raise DeliveryError(f"{WHAT}: the token cannot be opened", permanent=True) from None
    body = {
        "name": "TaskCompleted",
        "taskId": str(payload["task_id"]),
        "jobId": str(payload["job_id"]),
        "result": str(payload["result"]),
    }
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "User-Agent": "ica-ado-callback",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            status, headers = response.status, response.headers
    except urllib.error.HTTPError as exc:
        status, headers = exc.code, exc.headers
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"{WHAT}: {type(exc).__name__}") from None
    check_http_status(status, headers, WHAT)
