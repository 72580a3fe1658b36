"""Outputs of a learning run: metrics CSV, summary JSON, plots.

Every file is written under a temporary name and renamed, so a file that exists is whole.
The metrics CSV depends only on the scenario and its seed (never on the wall clock), so
the same seed gives the same bytes. ``summary.json`` says ``"complete": false`` until the
run has finished, and stays so when it stopped early.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from mixsim import bounds
from mixsim.errors import ConfigError
from mixsim.metrics import METRICS

__all__ = ["Writer", "summary", "scenario_fingerprint", "format_number", "strict_json",
           "check_out_dir", "check_out_file"]

_PACKAGES = ("mixsim", "numpy", "scipy", "simpy", "numba", "networkx", "scikit-learn")


def format_number(value) -> str:
    """A number as a person reads it: integers whole with thousands separators
    (``52,672,900,000,000``, not ``5.26729e+13``), others to four significant digits, and
    ``-`` for none."""
    if value is None:
        return "-"
    value = float(value)
    if not np.isfinite(value):
        return str(value)
    if value.is_integer() and abs(value) < 1e18:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.1f}"
    if abs(value) >= 1e-3:
        return f"{value:.4g}"
    return f"{value:.3e}"


def strict_json(value):
    """``value`` with its non-finite numbers made strict JSON: ``inf`` and ``-inf`` become
    the strings ``"inf"`` and ``"-inf"`` (the default bandwidth is infinite), NaN becomes
    ``null``. ``json.dumps(..., allow_nan=False)`` then cannot write ``Infinity``."""
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def check_out_dir(path, name: str = "--out") -> None:
    """Raise :class:`ConfigError` unless the folder ``path`` exists or can be made.

    Nothing is created: the nearest existing ancestor must be a folder this process can
    write in.

    Parameters
    ----------
    path : str or Path
        The output folder.
    name : str
        Where it was given (``--out``, ``outputs.dir``), for the message.
    """
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{path}: cannot make the folder, {probe} is a file",
                          source=name)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: cannot make the folder, {probe} is not writable",
                          source=name)


def check_out_file(path, name: str) -> None:
    """Raise :class:`ConfigError` unless a file can be written at ``path``: not a folder,
    in a folder that exists or can be made (:func:`check_out_dir`)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file name (e.g. {path / 'plot.png'})",
                          source=name)
    check_out_dir(path.parent, name)


def make_out_dir(path, name: str = "--out") -> Path:
    """Make the folder ``path`` (and its parents); :class:`ConfigError` when it cannot."""
    path = Path(path)
    check_out_dir(path, name)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot make the folder ({exc.strerror})",
                          source=name) from None
    return path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cell(value) -> str:
    if isinstance(value, int | np.integer):
        return str(int(value))
    return repr(float(value))


def metrics_csv(rows: list[dict]) -> str:
    """The metrics rows as CSV text (header, then one line per evaluation)."""
    lines = [",".join(METRICS)]
    lines += [",".join(_cell(row[name]) for name in METRICS) for row in rows]
    return "\n".join(lines) + "\n"


def _versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def summary(scenario, learner, result, t_mix, xi, wall_time, error,
            corollary1: dict | None = None) -> dict:
    """The summary of a run (the content of ``summary.json``).

    ``bound`` is the bound of seed 002 that applies to the run, or the reason none does
    (:func:`mixsim.bounds.run_bound`); ``corollary1`` the step size chosen for
    ``optimizer.method.lr: corollary1`` with its inputs.
    """
    last = result.rows[-1] if result.rows else {}
    return {
        "name": scenario.name,
        "complete": error is None,
        "error": None if error is None else str(error),
        "stopped_at_step": None if error is None else error.step,
        "seed": scenario.seed,
        "steps": learner.sim.step,
        "protocol": learner.protocol.name,
        "workers": scenario.workers,
        "dimension": learner.d,
        "t_mix": t_mix,
        "xi": xi,
        "theory_t_mix": learner.protocol.theory_t_mix(scenario.workers),
        "final": {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                  for k, v in last.items()},
        "bound": bounds.run_bound(scenario, learner, result.rows, t_mix, xi),
        "corollary1": corollary1,
        "wall_time_seconds": round(wall_time, 3),
        "versions": _versions(),
        "scenario": scenario.model_dump(mode="json"),
        "scenario_sha256": scenario_fingerprint(scenario),
    }


def scenario_fingerprint(scenario) -> str:
    """SHA-256 of a resolved scenario's canonical JSON, its output folder left out: what a
    folder's ``summary.json`` records, so that a run knows whose outputs a folder holds."""
    config = scenario.model_dump(mode="json")
    config["outputs"].pop("dir", None)
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _check_owner(out_dir: Path, fingerprint: str) -> None:
    try:
        held = json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return
    theirs = held.get("scenario_sha256") if isinstance(held, dict) else None
    if theirs is not None and theirs != fingerprint:
        raise ConfigError(
            f"holds the outputs of another scenario ({held.get('name')!r} with other "
            "settings); choose another output folder, or replace them with --overwrite "
            "(overwrite=True in Python)", source=str(out_dir))


class Writer:
    """Writes the outputs of one run into a folder.

    Raises
    ------
    ConfigError
        The folder holds the outputs of a different scenario (its ``summary.json`` says
        so) and ``overwrite`` is false: nothing is written.
    """

    def __init__(self, out_dir: Path, scenario, *, overwrite: bool = False):
        fingerprint = scenario_fingerprint(scenario)
        if not overwrite:
            _check_owner(Path(out_dir), fingerprint)
        self.out_dir = make_out_dir(out_dir)
        _atomic_write(self.out_dir / "summary.json", json.dumps(
            {"name": scenario.name, "complete": False, "status": "running",
             "scenario_sha256": fingerprint}, indent=2) + "\n")
        stale = self.out_dir / "metrics.csv"
        if stale.exists():
            stale.unlink()

    def write_metrics(self, rows: list[dict]) -> None:
        _atomic_write(self.out_dir / "metrics.csv", metrics_csv(rows))

    def interrupted(self, step: int) -> None:
        """Mark the run as interrupted at ``step`` (``metrics.csv`` holds what was
        recorded)."""
        held = json.loads((self.out_dir / "summary.json").read_text())
        held.update(status="interrupted", stopped_at_step=int(step))
        _atomic_write(self.out_dir / "summary.json", json.dumps(held, indent=2) + "\n")

    def finish(self, result, learner) -> None:
        self.write_metrics(result.rows)
        if result.scenario.outputs.plots and result.rows:
            plot_run(result, self.out_dir / "curves.png")
        _atomic_write(self.out_dir / "summary.json", json.dumps(
            strict_json(result.summary), indent=2, sort_keys=True, allow_nan=False) + "\n")


_THEOREMS = {"theorem1": "Theorem 1 (eq. 9)", "theorem2": "Theorem 2 (eq. 13)"}


def _plot_bound(ax, bound: dict) -> None:
    """The measured mean squared gradient norm against the bound that applies, or the
    reason no bound applies."""
    if bound.get("theorem") is None:
        import textwrap

        ax.axis("off")
        reason = bound.get("reason") or "not computed"
        ax.text(0.0, 0.9, "No bound of seed 002 applies:\n"
                + textwrap.fill(reason, 60), va="top", fontsize=9, transform=ax.transAxes)
        return
    ax.plot(bound["steps"], bound["measured"], marker=".",
            label="measured mean ||grad f||^2 (at evaluations)")
    pairs = [(t, b) for t, b in zip(bound["steps"], bound["bound"], strict=True)
             if b is not None and np.isfinite(b)]
    name = _THEOREMS[bound["theorem"]]
    if pairs:
        ax.plot(*zip(*pairs, strict=True), linestyle="--",
                label=f"{name}, measured t_mix, xi; estimated constants")
    else:
        ax.set_title(f"{name} says nothing at this step size "
                     "(16 (1+xi)^2 xi^2 t_mix^2 L^2 a^2 >= 1)", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("steps T")
    ax.set_ylabel("(1/T) sum ||grad f(x_t)||^2")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)


def _bound_inputs(ax, bound: dict) -> None:
    """The values the bound was computed from, estimates marked as such."""
    ax.axis("off")
    if bound.get("theorem") is None:
        return
    estimated = {"sigma2", "G_inf"}
    names = ["t_mix", "xi", "L", "sigma2", "consensus_lr"]
    if bound["theorem"] == "theorem2":
        names += ["G_inf", "c", "p", "b1", "b2"]
    lines = [f"{name} = {bound[name]:.4g}" + (" (estimate)" if name in estimated else "")
             for name in names]
    lines += [f"{k} = {v:.3g}" for k, v in bound.get("constants", {}).items()]
    ax.text(0.0, 0.95, "Inputs of the bound (summary.json: bound.notes):\n" + "\n".join(lines),
            va="top", fontsize=8, family="monospace", transform=ax.transAxes)


def plot_run(result, path: Path) -> Path:
    """Loss against steps, bits and simulated time; stationary distance against steps; the
    bound of seed 002 that applies, or the reason none does."""
    # A Figure without pyplot: no global backend switch, nothing left open.
    from matplotlib.figure import Figure

    table = result.table
    bound = result.summary.get("bound") or {}
    fig = Figure(figsize=(10, 10), dpi=110)
    axes = fig.subplots(3, 2)
    bits = table["bits_up"] + table["bits_down"]
    panels = [
        (axes[0, 0], table["step"], table["loss"], "steps", "training loss"),
        (axes[0, 1], bits, table["loss"], "bits sent (up + down)", "training loss"),
        (axes[1, 0], table["time"], table["loss"], "simulated time", "training loss"),
        (axes[1, 1], table["step"], table["stationary_distance"], "steps",
         "stationary distance (1/n) sum ||x_i - x_bar||^2"),
    ]
    for ax, x, y, xlabel, ylabel in panels:
        ax.plot(x, y, marker=".")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if np.all(np.asarray(y)[np.isfinite(y)] > 0):
            ax.set_yscale("log")
    _plot_bound(axes[2, 0], bound)
    _bound_inputs(axes[2, 1], bound)
    s = result.summary
    fig.suptitle(f"{s['name']}: {s['protocol']}, n = {s['workers']}, measured t_mix = "
                 f"{s['t_mix']}, xi = {s['xi'] if s['xi'] is None else round(s['xi'], 3)}")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path
