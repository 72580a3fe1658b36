"""Plots of mixing times (PNG files written with matplotlib)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_mixing_times"]


def plot_mixing_times(results: dict, path, *, title: str | None = None) -> Path:
    """Plot t_mix against the number of workers, one line per protocol.

    Parameters
    ----------
    results : dict of str to list of MixingTime
        Results of :func:`mixsim.mixing_time` by protocol name.
    path : str or Path
        PNG file to write (written to a temporary name, then renamed).
    title : str, optional

    Returns
    -------
    Path
    """
    # A Figure without pyplot: no global backend switch, nothing left open.
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    ax = fig.subplots()
    for name, rows in results.items():
        workers = [r.workers for r in rows]
        t_mix = [r.t_mix for r in rows]
        line = ax.plot(workers, t_mix, marker="o", label=name)[0]
        lows = [r.ci95[0] if r.ci95 else r.t_mix for r in rows]
        highs = [r.ci95[1] if r.ci95 else r.t_mix for r in rows]
        if any(r.ci95 for r in rows):
            ax.fill_between(workers, lows, highs, color=line.get_color(), alpha=0.25)
        theory = [(r.workers, r.theory) for r in rows if r.theory is not None]
        if theory:
            ax.plot(*zip(*theory, strict=True), linestyle=":", color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("workers n")
    ax.set_ylabel("mixing time t_mix (steps)")
    ax.set_title(title or "Mixing time (dotted: theory; band: 95% CI of the mean)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)
    return path
