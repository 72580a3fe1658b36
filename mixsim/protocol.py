"""Protocol files: loading, validation, parameters and the catalog.

A protocol is a YAML file composed from the building blocks of :mod:`mixsim.blocks`: which
extra slots the state has, where a worker reads and writes, whether workers run in
synchronous rounds or freely, which communication events happen when, and the consensus
operator ``M_inf``. Values may be expressions (strings starting with ``=``) over the
number of workers ``n`` and the protocol's parameters. See ``docs/protocols.md``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from contextlib import contextmanager
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from simpleeval import EvalWithCompoundTypes, NameNotDefined

from mixsim import _yaml
from mixsim.errors import ConfigError, ProtocolError
from mixsim.state import SlotLayout

__all__ = ["Protocol", "load_protocol", "build_layout", "catalog", "catalog_dir"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    """A parameter a protocol file declares."""

    type: Literal["int", "float", "str", "bool", "dict"]
    default: Any = None
    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False
    choices: list[Any] | None = None
    doc: str = ""


class RuleSpec(_Strict):
    """One communication rule: when it fires and which block makes its operators."""

    on: Literal["round", "own-step", "step"]
    op: str
    args: dict[str, Any] = Field(default_factory=dict)
    every: int | str = 1
    when: str | None = None
    wait: bool = True
    delay_steps: int | str | dict[str, Any] | None = None


class DelayLineSpec(_Strict):
    """An update travels through a delay line before reaching ``into``."""

    group: str = "buffer"
    into: str = "server"
    delay: int | str = 1
    distribution: Literal["constant", "uniform", "geometric"] | str = "constant"


class TargetSpec(_Strict):
    group: str | None = None
    delay_line: DelayLineSpec | None = None


class TheorySpec(_Strict):
    t_mix: float | int | str | None = None
    kind: Literal["exact", "bound", "approximate", "none"] = "none"
    note: str = ""


class ConsensusSpec(_Strict):
    average: str = "workers"
    absorb: str | None = None


class ProtocolSpec(_Strict):
    """The schema of a protocol file."""

    name: str
    summary: str
    description: str = ""
    theory: TheorySpec = Field(default_factory=TheorySpec)
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    slots: dict[str, int | str] = Field(default_factory=dict)
    view: str = "workers"
    target: str | TargetSpec = "workers"
    schedule: str = "sync"
    communication: list[RuleSpec] = Field(default_factory=list)
    consensus: ConsensusSpec = Field(default_factory=ConsensusSpec)
    extends: str | None = None
    sparsify: float | str | None = None


_FUNCTIONS = {
    "ceil": math.ceil, "floor": math.floor, "log": math.log, "log2": math.log2,
    "sqrt": math.sqrt, "isqrt": math.isqrt, "min": min, "max": max, "abs": abs, "int": int,
    "float": float,
}


def catalog_dir() -> Path:
    """Folder of the built-in protocol files (inside the installed package if present)."""
    packaged = resources.files("mixsim") / "_catalog"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "protocols"


@cache
def catalog() -> dict[str, Path]:
    """Catalog protocol names mapped to their files."""
    return {path.stem: path for path in sorted(catalog_dir().glob("*.yaml"))}


def _resolve_path(protocol: str | Path) -> Path:
    text = str(protocol)
    if text.endswith((".yaml", ".yml")) or "/" in text or Path(text).exists():
        path = Path(text)
        if not path.is_file():
            raise ProtocolError(f"no such protocol file: {text}", source=text)
        return path
    known = catalog()
    if text not in known:
        close = difflib.get_close_matches(text, known, n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ProtocolError(
            f"unknown protocol {text!r}{hint}; known protocols: {', '.join(known)}",
            key="protocol",
        )
    return known[text]


def _read_spec(path: Path) -> ProtocolSpec:
    source = str(path)
    data, _ = _yaml.read_file(path, what="protocol", error=ProtocolError)
    if not isinstance(data, dict):
        raise ProtocolError(f"a protocol file is a mapping, got {type(data).__name__}",
                            source=source)
    try:
        return ProtocolSpec.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(error["loc"])
            close = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            message = f"unknown key{hint}; allowed: {', '.join(allowed)}"
        else:
            message = f"{error['msg']} (got {error.get('input')!r})"
        raise ProtocolError(message, source=source, key=key) from None


def _allowed_keys(loc) -> list[str]:
    model: type[BaseModel] = ProtocolSpec
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        for candidate in (RuleSpec, ParamSpec, TheorySpec, ConsensusSpec, TargetSpec,
                          DelayLineSpec):
            if annotation is candidate or candidate.__name__ in str(annotation):
                model = candidate
                break
    return list(model.model_fields)


def _coerce(name: str, spec: ParamSpec, value, source: str | None):
    key = f"params.{name}"
    if isinstance(value, str) and spec.type != "str":
        try:
            value = _yaml.load(value)
        except yaml.YAMLError:
            pass
    kinds = {"int": int, "float": (int, float), "str": str, "bool": bool, "dict": dict}
    ok = isinstance(value, kinds[spec.type]) and not (
        spec.type in ("int", "float") and isinstance(value, bool)
    )
    if spec.type == "int" and isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if not ok:
        raise ProtocolError(f"{value!r} is not a {spec.type}", source=source, key=key)
    if spec.type == "float":
        value = float(value)
        if not math.isfinite(value):
            raise ProtocolError(f"{value!r} is not a finite number", source=source, key=key)
    if spec.choices is not None and value not in spec.choices:
        allowed = ", ".join(map(str, spec.choices))
        raise ProtocolError(f"{value!r} is not allowed; choose one of {allowed}",
                            source=source, key=key)
    low_ok = spec.min is None or (value > spec.min if spec.exclusive_min else value >= spec.min)
    high_ok = spec.max is None or value <= spec.max
    if not (low_ok and high_ok):
        low = "" if spec.min is None else ("(" if spec.exclusive_min else "[") + f"{spec.min:g}"
        high = "" if spec.max is None else f"{spec.max:g}]"
        bounds = f"{low or '(-inf'}, {high or 'inf)'}"
        raise ProtocolError(f"{value!r} is out of range {bounds}", source=source, key=key)
    return value


class Protocol:
    """A validated protocol file with its parameter values.

    Use :func:`load_protocol` to make one. The protocol is independent of the number of
    workers; :meth:`evaluate` resolves an expression for a given ``n``.

    Attributes
    ----------
    name : str
    spec : ProtocolSpec
        The file's content (after ``extends`` has been resolved, the base's spec).
    params : dict
        Parameter values (defaults overridden by the user's).
    source : str
        The file it was read from.
    sparsify : float or None
        Fraction ``eta`` of coordinates each event exchanges (``None``: all).
    given : frozenset of str
        The parameters the user set (an error in their value is the user's, not the
        file's).
    """

    def __init__(self, spec: ProtocolSpec, params: dict, source: str, *, name: str,
                 summary: str, theory: TheorySpec, sparsify=None, wrapper=None,
                 given=frozenset()):
        self.spec = spec
        self.given = frozenset(given)
        self.params = params
        self.source = source
        self.name = name
        self.summary = summary
        self.theory = theory
        self.sparsify = sparsify
        self.wrapper = wrapper

    def evaluate(self, value, n: int, key: str = "", extra: dict | None = None):
        """Evaluate ``value`` (an ``=expression`` string, or a literal) for ``n`` workers.

        Expressions nested in a mapping or a list (``graph_args: {m: "=side"}``), or in
        the mapping an expression returns (``"=graph_args"``), are evaluated too.
        """
        if isinstance(value, dict):
            return {k: self.evaluate(v, n, f"{key}.{k}", extra) for k, v in value.items()}
        if isinstance(value, list):
            return [self.evaluate(v, n, f"{key}[{i}]", extra) for i, v in enumerate(value)]
        if not (isinstance(value, str) and value.startswith("=")):
            return value
        result = self._expression(value, n, key, extra)
        if isinstance(result, dict | list):
            return self.evaluate(result, n, key, extra)
        return result

    def _expression(self, value: str, n: int, key: str, extra: dict | None):
        extra = extra or {}
        names = {"n": n, **self.params, **{k: v for k, v in extra.items() if not callable(v)}}
        functions = {**_FUNCTIONS, **{k: v for k, v in extra.items() if callable(v)}}
        evaluator = EvalWithCompoundTypes(names=names, functions=functions)
        try:
            return evaluator.eval(value[1:])
        except NameNotDefined as exc:
            known = ", ".join(sorted(names))
            raise ProtocolError(f"unknown name {exc.name!r} in {value!r}; known: {known}",
                                source=self.source, key=key) from None
        except Exception as exc:
            raise ProtocolError(f"cannot evaluate {value!r}: {exc}", source=self.source,
                                key=key) from None

    def theory_t_mix(self, n: int) -> float | None:
        """The theoretical mixing time for ``n`` workers, where the file gives one."""
        if self.theory.t_mix is None:
            return None
        extra = {}
        if isinstance(self.theory.t_mix, str) and "gossip_rounds" in self.theory.t_mix:
            extra["gossip_rounds"] = self._gossip_rounds(n)
        value = self.evaluate(self.theory.t_mix, n, "theory.t_mix", extra)
        return None if value is None else float(value)

    def _gossip_rounds(self, n: int):
        import numpy as np

        from mixsim.blocks import BLOCKS, BlockContext
        from mixsim.spectral import consensus_rounds

        def rounds():
            layout = build_layout(self, n)
            context = BlockContext(layout, np.random.default_rng(0), self.source)
            for k, rule in enumerate(self.spec.communication):
                if rule.on == "round" and rule.op in ("gossip", "slack", "average"):
                    args = {a: self.evaluate(v, n, f"communication[{k}].args.{a}")
                            for a, v in rule.args.items()}
                    return consensus_rounds(BLOCKS[rule.op](context, **args).matrix())
            raise ProtocolError("theory uses gossip_rounds() but no round-wide gossip rule "
                                "exists", source=self.source, key="theory.t_mix")

        return rounds

    @contextmanager
    def blame_given(self):
        """Re-raise an error about a rule argument ``=NAME`` as one about the parameter
        ``NAME`` when the user set it: the value is theirs, not the protocol file's.

        The error then has no source and the key ``params.NAME``, for the caller to name
        where the value came from (``--set NAME``, a scenario's ``protocol.params``).
        """
        try:
            yield
        except ProtocolError as exc:
            match = re.fullmatch(r"communication\[(\d+)\]\.args\.(\w+)", exc.key or "")
            if exc.source != self.source or match is None:
                raise
            rules = self.spec.communication
            rule = int(match.group(1))
            value = rules[rule].args.get(match.group(2)) if rule < len(rules) else None
            name = value[1:].strip() if isinstance(value, str) and value[:1] == "=" else None
            if name not in self.given:
                raise
            raise ProtocolError(f"{self.params[name]!r}: {exc.message}",
                                key=f"params.{name}") from None

    def describe_params(self) -> dict[str, ParamSpec]:
        """Parameter specifications, including those of an extended base."""
        specs = dict(self.spec.params)
        if self.wrapper is not None:
            specs.update(self.wrapper.params)
        return specs


def build_layout(protocol: Protocol, n: int) -> SlotLayout:
    """The slot layout of ``protocol`` for ``n`` workers."""
    groups = {"workers": n}
    for name, count in protocol.spec.slots.items():
        value = protocol.evaluate(count, n, f"slots.{name}")
        if name == "workers":
            raise ProtocolError("the 'workers' group is implicit", source=protocol.source,
                                key="slots.workers")
        if not isinstance(value, int) or value < 1:
            raise ProtocolError(f"slot count {value!r} must be a positive integer for n = {n}",
                                source=protocol.source, key=f"slots.{name}")
        groups[name] = value
    target = protocol.spec.target
    if not isinstance(target, str) and target.delay_line is not None:
        line = target.delay_line
        groups.setdefault(line.group, _delay_line_length(protocol, n))
    return SlotLayout(groups)


def _delay_line_length(protocol: Protocol, n: int) -> int:
    line = protocol.spec.target.delay_line
    delay = protocol.evaluate(line.delay, n, "target.delay_line.delay")
    if not isinstance(delay, int) or delay < 0:
        raise ProtocolError(f"delay {delay!r} must be an integer >= 0", source=protocol.source,
                            key="target.delay_line.delay")
    distribution = protocol.evaluate(line.distribution, n, "target.delay_line.distribution")
    return {"constant": delay, "uniform": 2 * delay}.get(distribution, 4 * delay) + 1


def load_protocol(protocol: str | Path | Protocol, params: dict | None = None) -> Protocol:
    """Load and validate a protocol by catalog name or path, with parameter overrides.

    Parameters
    ----------
    protocol : str, Path or Protocol
        A catalog name (see ``mixsim list``) or a path to a protocol YAML file.
    params : dict, optional
        Parameter values overriding the file's defaults; strings are parsed as YAML
        scalars (so ``"0.5"`` becomes 0.5), as given on the command line.

    Returns
    -------
    Protocol

    Raises
    ------
    ProtocolError
        Unknown protocol (the message lists the known ones), malformed file, unknown
        parameter or a value of the wrong type or out of range.

    Examples
    --------
    >>> p = load_protocol("slack", {"gamma": 0.25})
    >>> p.params["gamma"]
    0.25
    """
    if isinstance(protocol, Protocol):
        if not params:
            return protocol
        protocol = protocol.source
    return _load(protocol, dict(params or {}), ())


def _load(protocol: str | Path, params: dict, chain: tuple[Path, ...]) -> Protocol:
    """:func:`load_protocol`, with the files already on the ``extends`` chain."""
    path = _resolve_path(protocol)
    spec = _anchor_paths(_read_spec(path), path.parent)
    source = str(path)
    if path.resolve() in chain:
        names = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ProtocolError(f"'extends' makes a cycle: {names}", source=str(chain[-1]),
                            key="extends")
    own = _resolve_params(spec, params, source, allow_extra=spec.extends is not None)
    given = frozenset(params)
    if spec.extends is None:
        return Protocol(spec, own, source, name=spec.name, summary=spec.summary,
                        theory=spec.theory, given=given)
    wrapper_view = Protocol(spec, own, source, name=spec.name, summary=spec.summary,
                            theory=spec.theory)
    base_name = wrapper_view.evaluate(spec.extends, 1, "extends")
    if isinstance(spec.extends, str) and not spec.extends.startswith("=") \
            and not os.path.isabs(base_name) \
            and (base_name.endswith((".yaml", ".yml")) or "/" in base_name
                 or (path.parent / base_name).is_file()):
        # A file written in this file is relative to this file's folder.
        base_name = os.path.normpath(os.path.join(os.path.abspath(path.parent), base_name))
    rest = {k: v for k, v in params.items() if k not in spec.params}
    if base_name == spec.name:
        raise ProtocolError("a protocol cannot extend itself", source=source, key="extends")
    base = _load(base_name, rest, (*chain, path.resolve()))
    eta = wrapper_view.evaluate(spec.sparsify, 1, "sparsify") if spec.sparsify else None
    theory = spec.theory
    if isinstance(theory.t_mix, str) and "base_t_mix" in theory.t_mix:
        theory = TheorySpec(
            t_mix=theory.t_mix.replace("base_t_mix", f"({_as_expr(base.theory.t_mix)})"),
            kind=theory.kind if base.theory.t_mix is not None else "none",
            note=theory.note,
        )
        if base.theory.t_mix is None:
            theory = TheorySpec(t_mix=None, kind="none", note=theory.note)
    merged = Protocol(base.spec, {**base.params, **own}, base.source, name=spec.name,
                      summary=spec.summary, theory=theory, sparsify=eta, wrapper=spec,
                      given=given)
    return merged


def _anchor_paths(spec: ProtocolSpec, folder: Path) -> ProtocolSpec:
    """Make the edge-list paths a protocol file writes relative to its own ``folder``, in
    place: a rule's literal ``graph`` argument and a ``str`` parameter's default that name a
    file (a path with a separator, an edge-list suffix, or a file in ``folder``). A value
    the user gives for a parameter (``--set graph=...``) is not touched: it stays relative to
    the working folder, as anything typed at the shell."""
    from mixsim.topology import _EDGE_LIST_SUFFIXES

    def anchored(value):
        if not isinstance(value, str) or not value or value.startswith("=") \
                or os.path.isabs(value):
            return value
        names_file = (os.sep in value or "/" in value or value.endswith(_EDGE_LIST_SUFFIXES)
                      or (folder / value).is_file())
        return os.path.normpath(os.path.join(os.path.abspath(folder), value)) \
            if names_file else value

    for rule in spec.communication:
        if "graph" in rule.args:
            rule.args["graph"] = anchored(rule.args["graph"])
    for param in spec.params.values():
        if param.type == "str" and param.choices is None:  # a choice is matched as written
            param.default = anchored(param.default)
    return spec


def _as_expr(value) -> str:
    if isinstance(value, str) and value.startswith("="):
        return value[1:]
    return repr(value)


def _resolve_params(spec: ProtocolSpec, given: dict, source: str, *, allow_extra=False):
    unknown = [k for k in given if k not in spec.params]
    if unknown and not allow_extra:
        name = unknown[0]
        close = difflib.get_close_matches(name, spec.params, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        allowed = ", ".join(spec.params) or "none"
        raise ProtocolError(f"unknown parameter {name!r}{hint}; {spec.name} takes: {allowed}",
                            key=f"params.{name}")
    values = {}
    for name, param in spec.params.items():
        value = given.get(name, param.default)
        # A value the user gave is theirs to fix: no file is named.
        where = None if name in given else source
        values[name] = _coerce(name, param, value, where) if value is not None else None
    return values


def list_protocols() -> list[tuple[str, str]]:
    """``(name, one-line summary)`` of every catalog protocol."""
    rows = []
    for name, path in catalog().items():
        try:
            rows.append((name, _read_spec(path).summary))
        except ConfigError as exc:
            rows.append((name, f"(invalid: {exc})"))
    return rows
