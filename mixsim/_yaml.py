"""YAML reading with YAML 1.2 booleans: only ``true`` and ``false`` are booleans.

PyYAML follows YAML 1.1, where ``on``, ``off``, ``yes`` and ``no`` are booleans too, so a
rule key ``on:`` would silently become ``True``.
"""

from __future__ import annotations

import re

import yaml

__all__ = ["load"]


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load(text: str):
    """Parse YAML text with YAML 1.2 booleans."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
