"""Outputs of a learning run: metrics CSV, summary JSON, plots.

Every file is written under a temporary name and renamed, so a file that exists is whole.
The metrics CSV depends only on the scenario and its seed (never on the wall clock), so
the same seed gives the same bytes. ``summary.json`` says ``"complete": false`` until the
run has finished, and stays so when it stopped early.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from mixsim.errors import ConfigError

__all__ = ["Writer", "summary", "format_number", "strict_json", "check_out_dir"]

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
    from mixsim.learning import METRICS

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


def theorem1_bound(rows: list[dict], *, L: float, sigma2: float, lr: float, t_mix: int,
                   xi: float) -> list[float | None]:
    """Seed 002 Theorem 1 (eq. 9) for SGD with a constant step ``lr``, at each row's step T.

    .. math::

        \\frac{1}{T}\\sum_{t<T} \\|\\nabla f(x_t)\\|^2 \\le
        \\frac{2 (f(x_0) - f(x_T)) + \\sigma^2 L T \\alpha^2
              + 4 (1+\\xi)^2 \\xi^2 t_{mix} \\sigma^2 L^2 (T+1) \\alpha^3}
             {T \\alpha (1 - 16 (1+\\xi)^2 \\xi^2 t_{mix}^2 L^2 \\alpha^2)}

    with ``f(x_0) - f(x_T)`` taken from the run (as the paper's Corollary 1 does). ``None``
    where the step size is too large for the bound to hold (non-positive denominator).
    """
    c = (1 + xi) ** 2 * xi**2
    denominator_factor = 1 - 16 * c * t_mix**2 * L**2 * lr**2
    f0 = rows[0]["loss"]
    bounds = []
    for row in rows:
        T = row["step"]
        if T == 0 or denominator_factor <= 0:
            bounds.append(None)
            continue
        gap = max(f0 - row["loss"], 0.0)
        numerator = (2 * gap + sigma2 * L * T * lr**2
                     + 4 * c * t_mix * sigma2 * L**2 * (T + 1) * lr**3)
        bounds.append(numerator / (T * lr * denominator_factor))
    return bounds


def running_mean_squared_gradient(rows: list[dict]) -> list[float]:
    """Mean of ``||grad f||^2`` over the evaluations up to each row (the bound's left side,
    sampled at the evaluation points)."""
    squares = np.cumsum([row["grad_norm"] ** 2 for row in rows])
    return (squares / np.arange(1, len(rows) + 1)).tolist()


def _bound(scenario, learner, result, t_mix, xi) -> dict | None:
    """Theorem 1 for this run, where it applies (worker-side SGD, no compression, known L).

    The theorem is about the sequential SGD the run is a parallel version of: the consensus
    model ``M_inf X``. An update ``-lr g`` added to a slot moves the consensus by
    ``-w lr g``, with ``w`` the weight ``M_inf`` gives that slot (``1/n`` when the consensus
    is the mean of n worker copies, 1 for a server), so the step size of that SGD is
    ``w lr``. ``sigma^2`` bounds the noise of one step's gradient around the full gradient:
    the worst worker's minibatch variance plus its shard's gradient bias, at the initial
    point.
    """
    method = scenario.optimizer.method
    if (method.name != "sgd" or scenario.optimizer.compressor.name != "none"
            or scenario.optimizer.placement != "worker"
            or t_mix is None or xi is None or not result.rows):
        return None
    ds = learner.dataset
    L = learner.problem.smoothness(ds.A_train)
    if L is None:
        return None
    consensus = learner.sim.trace.consensus
    layout = learner.layout
    average = consensus.average
    target_rows = learner.sim._target_rows
    if target_rows is None:
        return None
    groups = {layout.group_of(int(row)) for row in target_rows}
    if not groups <= {average, consensus.absorb}:
        return None
    lr = method.lr / layout.count(average)
    x0 = learner.sim.trace.initial_state[learner.consensus_row]
    full = learner.problem.grad(x0, ds.A_train, ds.y_train)
    sigma2 = max(
        learner.problem.gradient_variance(x0, ds.A_train[shard], ds.y_train[shard],
                                          learner.batch)
        + float(np.sum((learner.problem.grad(x0, ds.A_train[shard], ds.y_train[shard])
                        - full) ** 2))
        for shard in learner.shards)
    return {
        "L": L, "sigma2": sigma2, "lr": method.lr, "consensus_lr": lr, "t_mix": t_mix,
        "xi": xi, "steps": [row["step"] for row in result.rows],
        "bound": theorem1_bound(result.rows, L=L, sigma2=sigma2, lr=lr, t_mix=t_mix, xi=xi),
        "measured": running_mean_squared_gradient(result.rows),
    }


def summary(scenario, learner, result, t_mix, xi, wall_time, error) -> dict:
    """The summary of a run (the content of ``summary.json``)."""
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
        "theorem1": _bound(scenario, learner, result, t_mix, xi),
        "wall_time_seconds": round(wall_time, 3),
        "versions": _versions(),
        "scenario": scenario.model_dump(mode="json"),
    }


class Writer:
    """Writes the outputs of one run into a folder."""

    def __init__(self, out_dir: Path, scenario):
        self.out_dir = make_out_dir(out_dir)
        _atomic_write(self.out_dir / "summary.json", json.dumps(
            {"name": scenario.name, "complete": False, "status": "running"}, indent=2) + "\n")
        stale = self.out_dir / "metrics.csv"
        if stale.exists():
            stale.unlink()

    def write_metrics(self, rows: list[dict]) -> None:
        _atomic_write(self.out_dir / "metrics.csv", metrics_csv(rows))

    def finish(self, result, learner) -> None:
        self.write_metrics(result.rows)
        if result.scenario.outputs.plots and result.rows:
            plot_run(result, self.out_dir / "curves.png")
        _atomic_write(self.out_dir / "summary.json", json.dumps(
            strict_json(result.summary), indent=2, sort_keys=True, allow_nan=False) + "\n")


def plot_run(result, path: Path) -> Path:
    """Loss against steps, bits and simulated time; stationary distance against steps."""
    # A Figure without pyplot: no global backend switch, nothing left open.
    from matplotlib.figure import Figure

    table = result.table
    bound = result.summary.get("theorem1")
    fig = Figure(figsize=(10, 10 if bound else 7), dpi=110)
    axes = fig.subplots(3 if bound else 2, 2)
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
    if bound:
        ax = axes[2, 0]
        ax.plot(bound["steps"], bound["measured"], marker=".",
                label="measured mean ||grad f||^2 (at evaluations)")
        pairs = [(t, b) for t, b in zip(bound["steps"], bound["bound"], strict=True)
                 if b is not None]
        if pairs:
            ax.plot(*zip(*pairs, strict=True), linestyle="--",
                    label="Theorem 1 bound (measured t_mix, xi)")
        ax.set_yscale("log")
        ax.set_xlabel("steps T")
        ax.set_ylabel("(1/T) sum ||grad f(x_t)||^2")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
        axes[2, 1].axis("off")
    s = result.summary
    fig.suptitle(f"{s['name']}: {s['protocol']}, n = {s['workers']}, measured t_mix = "
                 f"{s['t_mix']}, xi = {s['xi'] if s['xi'] is None else round(s['xi'], 3)}")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path
