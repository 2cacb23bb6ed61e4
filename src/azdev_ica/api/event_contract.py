"""What the generated OpenAPI document cannot say by itself: one schema per pipeline event
phase (a discriminated union on `phase`, with an example each) and the links between
operations that make a flow (start -> event -> finish; approval request -> status -> sign), so
a schema-driven client or a stateful fuzzer walks real flows.

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
        schemas[event_name] = {
            "type": "object",
            "title": event_name,
            "description": f"A `{phase.value}` event of a run.",
            "properties": {
                **common,
                "phase": {"type": "string", "const": phase.value},
                "data": {"$ref": REF + data_name},
            },
            "required": ["run_key", "phase"],
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
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, dict[str, str], Any]]] = {}
_RUN_FROM_BODY = "$response.body#/run_key"
_RUN_LINKS = {
    "recordEvent": ("run_event", {}, {"run_key": _RUN_FROM_BODY, "phase": "build"}),
    "finishRun": ("run_finish", {}, {"run_key": _RUN_FROM_BODY, "status": "success"}),
    "readRun": ("run_detail", {"run_key": _RUN_FROM_BODY}, None),
    "requestApproval": ("approval_request", {}, {"run_key": _RUN_FROM_BODY}),
}
_APPROVAL_FROM_BODY = "$response.body#/id"
_APPROVAL_LINKS = {
    "approvalStatus": ("approval_detail", {"approval_id": _APPROVAL_FROM_BODY}, None),
    "signApproval": (
        "approval_sign",
        {"approval_id": _APPROVAL_FROM_BODY},
        {"decision": "approve"},
    ),
}
for _status in ("200", "201"):
    LINKS[("/api/v1/azdev/run/start", "post", _status)] = _RUN_LINKS
    LINKS[("/api/v1/azdev/approval", "post", _status)] = _APPROVAL_LINKS
_RUN_OF_EVENT = "$response.body#/run/run_key"
LINKS[("/api/v1/azdev/run/event", "post", "201")] = {
    "finishRun": ("run_finish", {}, {"run_key": _RUN_OF_EVENT, "status": "success"}),
    "readRun": ("run_detail", {"run_key": _RUN_OF_EVENT}, None),
}
LINKS[("/api/v1/azdev/approval/{approval_id}", "get", "200")] = {
    "signApproval": _APPROVAL_LINKS["signApproval"]
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


def phases_and_links(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with phases and links, every part its own copy (no YAML anchors)."""
    event_phases(doc)
    links(doc)
    copied: dict[str, Any] = json.loads(json.dumps(doc))
    return copied
