"""`ica policy diff`: a unified diff of two policy versions' canonical documents, and a short
semantic summary (tenants and stages added or removed, tenants changed, sections changed).

Pure: it compares the parsed content of two policies, so comments and key order in the YAML
never show as changes; the canonical form is JSON with sorted keys, two-space indents.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any


def canonical_text(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class PolicyDiff:
    from_label: str
    to_label: str
    from_sha256: str
    to_sha256: str
    unified: str
    tenants_added: list[str] = field(default_factory=list)
    tenants_removed: list[str] = field(default_factory=list)
    tenants_changed: list[str] = field(default_factory=list)
    stages_added: list[str] = field(default_factory=list)
    stages_removed: list[str] = field(default_factory=list)
    stages_changed: list[str] = field(default_factory=list)
    sections_changed: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.from_sha256 == self.to_sha256

    def summary_lines(self) -> list[str]:
        if self.identical:
            return [f"no change: both are policy {self.to_sha256[:12]}"]
        lines = [f"policy {self.from_sha256[:12]} -> {self.to_sha256[:12]}"]
        for label, items in (
            ("tenants added", self.tenants_added),
            ("tenants removed", self.tenants_removed),
            ("tenants changed", self.tenants_changed),
            ("stages added", self.stages_added),
            ("stages removed", self.stages_removed),
            ("stages changed", self.stages_changed),
            ("sections changed", self.sections_changed),
        ):
            if items:
                lines.append(f"  {label}: {', '.join(items)}")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": {"label": self.from_label, "sha256": self.from_sha256},
            "to": {"label": self.to_label, "sha256": self.to_sha256},
            "identical": self.identical,
            "summary": {
                "tenants_added": self.tenants_added,
                "tenants_removed": self.tenants_removed,
                "tenants_changed": self.tenants_changed,
                "stages_added": self.stages_added,
                "stages_removed": self.stages_removed,
                "stages_changed": self.stages_changed,
                "sections_changed": self.sections_changed,
            },
            "unified_diff": self.unified,
        }


def _keyed(items: Any, key: str) -> dict[str, Any]:
    if not isinstance(items, list):
        return {}
    return {str(item[key]): item for item in items if isinstance(item, dict) and key in item}


def _compare(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    added = [name for name in new if name not in old]
    removed = [name for name in old if name not in new]
    changed = [name for name in new if name in old and old[name] != new[name]]
    return added, removed, changed


def diff_policies(
    old: dict[str, Any],
    new: dict[str, Any],
    *,
    old_sha256: str,
    new_sha256: str,
    old_label: str,
    new_label: str,
) -> PolicyDiff:
    """Compare two policies' content (`Policy.content`)."""
    unified = "".join(
        difflib.unified_diff(
            canonical_text(old).splitlines(keepends=True),
            canonical_text(new).splitlines(keepends=True),
            fromfile=old_label,
            tofile=new_label,
        )
    )
    tenants = _compare(_keyed(old.get("tenants"), "code"), _keyed(new.get("tenants"), "code"))
    stages = _compare(_keyed(old.get("stages"), "name"), _keyed(new.get("stages"), "name"))
    sections = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
    return PolicyDiff(
        from_label=old_label,
        to_label=new_label,
        from_sha256=old_sha256,
        to_sha256=new_sha256,
        unified=unified,
        tenants_added=tenants[0],
        tenants_removed=tenants[1],
        tenants_changed=tenants[2],
        stages_added=stages[0],
        stages_removed=stages[1],
        stages_changed=stages[2],
        sections_changed=sections,
    )
