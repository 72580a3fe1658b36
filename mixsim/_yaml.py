"""YAML reading: safe, bounded, strict about keys, with YAML 1.2 booleans and numbers.

Only ``true`` and ``false`` are booleans: PyYAML follows YAML 1.1, where ``on``, ``off``,
``yes`` and ``no`` are booleans too, so a rule key ``on:`` would silently become ``True``.
``1e-12`` is a number (YAML 1.1 needs ``1.0e-12``).

A user's file is read under three bounds, so a hostile or mistaken file is rejected at
once instead of running until memory or time runs out:

- at most :data:`MAX_BYTES` bytes, decoded as UTF-8;
- at most :data:`MAX_NODES` nodes once aliases are expanded (a "billion laughs" file is a
  few hundred bytes whose aliases expand to 10^9 nodes; PyYAML shares the aliased objects,
  but everything that walks the result afterwards would visit every one of them);
- no key twice in one mapping (YAML forbids it; PyYAML would keep the last silently).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from yaml.composer import ComposerError

from mixsim.errors import ConfigError

__all__ = ["load", "read_file", "MAX_BYTES", "MAX_NODES"]

#: Largest YAML file read (scenario, protocol and sweep files are a few kilobytes).
MAX_BYTES = 256 * 1024
#: Most nodes a document may have with its aliases expanded.
MAX_NODES = 50_000

# libyaml parses (and this module's checks walk its events) about ten times faster than
# the pure-Python parser: a file at the bounds is accepted or rejected within a second.
_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):
    """A safe loader with YAML 1.2 booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
# YAML 1.2 reads 1e-12 as a number; YAML 1.1 (PyYAML) wants a dot and keeps a string.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _Frame:
    """An open collection while :func:`_check` walks the events."""

    __slots__ = ("anchor", "before", "items", "keys", "mapping")

    def __init__(self, event, before):
        self.anchor = event.anchor
        self.before = before
        self.mapping = isinstance(event, yaml.MappingStartEvent)
        self.items = 0
        self.keys: dict[tuple, int] = {}


def _check(text: str) -> None:
    """Reject alias bombs, recursive aliases and duplicate keys before anything is built.

    Walks the parser's events, counting every node once per place it appears (an alias
    counts the whole subtree it names).
    """
    count = 0
    sizes: dict[str, int] = {}
    stack: list[_Frame] = []
    for event in yaml.parse(text, Loader=_Base):
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                raise ComposerError(None, None, f"alias *{event.anchor} is undefined or "
                                    "refers to a node that contains it", event.start_mark)
            size = sizes[event.anchor]
        elif isinstance(event, yaml.ScalarEvent):
            size = 1
            if stack and stack[-1].mapping and stack[-1].items % 2 == 0:
                _check_key(stack[-1], event)
        elif isinstance(event, yaml.CollectionStartEvent):
            count += 1
            stack.append(_Frame(event, count - 1))
            continue
        elif isinstance(event, yaml.CollectionEndEvent):
            frame = stack.pop()
            size = 0
            if frame.anchor is not None:
                sizes[frame.anchor] = count - frame.before
        else:
            continue
        count += size
        if count > MAX_NODES:
            raise ComposerError(None, None, f"more than {MAX_NODES} nodes once aliases are "
                                "expanded (an alias bomb?)", event.start_mark)
        if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
            sizes[event.anchor] = 1
        if stack:
            stack[-1].items += 1


def _check_key(frame: _Frame, event) -> None:
    if event.value == "<<" and event.implicit[0]:
        return  # a merge key may repeat
    key = (event.value, event.implicit[0])
    if key in frame.keys:
        raise ComposerError(None, None, f"duplicate key {event.value!r} (first on line "
                            f"{frame.keys[key]})", event.start_mark)
    frame.keys[key] = event.start_mark.line + 1


def load(text: str):
    """Parse YAML text with YAML 1.2 booleans, bounded and without duplicate keys.

    Raises
    ------
    yaml.YAMLError
        Invalid YAML, a duplicate key, or more than :data:`MAX_NODES` expanded nodes.
    """
    _check(text)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except ValueError as exc:  # an integer of more than 4,300 digits, say
        raise yaml.YAMLError(f"a value cannot be read: {exc}") from None


def read_text(path, *, what: str = "", error: type[ConfigError] = ConfigError) -> str:
    """The text of a user's file: at most :data:`MAX_BYTES` bytes of UTF-8.

    Raises
    ------
    ConfigError
        (or ``error``) Missing file, too large, unreadable, or not UTF-8; the message names
        the file.
    """
    source = os.fspath(path)
    path = Path(path)
    if not path.is_file():
        raise error(f"no such {what + ' ' if what else ''}file", source=source)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror}", source=source) from None
    if len(raw) > MAX_BYTES:
        raise error(f"larger than {MAX_BYTES} bytes; a YAML file here is a few kilobytes",
                    source=source)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise error(f"not UTF-8 text (byte 0x{raw[exc.start]:02x})",
                    source=f"{source}:{line}") from None


def read_file(path, *, what: str = "", error: type[ConfigError] = ConfigError):
    """Read and parse a user's YAML file.

    Parameters
    ----------
    path : str or Path
    what : str
        What the file is (``"scenario"``), for the message of a missing file.
    error : type
        The :class:`ConfigError` subclass raised.

    Returns
    -------
    (object, str)
        The parsed document and its text.

    Raises
    ------
    ConfigError
        (or ``error``) Everything :func:`read_text` raises, invalid YAML, a duplicate key,
        an alias bomb; the message names the file and line.
    """
    text = read_text(path, what=what, error=error)
    try:
        return load(text), text
    except yaml.YAMLError as exc:
        raise error(yaml_problem(exc), source=_where(os.fspath(path), exc)) from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line saying what is wrong in a YAML text."""
    return f"not valid YAML ({getattr(exc, 'problem', None) or exc})"


def _where(source: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"{source}:{mark.line + 1}" if mark is not None else source
