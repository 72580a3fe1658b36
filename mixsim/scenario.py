"""Scenario files: what a learning run simulates, validated before anything runs.

A scenario names a protocol, a cluster (workers and timing), a problem, data, an optimizer
with its compressor, a length and what to record. ``docs/scenarios.md`` is the reference of
every key. Every error names the file, the line where it can, the key and the bad value.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from mixsim import _yaml
from mixsim.errors import ConfigError

__all__ = ["Scenario", "load_scenario", "apply_overrides", "resolve_paths", "with_seed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_a_boolean(value):
    # YAML's `true` would otherwise pass for the number 1.
    if isinstance(value, bool):
        raise ValueError("a number is needed, not true/false")
    return value


#: An integer that is not a boolean.
Int = Annotated[int, BeforeValidator(_not_a_boolean)]
#: A finite number that is not a boolean (``.inf`` and ``.nan`` are refused).
Finite = Annotated[float, AllowInfNan(False), BeforeValidator(_not_a_boolean)]
#: A number that is not a boolean; infinity allowed where it means "none" (bandwidth).
Number = Annotated[float, BeforeValidator(_not_a_boolean)]


class ProtocolSection(_Strict):
    """``protocol:`` - a catalog name or protocol file, with parameter overrides."""

    name: str = "sync-ring"
    params: dict[str, Any] = Field(default_factory=dict)


class ComputeSection(_Strict):
    distribution: Literal["constant", "exponential", "lognormal"] = "exponential"
    mean: Finite = Field(1.0, gt=0)
    sigma: Finite = Field(0.5, ge=0)
    stragglers: Finite = Field(0.0, ge=0, le=1)
    slowdown: Finite = Field(4.0, ge=1)


def _endpoint(value):
    if isinstance(value, bool) or not isinstance(value, int | str) or (
            isinstance(value, int) and value < 0):
        raise ValueError("an endpoint is a worker index >= 0 or a slot group (server)")
    return value


_Endpoint = Annotated[int | str, BeforeValidator(_endpoint)]


class LinkOverride(_Strict):
    """One entry of ``timing.links.overrides``: the link between two nodes."""

    between: tuple[_Endpoint, _Endpoint]
    latency: Finite | None = Field(None, ge=0)
    bandwidth: Number | None = Field(None, gt=0)


class LinksSection(_Strict):
    latency: Finite = Field(0.0, ge=0)
    bandwidth: Number = Field(float("inf"), gt=0)
    overrides: list[LinkOverride] = Field(default_factory=list)


class TimingSection(_Strict):
    compute: ComputeSection = Field(default_factory=ComputeSection)
    links: LinksSection = Field(default_factory=LinksSection)


class ProblemSection(_Strict):
    name: str = "softmax"
    params: dict[str, Any] = Field(default_factory=dict)


class PartitionSection(_Strict):
    method: Literal["iid", "label", "dirichlet"] = "iid"
    alpha: Finite = Field(0.5, gt=0)
    shards: Int = Field(2, ge=1)
    by: Literal["auto", "label", "group"] = "auto"


class DataSection(BaseModel):
    """``data:`` - the data set (loader keys pass through) and how workers share it."""

    model_config = ConfigDict(extra="allow")
    name: str = "digits"
    partition: PartitionSection = Field(default_factory=PartitionSection)
    batch: Int | None = Field(32, ge=1)


class CompressorSection(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = "none"


class MethodSection(BaseModel):
    """``optimizer.method:`` - ``lr`` is a number, or ``corollary1`` for the step size of
    seed 002's Corollary 1 (SGD; :func:`mixsim.bounds.corollary1_choice`)."""

    model_config = ConfigDict(extra="allow")
    name: str = "amsgrad"
    lr: float | str = 1e-3

    @field_validator("lr", mode="before")
    @classmethod
    def _lr(cls, value):
        if isinstance(value, str):
            if value == "corollary1":
                return value
            try:  # a number YAML 1.1 reads as text (1.0e6), as for every number key
                value = float(value)
            except ValueError:
                raise ValueError("lr is a number >= 0 or 'corollary1'") from None
        value = _not_a_boolean(value)
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError("lr must be a finite number >= 0 (or 'corollary1')")
        return float(value)


class OptimizerSection(_Strict):
    """``optimizer:`` - where the optimizer runs, what is compressed and how."""

    placement: Literal["worker", "server", "cd-adam", "two-way", "onebit-adam"] = "worker"
    compressor: CompressorSection = Field(default_factory=CompressorSection)
    memory: Literal["none", "error-feedback", "markov", "ef21"] = "none"
    method: MethodSection = Field(default_factory=MethodSection)
    layerwise: StrictBool = False


class OutputsSection(_Strict):
    dir: str | None = None
    plots: StrictBool = True
    measure_mixing: StrictBool = True


class DivergenceSection(_Strict):
    """``divergence:`` - when a run counts as diverged (besides a non-finite value)."""

    loss_ratio: Finite | None = Field(1e4, gt=1)


class Scenario(_Strict):
    """The schema of a scenario file (see ``docs/scenarios.md``)."""

    name: str = "scenario"
    seed: Int = Field(0, ge=0)
    protocol: ProtocolSection = Field(default_factory=ProtocolSection)
    workers: Int = Field(8, ge=1)
    timing: TimingSection = Field(default_factory=TimingSection)
    problem: ProblemSection = Field(default_factory=ProblemSection)
    data: DataSection = Field(default_factory=DataSection)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    steps: Int | None = Field(None, ge=1)
    epochs: Finite | None = Field(None, gt=0)
    eval_every: Int = Field(100, ge=1)
    divergence: DivergenceSection = Field(default_factory=DivergenceSection)
    outputs: OutputsSection = Field(default_factory=OutputsSection)

    @model_validator(mode="after")
    def _length(self):
        if self.steps is None and self.epochs is None:
            self.steps = 1000
        elif self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        return self


_SECTIONS = {
    (): Scenario, ("protocol",): ProtocolSection, ("timing",): TimingSection,
    ("timing", "compute"): ComputeSection, ("timing", "links"): LinksSection,
    ("timing", "links", "overrides", "*"): LinkOverride,
    ("problem",): ProblemSection, ("data",): DataSection,
    ("data", "partition"): PartitionSection, ("optimizer",): OptimizerSection,
    ("outputs",): OutputsSection, ("divergence",): DivergenceSection,
}


def _key_lines(text: str) -> dict[tuple, int]:
    """1-based line of every mapping key of a YAML document, by its path."""
    lines: dict[tuple, int] = {}
    try:
        root = yaml.compose(text, Loader=_yaml._Loader)
    except yaml.YAMLError:
        return lines

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, key.value)
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                lines[(*path, i)] = value.start_mark.line + 1
                walk(value, (*path, i))

    if root is not None:
        walk(root, ())
    return lines


def unknown_key_error(loc: tuple, allowed: list[str], where: str) -> ConfigError:
    """The error for an unknown key at ``loc``: the closest allowed key, and all of them."""
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown key{hint}; allowed: {', '.join(allowed)}", source=where,
                       key=".".join(str(p) for p in loc))


def _error_from_validation(exc: ValidationError, source: str, lines: dict,
                           overridden=()) -> ConfigError:
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    line = next((lines[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in lines), None)
    where = f"{source}:{line}" if line else source
    # A value given with --set is the argument's fault, not the file's.
    given = next((dotted for dotted in overridden if key == dotted
                  or key.startswith(dotted + ".") or dotted.startswith(key + ".")), None)
    if given is not None:
        where = f"--set {given}"
        key = None if key == given else key
    if error["type"] == "extra_forbidden":
        model = _SECTIONS.get(tuple("*" if isinstance(p, int) else p for p in loc[:-1]))
        return unknown_key_error(loc, list(model.model_fields) if model else [], where)
    message = error["msg"].removeprefix("Value error, ")
    if "input" in error and error["type"] != "missing":
        message = f"{error['input']!r}: {message}"
    return ConfigError(message, source=where, key=key)


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """Set dotted keys (``optimizer.method.lr``) in a nested dict; values parsed as YAML."""
    for dotted, value in overrides.items():
        if isinstance(value, str):
            try:
                value = _yaml.load(value)
            except yaml.YAMLError:
                pass
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{part!r} is not a section", source=f"--set {dotted}")
            node = child
        node[parts[-1]] = value
    return data


#: Scenario keys that may name a file, and whether a value is a file there (a protocol is
#: a catalog name unless it looks like a path; a graph is a generator name unless it has a
#: file suffix: generator names have none).
_FILE_KEYS = {
    ("data", "path"): lambda value: True,
    ("protocol", "name"): lambda value: value.endswith((".yaml", ".yml")) or "/" in value,
    ("protocol", "params", "graph"): lambda value: "/" in value or bool(Path(value).suffix),
}


def resolve_paths(data: dict, folder, keys: dict | None = None) -> dict:
    """Make the relative file paths of a scenario mapping relative to ``folder`` (the
    scenario file's), in place: a scenario means the same files from any working folder.

    Parameters
    ----------
    data : dict
        A scenario as read from its file (before ``--set`` overrides, whose paths are
        relative to the working folder, as anything typed at the shell).
    folder : str or Path
    keys : dict, optional
        The keys that hold a path, each with a test of whether its value names a file
        (default: a scenario's ``data.path``, ``protocol.name``, ``protocol.params.graph``).

    Returns
    -------
    dict
        ``data``.
    """
    for path, is_file in (_FILE_KEYS if keys is None else keys).items():
        node = data
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        value = node.get(path[-1]) if isinstance(node, dict) else None
        if isinstance(value, str) and value and is_file(value) and not os.path.isabs(value):
            node[path[-1]] = os.path.normpath(os.path.join(os.path.abspath(folder), value))
    return data


def load_scenario(path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario file.

    Parameters
    ----------
    path : str or Path
        The YAML file.
    overrides : dict, optional
        Dotted keys to set before validation (``--set`` on the command line).

    Returns
    -------
    Scenario

    Raises
    ------
    ConfigError
        Missing file, invalid YAML, unknown key (with a did-you-mean), value of the wrong
        type or out of range; the message names the file, line, key and value.

    Notes
    -----
    Relative file paths in the file (``data.path``, a protocol file as ``protocol.name``,
    an edge-list file as ``protocol.params.graph``) are relative to the file's folder
    (:func:`resolve_paths`); those in ``overrides`` to the working folder.
    """
    source = str(path)
    data, text = _yaml.read_file(path, what="scenario")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a scenario is a mapping, got {type(data).__name__}", source=source)
    data = apply_overrides(resolve_paths(data, Path(path).parent), overrides or {})
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise _error_from_validation(exc, source, _key_lines(text), overrides or ()) from None


def with_seed(scenario: Scenario, seed) -> Scenario:
    """A copy of ``scenario`` with another seed (an integer >= 0, else :class:`ConfigError`)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{seed!r}: must be an integer >= 0", key="seed")
    return scenario.model_copy(update={"seed": seed})
