"""Sweeps: grids of scenarios (or of mixing-time measurements) and seeds, resumable.

A sweep file names a base (a scenario for ``kind: run``, a protocol for
``kind: mixing-time``), axes of overrides (``grid``: their product; ``zip``: varied
together) and seeds. Every point is validated before anything runs. Each finished point is
one JSON file ``points/<key>.json`` in the output folder, written under a temporary name and
renamed, where ``key`` is the SHA-256 of the canonical JSON of the point's resolved
configuration: a rerun skips the points already there, so a sweep killed at any moment and
run again ends with every point exactly once. ``docs/sweeps.md`` is the reference.
"""

from __future__ import annotations

import collections
import copy
import csv
import datetime
import hashlib
import io
import itertools
import json
import math
import os
import re
import socket
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mixsim import _memory, _yaml
from mixsim.errors import ConfigError, DivergenceError
from mixsim.metrics import METRICS
from mixsim.scenario import (
    _FILE_KEYS,
    Scenario,
    _error_from_validation,
    _key_lines,
    apply_overrides,
    resolve_paths,
    unknown_key_error,
)

__all__ = ["Sweep", "Point", "SweepOutcome", "load_sweep", "point_key", "run_sweep", "folder_lock",
           "run_point", "results_table", "aggregate", "write_tables", "plot_sweep", "KINDS"]

KINDS = ("run", "mixing-time")
#: Keys of a mixing-time point (and so the axes a mixing-time sweep may vary).
MIXING_KEYS = ("protocol", "workers", "runs", "method", "params", "starts", "coords")
#: Metric columns of a learning point (its last evaluation, then the run's own t_mix, xi).
RUN_METRICS = (*METRICS, "t_mix", "xi")
#: Metric columns of a mixing-time point (one row per number of workers).
MIXING_METRICS = ("workers", "t_mix", "ci95_low", "ci95_high", "xi", "theory", "runs",
                  "method")
#: The keys of a mixing-time point that hold a path (as a scenario's protocol keys).
_MIXING_FILE_KEYS = {("protocol",): _FILE_KEYS[("protocol", "name")],
                     ("params", "graph"): _FILE_KEYS[("protocol", "params", "graph")]}
_POINTS = "points"
#: A sweep name: the name of one folder, not hidden, never ``..`` or a path.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_MANIFEST = "sweep.json"
_LOCK = ".sweep.lock"
_HOLDER = ".sweep.lock.holder"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SweepFile(_Strict):
    """The schema of a sweep file (see ``docs/sweeps.md``)."""

    name: str = "sweep"
    kind: Literal["run", "mixing-time"] = "run"
    base: str | dict[str, Any] | None = None
    protocol: str | None = None
    workers: int | list[int] | None = None
    runs: int | None = Field(None, ge=1)
    method: Literal["auto", "trace", "montecarlo", "spectral"] | None = None
    params: dict[str, Any] | None = None
    starts: int | None = Field(None, ge=1)
    coords: int | None = Field(None, ge=1)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: int | list[int] | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)


class MixingPoint(_Strict):
    """The resolved configuration of one mixing-time point."""

    protocol: str
    workers: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [8])
    runs: int = Field(100, ge=1)
    method: Literal["auto", "trace", "montecarlo", "spectral"] = "auto"
    seed: int = Field(0, ge=0)
    params: dict[str, Any] = Field(default_factory=dict)
    starts: int | None = Field(None, ge=1)
    coords: int | None = Field(None, ge=1)


@dataclass
class Point:
    """One point of a sweep.

    Attributes
    ----------
    key : str
        SHA-256 (hex) of the canonical JSON of ``kind`` and the identity of ``config``.
    axes : dict
        The value of every varied key at this point (``grid`` and ``zip`` axes).
    seed : int
    config : dict
        The resolved configuration: a scenario (``kind: run``) or a :class:`MixingPoint`.
    """

    key: str
    axes: dict
    seed: int
    config: dict


@dataclass
class Sweep:
    """A validated sweep file and its points.

    Attributes
    ----------
    name, kind : str
    source : str
        The sweep file.
    axes : list of str
        The varied keys, ``grid`` first, then ``zip``.
    points : list of Point
        In order: grid product, then zip rows, then seeds.
    """

    name: str
    kind: str
    source: str
    axes: list[str]
    points: list[Point] = field(default_factory=list)


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did.

    Attributes
    ----------
    out_dir : Path
    total, skipped, done, failed : int
        Points in the sweep, points found finished (or failed, without ``retry_failed``),
        points finished by this call, points that failed (in this call or kept from before).
    """

    out_dir: Path
    total: int
    skipped: int
    done: int
    failed: int
    recomputed: list[tuple[Point, str]] = field(default_factory=list)


# -- reading and validating ---------------------------------------------------------------

def _canonical(value) -> str:
    """Canonical JSON: sorted keys, no spaces (infinities as ``Infinity``)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _identity(kind: str, config: dict) -> dict:
    """What a point's key depends on: everything that can change its results (not the
    scenario's name, output folder or plot switch)."""
    if kind == "run":
        config = {k: v for k, v in config.items() if k != "name"}
        config["outputs"] = {k: v for k, v in config["outputs"].items()
                             if k not in ("dir", "plots")}
    return {"kind": kind, "config": config}


def point_key(kind: str, config: dict) -> str:
    """The stable key of a point: SHA-256 of the canonical JSON of its identity."""
    return hashlib.sha256(_canonical(_identity(kind, config)).encode()).hexdigest()


def _read_yaml(path: Path, what: str) -> tuple[Any, str]:
    return _yaml.read_file(path, what=what)


def _where(source: str, lines: dict, *paths) -> str:
    for path in paths:
        if path in lines:
            return f"{source}:{lines[path]}"
    return source


def _model_error(exc: ValidationError, model, source: str, lines: dict) -> ConfigError:
    """A :class:`ConfigError` from a sweep-level model: unknown keys list this model's
    keys; every other error is formatted as a scenario's."""
    error = exc.errors()[0]
    if error["type"] != "extra_forbidden":
        return _error_from_validation(exc, source, lines)
    loc = tuple(error["loc"])
    return unknown_key_error(loc, list(model.model_fields), _where(source, lines, loc))


def load_sweep(path) -> Sweep:
    """Read a sweep file and resolve and validate all its points.

    Parameters
    ----------
    path : str or Path
        The sweep YAML file. A ``base`` path is relative to it.

    Returns
    -------
    Sweep

    Raises
    ------
    ConfigError
        Any mistake in the sweep file, its base scenario or any point (unknown key, wrong
        type or value, unequal ``zip`` lengths, unknown protocol, ...); the message names
        the file, line, key and value, and the point's axis values.
    """
    path = Path(path)
    source = str(path)
    data, text = _read_yaml(path, "sweep")
    lines = _key_lines(text)
    if not isinstance(data, dict):
        raise ConfigError(f"a sweep is a mapping, got {type(data).__name__}", source=source)
    try:
        spec = SweepFile.model_validate(data)
    except ValidationError as exc:
        raise _model_error(exc, SweepFile, source, lines) from None
    _check_name(spec.name, _where(source, lines, ("name",)))
    _check_sections(spec, source, lines)
    axes = list(spec.grid) + list(spec.zip)
    sweep = Sweep(spec.name, spec.kind, source, axes)
    base, base_source, base_lines = _base(spec, path, lines)
    count = _point_count(spec)
    _memory.require(count * _memory.BYTES_PER_POINT, f"{count:,} sweep points (grid x zip x "
                    "seeds)", key="grid", source=source)
    seeds = _seeds(spec, base, _where(source, lines, ("seeds",)))
    grid_rows = list(itertools.product(*(enumerate(v) for v in spec.grid.values())))
    zip_rows = list(zip(*(enumerate(v) for v in spec.zip.values()), strict=True)) \
        if spec.zip else [()]
    seen: dict[str, dict] = {}
    for grid_row in grid_rows:
        for zip_row in zip_rows:
            chosen = [("grid", key, i, value) for key, (i, value) in zip(spec.grid, grid_row,
                                                                         strict=True)]
            chosen += [("zip", key, i, value) for key, (i, value) in zip(spec.zip, zip_row,
                                                                         strict=True)]
            for seed in seeds:
                point = _resolve(spec, base, chosen, seed, source, lines, base_source,
                                 base_lines)
                if point.key in seen:
                    raise ConfigError(
                        f"points {_describe(seen[point.key])} and {_describe(point.axes)} "
                        "resolve to the same configuration", source=source, key="grid")
                seen[point.key] = {**point.axes, "seed": seed}
                sweep.points.append(point)
    _check_names(sweep, source, lines)
    if sweep.kind == "run":
        _check_optimizers(sweep, source, lines, base_source)
        _check_learners(sweep, source, lines, base_source)
    return sweep


def _check_name(name: str, where: str) -> None:
    """A sweep's name becomes the folder ``out/NAME``: one plain folder name, never a path
    that leads elsewhere (``../x``, ``/abs``)."""
    if not _PLAIN_NAME.fullmatch(name):
        raise ConfigError(f"{name!r}: must be a plain folder name (letters, digits, '.', "
                          "'-', '_', not starting with '.'): the outputs go to out/NAME",
                          source=where, key="name")


def _check_sections(spec: SweepFile, source: str, lines: dict) -> None:
    """Cross-key rules pydantic does not express (kind-specific keys, axes)."""
    mixing_only = ("protocol", "workers", "runs", "method", "params", "starts", "coords")
    if spec.kind == "run":
        if spec.base is None:
            raise ConfigError("a sweep of kind run needs a base scenario (path or mapping)",
                              source=source, key="base")
        for key in mixing_only:
            if key in spec.model_fields_set:
                raise ConfigError(f"only for kind mixing-time; set it in the base scenario "
                                  f"or as an axis ({key}.* keys)",
                                  source=_where(source, lines, (key,)), key=key)
    else:
        if spec.base is not None:
            raise ConfigError("kind mixing-time takes protocol, workers, runs, method and "
                              "params, not a base scenario",
                              source=_where(source, lines, ("base",)), key="base")
        if spec.protocol is None and "protocol" not in spec.grid and "protocol" not in spec.zip:
            raise ConfigError("a sweep of kind mixing-time needs a protocol (or a protocol "
                              "axis)", source=source, key="protocol")
    for section in ("grid", "zip"):
        for key, values in getattr(spec, section).items():
            where = _where(source, lines, (section, key))
            if not values:
                raise ConfigError("an axis needs at least one value", source=where,
                                  key=f"{section}.{key}")
            if key == "seed" or key.startswith("seed."):
                raise ConfigError("vary seeds with the seeds key", source=where,
                                  key=f"{section}.{key}")
            if spec.kind == "mixing-time" and key.split(".")[0] not in MIXING_KEYS:
                raise ConfigError(f"not a mixing-time key; allowed: {', '.join(MIXING_KEYS)} "
                                  "(params.NAME for a protocol parameter)", source=where,
                                  key=f"{section}.{key}")
    both = set(spec.grid) & set(spec.zip)
    if both:
        key = sorted(both)[0]
        raise ConfigError("an axis is in grid or in zip, not both",
                          source=_where(source, lines, ("zip", key)), key=f"zip.{key}")
    lengths = {key: len(values) for key, values in spec.zip.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise ConfigError(f"zip axes need equal lengths ({detail})",
                          source=_where(source, lines, ("zip",)), key="zip")
    if "seed" in spec.overrides:
        raise ConfigError("vary seeds with the seeds key",
                          source=_where(source, lines, ("overrides", "seed")),
                          key="overrides.seed")


def _base(spec: SweepFile, path: Path, lines: dict) -> tuple[dict, str, dict]:
    """The base configuration, with the file and line numbers its keys come from."""
    source = str(path)
    if spec.kind == "mixing-time":
        base = {"protocol": spec.protocol,
                **{key: value for key, value in spec.model_dump().items()
                   if key in MIXING_KEYS[1:] and value is not None}}
        if isinstance(base.get("workers"), int):
            base["workers"] = [base["workers"]]
        return base, source, lines
    if isinstance(spec.base, dict):
        inline = {key[1:]: line for key, line in lines.items() if key[:1] == ("base",)}
        return resolve_paths(copy.deepcopy(spec.base), path.parent), source, inline
    base_path = Path(spec.base)
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    data, text = _read_yaml(base_path, "base scenario")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a scenario is a mapping, got {type(data).__name__}",
                          source=str(base_path))
    return resolve_paths(data, base_path.parent), str(base_path), _key_lines(text)


def _point_count(spec: SweepFile) -> int:
    """How many points the sweep file makes, counted before any is made."""
    seeds = spec.seeds if isinstance(spec.seeds, int) else len(spec.seeds or [0])
    zipped = max((len(values) for values in spec.zip.values()), default=1)
    return math.prod(len(values) for values in spec.grid.values()) * zipped * max(seeds, 1)


def _seeds(spec: SweepFile, base: dict, where: str) -> list[int]:
    if spec.seeds is None:
        seed = base.get("seed", 0) if spec.kind == "run" else 0
        return [seed]
    if isinstance(spec.seeds, int):
        if spec.seeds < 1:
            raise ConfigError(f"{spec.seeds}: the number of seeds must be >= 1", source=where,
                              key="seeds")
        return list(range(spec.seeds))
    if len(set(spec.seeds)) != len(spec.seeds) or any(s < 0 for s in spec.seeds):
        raise ConfigError(f"{spec.seeds}: seeds must be distinct integers >= 0", source=where,
                          key="seeds")
    return list(spec.seeds)


def _describe(axes: dict) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in axes.items()) or "(base)"


def _resolve(spec, base, chosen, seed, source, lines, base_source, base_lines) -> Point:
    """Apply the overrides, the axis values and the seed to the base; validate."""
    config = copy.deepcopy(base)
    origins = {}
    settings = [("overrides", key, None, value) for key, value in spec.overrides.items()]
    for section, key, index, value in settings + chosen:
        origins[key] = _where(source, lines, (section, key, index), (section, key))
        try:
            apply_overrides(config, {key: value})
        except ConfigError as exc:
            raise ConfigError(exc.message, source=origins[key],
                              key=f"{section}.{key}") from None
    # A path the sweep file writes (a protocol file, an edge list, a data file) is relative
    # to the sweep file's folder; the base's were made relative to the base's already.
    resolve_paths(config, Path(source).parent,
                  None if spec.kind == "run" else _MIXING_FILE_KEYS)
    config["seed"] = seed
    if spec.kind == "mixing-time" and isinstance(config.get("workers"), int):
        config["workers"] = [config["workers"]]
    axes = {key: value for _, key, _, value in chosen}
    model = Scenario if spec.kind == "run" else MixingPoint
    try:
        resolved = model.model_validate(config)
    except ValidationError as exc:
        loc = tuple(exc.errors()[0]["loc"])
        dotted = ".".join(map(str, loc))
        from_sweep = [key for key in origins
                      if dotted == key or dotted.startswith(key + ".")
                      or key.startswith(dotted + ".")]
        if from_sweep and model is Scenario:
            error = _error_from_validation(exc, origins[from_sweep[-1]], {})
        elif from_sweep:
            error = _model_error(exc, model, origins[from_sweep[-1]], {})
        elif model is Scenario:
            error = _error_from_validation(exc, base_source, base_lines)
        else:
            error = _model_error(exc, model, source, lines)
        raise ConfigError(f"{error.message} (at point {_describe({**axes, 'seed': seed})})",
                          source=error.source, key=error.key) from None
    config = resolved.model_dump()
    if spec.kind == "run":
        config["outputs"].update(dir=None, plots=False)
    return Point(point_key(spec.kind, config), axes, seed, config)


def _check_names(sweep: Sweep, source: str, lines: dict) -> None:
    """Load every distinct protocol (name and parameters) once, so that a misspelt name in
    an axis fails now rather than in every point; for mixing time, build each at every
    number of workers (:func:`_check_sizes`)."""
    from mixsim.protocol import load_protocol

    loaded, sizes = {}, set()
    for point in sweep.points:
        if sweep.kind == "run":
            name, params = point.config["protocol"]["name"], point.config["protocol"]["params"]
            key, prefix = "protocol.name", "protocol."
        else:
            name, params = point.config["protocol"], point.config["params"]
            key, prefix = "protocol", ""
        signature = _canonical([name, params])
        if signature in loaded:
            if sweep.kind == "mixing-time":
                _check_sizes(loaded[signature], point, sizes, source, lines)
            continue
        try:
            protocol = loaded[signature] = load_protocol(name, params)
        except ConfigError as exc:
            varied = [k for k in sweep.axes if k == key or k.startswith(prefix + "params.")]
            named = [k for k in varied if exc.key and exc.key.endswith(k.rsplit(".", 1)[-1])]
            axis = (named or varied or [None])[0]
            section = "grid" if ("grid", axis) in lines else "zip"
            where = _where(source, lines, (section, axis), (key.split(".")[0],))
            raise ConfigError(f"{exc.message} (at point {_describe(point.axes)})",
                              source=where, key=exc.key or key) from None
        if sweep.kind == "mixing-time":
            _check_sizes(protocol, point, sizes, source, lines)


def _check_optimizers(sweep: Sweep, source: str, lines: dict, base_source: str) -> None:
    """Build every distinct optimizer, compressor and memory scheme of a learning sweep
    once: a name or parameter their factories reject fails now, not in every point."""
    from mixsim import optim

    checked = set()
    for point in sweep.points:
        section = point.config["optimizer"]
        signature = _canonical(section)
        if signature in checked:
            continue
        checked.add(signature)
        part = "method"
        try:
            method = dict(section["method"])
            optim.make_optimizer(method.pop("name"), **method)
            part = "compressor"
            params = dict(section["compressor"])
            compressor = optim.make_compressor(params.pop("name"), **params)
            if section["memory"] != "none":
                part = "memory"
                optim.make_memory(section["memory"], compressor)
        except ConfigError as exc:
            prefix = f"optimizer.{part}"
            sub = exc.key if exc.key and exc.key not in (part, "optimizer", "compressor") \
                else "name"
            key = prefix if part == "memory" else f"{prefix}.{sub}"
            where = _origin(key, prefix, sweep.axes, source, lines, base_source)
            raise ConfigError(f"{exc.message} (at point {_describe(point.axes)})",
                              source=where, key=key) from None


def _check_learners(sweep: Sweep, source: str, lines: dict, base_source: str) -> None:
    """Build each distinct learning configuration once, without running it
    (:func:`mixsim.learning.check_learner`, as ``mixsim validate`` does for a scenario):
    what only the built pieces find (a placement the protocol lacks, a top-k ``k`` above
    the model's dimension) fails before any point runs. Points that differ only in their
    seed are built once: the seed changes no such check."""
    from mixsim.learning import check_learner

    checked = set()
    for point in sweep.points:
        signature = _canonical({k: v for k, v in point.config.items() if k != "seed"})
        if signature in checked:
            continue
        checked.add(signature)
        try:
            check_learner(Scenario.model_validate(point.config))
        except ConfigError as exc:
            key = exc.key or "base"
            where = _origin(key, key.split(".")[0], sweep.axes, source, lines, base_source)
            raise ConfigError(f"{exc.message} (at point {_describe(point.axes)})",
                              source=where, key=key) from None


def _origin(key: str, prefix: str, axes: list, source: str, lines: dict,
            base_source: str) -> str:
    """Where a value at ``key`` (in section ``prefix``) came from: the axis or override
    that sets it, else an axis varying its section, else the base scenario."""
    def axis_line(axis):
        return _where(source, lines, ("grid" if ("grid", axis) in lines else "zip", axis))

    def sets(dotted):
        return key == dotted or key.startswith(f"{dotted}.")

    exact = [k for k in axes if sets(k)]
    if exact:
        return axis_line(exact[0])
    overrides = [k for k in lines if len(k) == 2 and k[0] == "overrides" and sets(str(k[1]))]
    if overrides:
        return _where(source, lines, overrides[0])
    siblings = [k for k in axes if k.startswith(prefix)]
    return axis_line(siblings[0]) if siblings else base_source


def _check_sizes(protocol, point: Point, checked: set, source: str, lines: dict) -> None:
    """Build the protocol for each number of workers of a mixing-time point (once per
    protocol, parameters and size): a size the protocol cannot take (a fixed graph of
    another size, a slot count below 1) fails now, not when the point runs."""
    from mixsim.engine import Simulation

    for n in point.config["workers"]:
        signature = _canonical([protocol.source, protocol.name, protocol.params, n])
        if signature in checked:
            continue
        checked.add(signature)
        try:
            Simulation(protocol, n)
        except ConfigError as exc:
            section = "grid" if ("grid", "workers") in lines else "zip"
            where = _where(source, lines, (section, "workers"), ("workers",), ("protocol",))
            inside = f"in {exc.source}; " if exc.source else ""
            raise ConfigError(f"{exc.message} ({inside}at point "
                              f"{_describe({**point.axes, 'workers': n})})",
                              source=where, key="workers") from None


# -- running -------------------------------------------------------------------------------

def run_point(kind: str, config: dict) -> dict:
    """Compute one point (in this process, or on a Dask worker).

    Returns
    -------
    dict
        ``{"status": "done", "rows": [...], "summary": {...}}`` for a learning run,
        ``{"status": "done", "results": [...]}`` for a mixing-time point, or
        ``{"status": "failed", "error": ..., "traceback": ...}``: a point's failure is
        recorded, never raised. A learning run that diverged also keeps its ``rows`` and
        ``summary`` up to the divergence.
    """
    try:
        if kind == "run":
            from mixsim.learning import run

            try:
                result = run(Scenario.model_validate(config))
            except DivergenceError as exc:
                # As `mixsim run` does: the metrics recorded before the divergence are kept.
                return {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(), "rows": exc.result.rows,
                        "summary": exc.result.summary}
            return {"status": "done", "rows": result.rows, "summary": result.summary}
        from mixsim.mixing import mixing_time

        point = MixingPoint.model_validate(config)
        results = mixing_time(point.protocol, point.workers, runs=point.runs,
                              method=point.method, seed=point.seed, params=point.params,
                              starts=point.starts, d=point.coords)
        return {"status": "done", "results": [
            {**r.as_dict(), "method": r.method,
             "samples": [float(s) for s in np.asarray(r.samples)]} for r in results]}
    except Exception as exc:  # noqa: BLE001 - a point's failure is data, recorded in its file
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _checksum(record: dict) -> str:
    """SHA-256 of the canonical JSON of a point record without its own checksum."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(_canonical(body).encode()).hexdigest()


def _read_point(path: Path) -> tuple[dict | None, str | None]:
    """A point file and, when it cannot be used, why: ``(None, None)`` when there is no
    file, ``(None, reason)`` when it is unreadable or not what this sweep wrote."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"unreadable ({exc.strerror})"
    try:
        record = json.loads(text)
    except ValueError:
        return None, "not valid JSON (damaged)"
    if not isinstance(record, dict) or "checksum" not in record:
        return None, "no checksum (written by an older mixsim, or not a point file)"
    if record["checksum"] != _checksum(record):
        return None, "checksum mismatch (changed after it was written)"
    if record.get("key") != path.stem:
        # The checksum covers the content, not the name: a point copied under another.
        return None, f"holds point {record.get('key')!r}, not {path.stem!r}"
    return record, None


def _record(points_dir: Path, point: Point, kind: str, payload: dict) -> None:
    record = {"key": point.key, "kind": kind, "axes": point.axes, "seed": point.seed,
              "config": point.config, **payload}
    record["checksum"] = _checksum(record)
    _atomic_write(points_dir / f"{point.key}.json", json.dumps(record, sort_keys=True) + "\n")


def _manifest(sweep: Sweep) -> dict:
    return {"name": sweep.name, "kind": sweep.kind, "source": sweep.source, "axes": sweep.axes,
            "points": [{"key": p.key, "axes": p.axes, "seed": p.seed} for p in sweep.points]}


def run_sweep(sweep, out=None, *, client=None, retry_failed: bool = False,
              progress: bool = False) -> SweepOutcome:
    """Run the points of a sweep that are not finished yet, then write the tables.

    Parameters
    ----------
    sweep : str, Path or Sweep
        A sweep file or a loaded :class:`Sweep`.
    out : str or Path, optional
        Output folder (default ``out/<sweep name>``).
    client : distributed.Client, optional
        Where the points run; default: one after another in this process.
    retry_failed : bool
        Run again the points recorded as failed (default: keep their record).
    progress : bool
        Show a progress bar over points.

    Returns
    -------
    SweepOutcome

    Notes
    -----
    Only this process writes files: ``sweep.json`` (the points), ``points/<key>.json``
    (one per point, when it finishes; atomic, with a checksum), ``results.csv`` and
    ``aggregate.csv``. It holds the folder's lock (:func:`folder_lock`) meanwhile: a
    second sweep into the same folder stops with :class:`ConfigError`.

    Raises
    ------
    ConfigError
        Another sweep holds the output folder.
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    out_dir = Path(out) if out is not None else Path("out") / sweep.name
    points_dir = out_dir / _POINTS
    _check_outputs(out_dir)
    points_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(out_dir):
        return _run_locked(sweep, out_dir, points_dir, client, retry_failed, progress)


def _check_outputs(out_dir: Path) -> None:
    """One-line error, before any point runs, when something that is not what the sweep
    writes stands where it writes (a folder named ``results.csv``, a file named
    ``points``, an output folder that is a file)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("is not a folder; choose another --out", source=str(out_dir))
    expected = {_POINTS: "folder", _MANIFEST: "file", "results.csv": "file",
                "aggregate.csv": "file"}
    for name, kind in expected.items():
        path = out_dir / name
        if path.exists() and (path.is_dir() if kind == "file" else not path.is_dir()):
            found = "a folder" if path.is_dir() else "a file"
            raise ConfigError(f"is {found} where the sweep writes its {name} {kind}; remove "
                              "it or choose another --out", source=str(path))


def _run_locked(sweep: Sweep, out_dir: Path, points_dir: Path, client, retry_failed: bool,
                progress: bool) -> SweepOutcome:
    from tqdm import tqdm

    for stale in points_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    _atomic_write(out_dir / _MANIFEST, json.dumps(_manifest(sweep), indent=1) + "\n")
    todo, skipped, failed, recomputed = [], 0, 0, []
    for point in sweep.points:
        path = points_dir / f"{point.key}.json"
        if path.exists() and not path.is_file():
            # Nothing can be written there: say so before any point runs.
            raise ConfigError("is not a file (a folder or a special file stands where this "
                              "point's results go); remove it and run the sweep again",
                              source=str(path))
        record, problem = _read_point(path)
        status = record.get("status") if record else None
        if status == "done" or (status == "failed" and not retry_failed):
            skipped += 1
            failed += status == "failed"
        else:
            todo.append(point)
            if problem is not None:
                recomputed.append((point, problem))
    done = 0
    bar = tqdm(total=len(sweep.points), initial=skipped, desc=sweep.name, unit="point",
               disable=not progress)
    try:
        if client is None:
            for point in todo:
                payload = run_point(sweep.kind, point.config)
                _record(points_dir, point, sweep.kind, payload)
                done += payload["status"] == "done"
                failed += payload["status"] == "failed"
                bar.update()
        else:
            done, new_failed = _run_on(client, sweep, todo, points_dir, bar)
            failed += new_failed
    finally:
        bar.close()
    write_tables(out_dir)
    return SweepOutcome(out_dir, len(sweep.points), skipped, done, failed, recomputed)


@contextmanager
def folder_lock(out_dir):
    """Hold the lock of a sweep's output folder (one sweep at a time writes there).

    The lock is an OS file lock (``filelock``), so it goes away with its process, even
    one killed by SIGKILL; the holder's process id, host and start time are written next
    to it so that a second sweep can say who holds it.

    Raises
    ------
    ConfigError
        Another process holds the lock (the message names it).
    """
    from filelock import FileLock, Timeout

    out_dir = Path(out_dir)
    lock = FileLock(out_dir / _LOCK)
    holder = out_dir / _HOLDER
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            who = json.loads(holder.read_text())
            named = (f"process {who['pid']} on {who['host']}, running since "
                     f"{who['since']}")
        except (OSError, ValueError, KeyError, TypeError):
            named = "a process that has not written its name yet"
        raise ConfigError(f"another mixsim sweep is writing here ({named}); wait for it "
                          "or choose another --out", source=str(out_dir)) from None
    try:
        since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        _atomic_write(holder, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                          "since": since}) + "\n")
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def _run_on(client, sweep: Sweep, todo: list[Point], points_dir: Path, bar) -> tuple[int, int]:
    from distributed import as_completed

    futures = client.map(run_point, [sweep.kind] * len(todo), [p.config for p in todo],
                         key=[f"mixsim-point-{p.key}" for p in todo], pure=False)
    by_future = {future.key: point for future, point in zip(futures, todo, strict=True)}
    done = failed = 0
    for future in as_completed(futures):
        point = by_future[future.key]
        try:
            payload = future.result()
        except Exception as exc:  # noqa: BLE001 - lost worker, cancelled task: recorded
            payload = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                       "traceback": ""}
        _record(points_dir, point, sweep.kind, payload)
        future.release()
        done += payload["status"] == "done"
        failed += payload["status"] == "failed"
        bar.update()
    return done, failed


# -- tables ---------------------------------------------------------------------------------

def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    return _canonical(value)


def _load(out_dir: Path) -> tuple[dict, list[tuple[dict | None, str | None]]]:
    out_dir = Path(out_dir)
    manifest_path = out_dir / _MANIFEST
    if not manifest_path.is_file():
        raise ConfigError(f"no {_MANIFEST}: not the output folder of a sweep",
                          source=str(out_dir))
    try:
        manifest = json.loads(manifest_path.read_text())
        keys = [p["key"] for p in manifest["points"]]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{_MANIFEST} is damaged ({type(exc).__name__}); rerun the sweep "
                          "to write it again", source=str(out_dir)) from None
    records = [_read_point(out_dir / _POINTS / f"{key}.json") for key in keys]
    return manifest, records


def results_table(out_dir, *, rows: Literal["final", "all"] = "final") -> tuple[list, list]:
    """The tidy table of a sweep: one row per point (learning runs: its last evaluation;
    ``rows="all"``: one per evaluation) or per point and number of workers (mixing time).

    Parameters
    ----------
    out_dir : str or Path
        The sweep's output folder.
    rows : {"final", "all"}

    Returns
    -------
    columns : list of str
        ``point``, ``status``, the axes, ``seed``, the metrics, ``error``.
    table : list of dict
        Points not computed yet have status ``missing``; a point file that is damaged or
        was changed after it was written has status ``invalid`` (the reason in
        ``error``); a failed run that recorded rows (a divergence) keeps them.
    """
    if rows not in ("final", "all"):
        raise ConfigError(f"{rows!r}: allowed: final, all", key="rows")
    manifest, records = _load(out_dir)
    axes = manifest["axes"]
    metrics = RUN_METRICS if manifest["kind"] == "run" else MIXING_METRICS
    columns = ["point", "status", *axes, "seed",
               *(m for m in metrics if m not in axes), "error"]
    table = []
    for entry, (record, problem) in zip(manifest["points"], records, strict=True):
        status = record["status"] if record else ("invalid" if problem else "missing")
        head = {"point": entry["key"], "status": status, **entry["axes"],
                "seed": entry["seed"]}
        if record is None:
            table.append({**head, "error": problem})
        elif manifest["kind"] == "run" and record.get("rows"):
            # A diverged run keeps the rows it recorded, as `mixsim run` does.
            summary = record["summary"]
            chosen = record["rows"] if rows == "all" else record["rows"][-1:]
            for row in chosen:
                table.append({**head, **row, "t_mix": summary["t_mix"], "xi": summary["xi"],
                              "error": record.get("error")})
        elif record["status"] != "done":
            table.append({**head, "error": record.get("error")})
        else:
            for result in record["results"]:
                ci = result["ci95"] or (None, None)
                table.append({**head, **result, "ci95_low": ci[0], "ci95_high": ci[1]})
    return columns, table


def _group_columns(manifest: dict, rows: str) -> list[str]:
    extra = ["workers"] if manifest["kind"] == "mixing-time" else []
    extra += ["step"] if rows == "all" and manifest["kind"] == "run" else []
    return [*manifest["axes"], *(c for c in extra if c not in manifest["axes"])]


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def aggregate(out_dir, *, rows: Literal["final", "all"] = "final") -> tuple[list, list]:
    """Mean and 95% Student-t interval of each metric across seeds.

    Points are grouped by their axis values (and, for mixing time, the number of workers;
    for ``rows="all"``, the step); non-finite and missing values are left out. The t_mix
    of a mixing-time sweep pools the runs of all seeds: its interval is that of the mean
    of every run (with one seed: the point's own 95% interval).

    Returns
    -------
    columns : list of str
        The group columns, ``seeds`` (points with results), ``failed``, then
        ``METRIC_mean``, ``METRIC_low``, ``METRIC_high`` per numeric metric.
    table : list of dict
        One row per group with results, in the order of first appearance, then one per
        configuration with none (its metrics empty).
    """
    from scipy import stats

    manifest, _ = _load(out_dir)
    _, table = results_table(out_dir, rows=rows)
    keys = _group_columns(manifest, rows)
    metrics = [m for m in (RUN_METRICS if manifest["kind"] == "run" else MIXING_METRICS)
               if m not in keys and m not in ("method",)]
    axes = manifest["axes"]
    groups: dict[str, list[dict]] = {}
    failures: dict[str, int] = {}
    for row in table:
        config = _canonical([row.get(k) for k in axes])
        if row["status"] == "done":
            groups.setdefault(_canonical([row.get(k) for k in keys]), []).append(row)
        else:
            failures[config] = failures.get(config, 0) + (row["status"] == "failed")
    covered = {_canonical([m[0].get(k) for k in axes]) for m in groups.values()}
    for row in table:
        config = _canonical([row.get(k) for k in axes])
        if config not in covered:
            covered.add(config)
            groups[config] = [row]
    columns = [*keys, "seeds", "failed"]
    columns += [f"{m}_{part}" for m in metrics for part in ("mean", "low", "high")]
    out = []
    for members in groups.values():
        finished = [r for r in members if r["status"] == "done"]
        row = {k: members[0].get(k) for k in keys}
        row["seeds"] = len({r["seed"] for r in finished})
        row["failed"] = failures.get(_canonical([members[0].get(k) for k in axes]), 0)
        for metric in metrics:
            values = np.array([v for v in (_number(r.get(metric)) for r in finished)
                               if v is not None])
            if metric == "t_mix" and manifest["kind"] == "mixing-time" and finished:
                # Every run of every seed is one sample of t_mix: the interval is that of
                # the mean over all of them (with one seed, the point's own ci95).
                values = np.array([v for r in finished
                                   for v in (_number(s) for s in r.get("samples") or ())
                                   if v is not None])
            mean = low = high = None
            if values.size:
                mean = float(values.mean())
                if values.size > 1:
                    spread = float(stats.sem(values))
                    low, high = (mean, mean) if spread == 0 else (
                        float(x) for x in stats.t.interval(0.95, values.size - 1, loc=mean,
                                                           scale=spread))
            row.update({f"{metric}_mean": mean, f"{metric}_low": low, f"{metric}_high": high})
        out.append(row)
    return columns, out


def _csv_text(columns: list[str], table: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in table:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def write_tables(out_dir) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``aggregate.csv`` in a sweep's output folder."""
    out_dir = Path(out_dir)
    results = out_dir / "results.csv"
    aggregated = out_dir / "aggregate.csv"
    _atomic_write(results, _csv_text(*results_table(out_dir)))
    _atomic_write(aggregated, _csv_text(*aggregate(out_dir)))
    return results, aggregated


# -- plots ------------------------------------------------------------------------------------

def plot_sweep(out_dir, path, *, metric: str, x: str, group: str | None = None,
               rows: Literal["final", "all"] = "final", logx: bool = False,
               logy: bool = False) -> Path:
    """Plot the mean of ``metric`` (95% interval as error bars) against axis ``x``, one
    line per value of ``group`` (and of any other varied axis).

    Parameters
    ----------
    out_dir : str or Path
        The sweep's output folder.
    path : str or Path
        PNG file to write.
    metric : str
        A metric column (``loss``, ``test_accuracy``, ``t_mix``, ...).
    x, group : str
        Axes (``step`` with ``rows="all"``, ``workers`` for mixing time).
    rows : {"final", "all"}
    logx, logy : bool

    Returns
    -------
    Path

    Raises
    ------
    ConfigError
        Unknown metric or axis (the message lists the allowed ones), or no point with a
        value of ``metric`` (every point failed or is missing): no empty plot is written.
    """
    fig = _sweep_figure(out_dir, metric=metric, x=x, group=group, rows=rows, logx=logx,
                        logy=logy)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path


def _sweep_figure(out_dir, *, metric: str, x: str, group: str | None = None,
                  rows: Literal["final", "all"] = "final", logx: bool = False,
                  logy: bool = False):
    """The figure of :func:`plot_sweep` (a ``matplotlib.figure.Figure``, not saved)."""
    from matplotlib.figure import Figure

    manifest, _ = _load(out_dir)
    columns, table = aggregate(out_dir, rows=rows)
    keys = _group_columns(manifest, rows)
    metrics = [c.removesuffix("_mean") for c in columns if c.endswith("_mean")]
    if metric not in metrics:
        raise ConfigError(f"{metric!r}: allowed: {', '.join(metrics)}", key="--metric")
    for option, axis in (("--x", x), ("--group", group)):
        if axis is not None and axis not in keys:
            raise ConfigError(f"{axis!r}: not an axis of this sweep; allowed: "
                              f"{', '.join(keys)}", key=option)
    others = [k for k in keys if k not in (x, group)
              and len({_canonical(r[k]) for r in table}) > 1]
    lines: dict[str, list[dict]] = {}
    for row in table:
        if row[f"{metric}_mean"] is None:
            continue
        label = ", ".join(f"{k}={_cell(row[k])}" for k in ([group] if group else []) + others)
        lines.setdefault(label, []).append(row)
    if not lines:
        _, points = results_table(out_dir)
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(
            collections.Counter(r["status"] for r in points).items()))
        raise ConfigError(f"no point has a value of {metric!r} ({statuses}): nothing to "
                          "plot", source=str(out_dir), key="--metric")
    numeric = all(_number(r[x]) is not None for r in table)
    categories = sorted({_cell(r[x]) for r in table}) if not numeric else []
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    ax = fig.subplots()
    for label, members in lines.items():
        members.sort(key=lambda r: _number(r[x]) if numeric else categories.index(_cell(r[x])))
        xs = [r[x] if numeric else categories.index(_cell(r[x])) for r in members]
        ys = np.array([r[f"{metric}_mean"] for r in members], dtype=float)
        low = np.array([np.nan if r[f"{metric}_low"] is None else r[f"{metric}_low"]
                        for r in members], dtype=float)
        high = np.array([np.nan if r[f"{metric}_high"] is None else r[f"{metric}_high"]
                         for r in members], dtype=float)
        errors = np.nan_to_num(np.vstack([ys - low, high - ys]), nan=0.0)
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=label or None)
    if not numeric:
        ax.set_xticks(range(len(categories)), categories)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    pooled = manifest["kind"] == "mixing-time" and metric == "t_mix"
    ax.set_ylabel(f"{metric} (mean, 95% interval over {'all runs' if pooled else 'seeds'})")
    ax.set_title(manifest["name"])
    ax.grid(True, alpha=0.3)
    if any(lines):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
