"""``--set a.b.c=value`` overrides applied to a raw (YAML-parsed) spec dict."""

from __future__ import annotations

from typing import Any

import yaml

from batchlabel.errors import SpecError


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (["a", "b"], parsed value). Values are parsed as YAML scalars."""
    if "=" not in item:
        raise SpecError(f"--set {item!r}: expected KEY=VALUE, for example --set output.path=out/run1")
    key, _, raw = item.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise SpecError(f"--set {item!r}: the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """Return ``data`` with every ``KEY=VALUE`` override applied (nested dicts created as needed)."""
    for item in items:
        parts, value = parse_override(item)
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                path = ".".join(parts[: depth + 1])
                raise SpecError(f"--set {item!r}: {path} is a {type(child).__name__}, not a section")
            node = child
        if not isinstance(node, dict):
            raise SpecError(f"--set {item!r}: cannot set a field inside a non-section")
        node[parts[-1]] = value
    return data
