"""What the pipeline client reads from the files a pipeline already has: scan results in
SARIF 2.1.0, dependencies from a CycloneDX or SPDX (2.x JSON) SBOM.

Standard library only, Python 3.8 syntax (part of the served zipapp).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

SEVERITIES = ("critical", "high", "medium", "low")


class FormatError(ValueError):
    """The file is not what it claims to be."""


def _load(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise FormatError(f"{what} is not JSON: {exc}") from None


def _security_severity(properties: Any) -> float | None:
    if not isinstance(properties, dict):
        return None
    value = properties.get("security-severity")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _from_score(score: float) -> str | None:
    # The CVSS bands GitHub code scanning uses for `security-severity`.
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    if score > 0.0:
        return "low"
    return None


_FROM_LEVEL = {"error": "high", "warning": "medium", "note": "low"}


def sarif_findings(texts: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Findings by severity over SARIF logs given as (name, text). A result's severity is its
    rule's (or its own) `security-severity` score when there is one, otherwise its level
    (error: high, warning: medium, note: low; `none` is not a finding). Suppressed results
    do not count."""
    counts = dict.fromkeys(SEVERITIES, 0)
    for name, text in texts:
        log = _load(text, name)
        runs = log.get("runs") if isinstance(log, dict) else None
        if not isinstance(runs, list) or "version" not in log:
            raise FormatError(f"{name} is not a SARIF log (no version and runs)")
        for run in runs:
            rules: dict[str, Any] = {}
            tool = run.get("tool") or {}
            components = [tool.get("driver") or {}, *(tool.get("extensions") or [])]
            for component in components:
                for rule in component.get("rules") or []:
                    if isinstance(rule, dict) and "id" in rule:
                        rules[str(rule["id"])] = rule
            for result in run.get("results") or []:
                if not isinstance(result, dict) or result.get("suppressions"):
                    continue
                rule = rules.get(str(result.get("ruleId") or ""), {})
                index = (result.get("rule") or {}).get("index")
                if not rule and isinstance(index, int):
                    driver_rules = (tool.get("driver") or {}).get("rules") or []
                    rule = driver_rules[index] if 0 <= index < len(driver_rules) else {}
                score = _security_severity(result.get("properties"))
                if score is None:
                    score = _security_severity(rule.get("properties"))
                if score is not None:
                    severity = _from_score(score)
                else:
                    level = result.get("level") or (rule.get("defaultConfiguration") or {}).get(
                        "level", "warning"
                    )
                    severity = _FROM_LEVEL.get(str(level))
                if severity is not None:
                    counts[severity] += 1
    return counts


def sbom_components(name: str, text: str) -> dict[str, Any]:
    """The SBOM as ICA's gate reads it (`{"components": [{"purl"|"name": ...}]}`) from a
    CycloneDX JSON document (as it is) or an SPDX 2.x JSON document (its packages, less the
    ones the document describes: those are the product, not its dependencies)."""
    document = _load(text, name)
    if not isinstance(document, dict):
        raise FormatError(f"{name} is not an SBOM")
    if document.get("bomFormat") == "CycloneDX":
        components = document.get("components") or []
        return {"components": [_cyclonedx(c) for c in components if isinstance(c, dict)]}
    if str(document.get("spdxVersion", "")).startswith("SPDX-2"):
        described = set(document.get("documentDescribes") or [])
        for relation in document.get("relationships") or []:
            if (
                relation.get("spdxElementId") == document.get("SPDXID")
                and relation.get("relationshipType") == "DESCRIBES"
            ):
                described.add(relation.get("relatedSpdxElement"))
        out = []
        for package in document.get("packages") or []:
            if not isinstance(package, dict) or package.get("SPDXID") in described:
                continue
            purls = [
                ref.get("referenceLocator")
                for ref in package.get("externalRefs") or []
                if isinstance(ref, dict) and ref.get("referenceType") == "purl"
            ]
            if purls and purls[0]:
                out.append({"purl": str(purls[0])})
            elif package.get("name"):
                version = package.get("versionInfo")
                out.append({"name": f"{package['name']}@{version}" if version else package["name"]})
        return {"components": out}
    raise FormatError(f"{name} is neither a CycloneDX nor an SPDX 2.x JSON document")


def _cyclonedx(component: dict[str, Any]) -> dict[str, Any]:
    if component.get("purl"):
        return {"purl": str(component["purl"])}
    version = component.get("version")
    name = str(component.get("name") or "")
    return {"name": f"{name}@{version}" if version and name else name}
