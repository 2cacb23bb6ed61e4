"""What the generated OpenAPI document cannot say by itself: one schema per pipeline event
phase (a discriminated union on `phase`, with an example each), the body of a retry's 200,
and the links between operations that make a flow (start -> event -> gate -> lock -> finish;
approval request -> status -> sign or withdraw; the run's audit trail), so a schema-driven
client or a stateful fuzzer (tests/api/test_fuzz.py) walks real flows.

The per-phase schemas come from the same models the server validates with
(`api/schemas.PHASE_DATA`), so the document and the server cannot disagree.
"""

from __future__ import annotations

import json
from typing import Any

from azdev_ica.api.schemas import PHASE_DATA
from azdev_ica.domain.runs import Phase

REF = "#/components/schemas/"
DIGEST = "sha256:" + "5d" * 32
RUN_KEY = "ado:6f1c2a3b-0000-4000-8000-000000000001:4711"

# One realistic payload per phase (each is validated against its model by the tests).
PHASE_EXAMPLES: dict[Phase, dict[str, Any]] = {
    Phase.BUILD: {"artifact_digest": DIGEST, "image": "registry.example/app:1.4.0"},
    Phase.TEST: {"passed": True, "coverage_percent": 87.5, "total": 412, "failed": 0},
    Phase.SCAN: {
        "passed": True,
        "tool": "trivy",
        "findings": {"critical": 0, "high": 0, "medium": 2, "low": 5},
    },
    Phase.APPROVAL: {"approval_id": "12", "status": "approved"},
    Phase.DEPLOY: {"stage": "production", "artifact_digest": DIGEST, "status": "succeeded"},
    Phase.VERIFY: {"passed": True, "checks": [{"name": "health", "passed": True}]},
    Phase.ROLLBACK_INITIATED: {"reason": "error rate above 5 %", "to_version": "1.3.2"},
    Phase.ROLLBACK_COMPLETED: {"to_version": "1.3.2", "passed": True},
    Phase.MONITOR: {"trigger": "error_rate", "value": 7.5, "threshold": 5},
}


def _phase_name(phase: Phase) -> str:
    return "".join(part.capitalize() for part in phase.value.split("_"))


def _data_schema_name(phase: Phase) -> str:
    return f"{_phase_name(phase)}EventData"


def _event_schema_name(phase: Phase) -> str:
    return f"{_phase_name(phase)}Event"


def event_phases(doc: dict[str, Any]) -> None:
    """Replace the `data: object` of POST /run/event by one schema per phase, discriminated
    on `phase`, with an example of each."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    base = schemas["RunEventRequest"]
    common = {
        name: prop
        for name, prop in base["properties"].items()
        if name not in ("phase", "event", "run_id", "data")
    }
    # The request model takes `run_key` or its alias `run_id`, so both are nullable there; a
    # phase's event names its run by `run_key`, and null is refused.
    common["run_key"] = next(
        branch for branch in common["run_key"]["anyOf"] if branch.get("type") == "string"
    ) | {"title": "Run Key"}
    variants = []
    mapping = {}
    for phase, model in PHASE_DATA.items():
        data_name = _data_schema_name(phase)
        data_schema = model.model_json_schema(ref_template=REF + "{model}")
        for name, nested in data_schema.pop("$defs", {}).items():
            schemas.setdefault(name, nested)
        data_schema["title"] = data_name
        schemas[data_name] = data_schema
        event_name = _event_schema_name(phase)
        # A payload with required fields (test, scan, verify: `passed`; monitor: `trigger`)
        # cannot be left out: the server checks the absent payload as `{}`.
        required = ["run_key", "phase", *(["data"] if data_schema.get("required") else [])]
        schemas[event_name] = {
            "type": "object",
            "title": event_name,
            "description": f"A `{phase.value}` event of a run.",
            "properties": {
                **common,
                "phase": {"type": "string", "const": phase.value},
                "data": {"$ref": REF + data_name},
            },
            "required": required,
            "additionalProperties": False,
            "examples": [{"run_key": RUN_KEY, "phase": phase.value, "data": PHASE_EXAMPLES[phase]}],
        }
        variants.append({"$ref": REF + event_name})
        mapping[phase.value] = REF + event_name
    schemas["RunEvent"] = {
        "title": "RunEvent",
        "description": "A phase event: its `phase` says which payload `data` carries. (The "
        "original contract's spelling, `run_id` for `run_key` and `event` for `phase`, is "
        "accepted too.)",
        "oneOf": variants,
        "discriminator": {"propertyName": "phase", "mapping": mapping},
    }
    post = doc["paths"]["/api/v1/azdev/run/event"]["post"]
    media = post["requestBody"]["content"]["application/json"]
    media["schema"] = {"$ref": REF + "RunEvent"}
    media["examples"] = {
        phase.value: {
            "summary": f"{'an' if phase.value[0] in 'aeiou' else 'a'} {phase.value} event",
            "value": {"run_key": RUN_KEY, "phase": phase.value, "data": PHASE_EXAMPLES[phase]},
        }
        for phase in PHASE_DATA
    }


# (path, method, status) -> {link name: (target operationId, parameters, requestBody)}
# A pipeline's flow: start a run; report its events; ask the gate (which holds or frees the
# target's lock); ask for the approval and poll it; finish; and an auditor reads the run's
# trail. Every value a link passes is one the source's answer really carries (a 200 of a
# retried POST carries the same body as its 201). An event link sets only the run: which
# phase, and that phase's payload, is the generated body's (a phase set by the link would
# rarely fit the payload generated for another).
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, dict[str, str], Any]]] = {}


def _run_links(run_key: str) -> dict[str, tuple[str, dict[str, str], Any]]:
    """The links from an answer that names a run (`run_key` is where the answer has it)."""
    return {
        "recordEvent": ("run_event", {}, {"run_key": run_key}),
        "evaluateGate": ("gate_evaluate", {}, {"run_key": run_key}),
        "requestApproval": ("approval_request", {}, {"run_key": run_key}),
        "approvalsOfRun": ("approvals_list", {"run_key": run_key}, None),
        "finishRun": ("run_finish", {}, {"run_key": run_key, "status": "success"}),
        "readRun": ("run_detail", {"run_key": run_key}, None),
        "auditOfRun": (
            "audit_query",
            {},
            {"subject_type": "run", "subject_id": run_key},
        ),
    }


_RUN_FROM_BODY = "$response.body#/run_key"
_APPROVAL_FROM_BODY = "$response.body#/id"
_APPROVAL_LINKS = {
    "approvalStatus": ("approval_detail", {"approval_id": _APPROVAL_FROM_BODY}, None),
    "signApproval": (
        "approval_sign",
        {"approval_id": _APPROVAL_FROM_BODY},
        {"decision": "approve"},
    ),
    "withdrawApproval": ("approval_withdraw", {"approval_id": _APPROVAL_FROM_BODY}, None),
    "evaluateGate": ("gate_evaluate", {}, {"run_key": _RUN_FROM_BODY}),
}
for _status in ("200", "201"):
    LINKS[("/api/v1/azdev/run/start", "post", _status)] = _run_links(_RUN_FROM_BODY)
    LINKS[("/api/v1/azdev/approval", "post", _status)] = _APPROVAL_LINKS
_RUN_OF_EVENT = "$response.body#/run/run_key"
_OF_EVENT = _run_links(_RUN_OF_EVENT)
LINKS[("/api/v1/azdev/run/event", "post", "201")] = _OF_EVENT
LINKS[("/api/v1/azdev/run/event", "post", "200")] = _OF_EVENT
_OF_FINISH = _run_links(_RUN_FROM_BODY)
LINKS[("/api/v1/azdev/run/finish", "post", "200")] = {
    name: _OF_FINISH[name] for name in ("readRun", "evaluateGate", "auditOfRun")
}
LINKS[("/api/v1/azdev/approval/{approval_id}", "get", "200")] = {
    "signApproval": _APPROVAL_LINKS["signApproval"]
}
_OF_GATE = _run_links(_RUN_FROM_BODY)
LINKS[("/api/v1/azdev/gate/evaluate", "post", "200")] = {
    "lockStatus": (
        "lock_detail",
        {"tenant": "$response.body#/tenant", "stage": "$response.body#/stage"},
        None,
    ),
    "releaseLock": (
        "lock_release",
        {},
        {"tenant": "$response.body#/tenant", "stage": "$response.body#/stage"},
    ),
    "approvalStatus": ("approval_detail", {"approval_id": "$response.body#/approval_id"}, None),
    "readRun": _OF_GATE["readRun"],
    "recordEvent": _OF_GATE["recordEvent"],
    "finishRun": _OF_GATE["finishRun"],
    "auditOfRun": _OF_GATE["auditOfRun"],
}


def links(doc: dict[str, Any]) -> None:
    """Add the links of `LINKS` to the responses that exist (an absent one is skipped)."""
    known = {
        operation.get("operationId")
        for item in doc.get("paths", {}).values()
        for operation in item.values()
        if isinstance(operation, dict)
    }
    for (path, method, status), targets in LINKS.items():
        response = doc["paths"].get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        found = {}
        for name, (operation_id, parameters, body) in targets.items():
            if operation_id not in known:
                continue
            link: dict[str, Any] = {"operationId": operation_id}
            if parameters:
                link["parameters"] = dict(parameters)
            if body is not None:
                link["requestBody"] = body
            found[name] = link
        if found:
            response["links"] = found


def retry_answers(doc: dict[str, Any]) -> None:
    """Declare the body of a retry's 200 where a POST answers 201 when it creates and 200 when
    it finds what an earlier call created: the route answers both with its one response model,
    but the generated document puts the model under the 201 only, so a 200's body went
    unchecked (and a link from it read a body the document did not declare)."""
    for item in doc.get("paths", {}).values():
        operation = item.get("post")
        if not isinstance(operation, dict):
            continue
        responses = operation.get("responses", {})
        created, retried = responses.get("201"), responses.get("200")
        if created is None or retried is None or "content" in retried:
            continue
        if "content" in created:
            retried["content"] = json.loads(json.dumps(created["content"]))


def phases_and_links(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with phases, retries' answers and links, every part its own copy (no YAML
    anchors)."""
    event_phases(doc)
    retry_answers(doc)
    links(doc)
    copied: dict[str, Any] = json.loads(json.dumps(doc))
    return copied
