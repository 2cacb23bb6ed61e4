"""Azure DevOps check callback: post `TaskCompleted` to the waiting check (callback mode).

    POST {PlanUrl}{ProjectId}/_apis/distributedtask/hubs/{HubName}/plans/{PlanId}/events
         ?api-version=2.0-preview.1
    Authorization: Bearer {AuthToken}
    X-TFS-FedAuthRedirect: Suppress
    {"name": "TaskCompleted", "taskId": "{TaskInstanceId}", "jobId": "{JobId}",
     "result": "succeeded" | "failed"}

(`../shared/reference/pipelines.md` §1.5.) The outbox row carries the URL and ids and the
AuthToken sealed with the server secret; it is opened only here, for the request, and deleted
once the callback is delivered (`jobs/delivery.py`).

Azure DevOps answers a bad or lapsed token not only with 401: without
`X-TFS-FedAuthRedirect: Suppress` it sends a 203 with its HTML sign-in page, or a 302 to the
sign-in host. So the header is always sent, a 203, any 3xx and an HTML 2xx count as failures
(permanent: retrying with the same token cannot help), a redirect is never followed (it
would carry the token to another host), and the token goes only over https (plain http only
to loopback, where tests run their stand-in).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from azdev_ica.adapters.notify import DeliveryError
from azdev_ica.adapters.notify._common import (
    check_api_answer,
    credential_url_problem,
    post_with_credential,
)
from azdev_ica.auth.secretbox import ADO_CALLBACK_TOKEN, unseal

if TYPE_CHECKING:
    from azdev_ica.db.tables import OutboxMessage
    from azdev_ica.settings import Settings

TIMEOUT = 10.0
WHAT = "Azure DevOps check callback"


def send(message: OutboxMessage, settings: Settings) -> None:
    payload = message.payload
    url = str(payload.get("url", ""))
    problem = credential_url_problem(url)
    if problem is not None:
        raise DeliveryError(f"{WHAT}: {problem}", permanent=True)
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
    status, headers, _ = post_with_credential(
        url,
        json.dumps(body).encode(),
        {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "X-TFS-FedAuthRedirect": "Suppress",
            "User-Agent": "ica-ado-callback",
        },
        timeout=TIMEOUT,
        what=WHAT,
    )
    check_api_answer(status, headers, WHAT)
