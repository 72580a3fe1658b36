"""Seed 002 §5.1: measured gossip mixing time against the log(n)/lambda bound.

For synchronous gossip with a fixed doubly stochastic W (one gossip round per n steps),
MixML's t_mix is n k with k the smallest power such that ||W^k - 11^T/n|| <= 1/2, and
Markov-chain theory bounds k by about log(n)/lambda, lambda the spectral gap. For rings,
2-D tori, static exponential graphs and random 3-regular graphs (Metropolis weights;
uniform weights for the exponential graph) this script measures t_mix on a simulated trace
(method trace, n <= 64) and with the spectral method (all n), and writes a table and a plot.

Run: python docs/repro/seed002_gossip_bound.py   (writes docs/img/seed002_gossip_bound.png
and docs/repro/seed002_gossip_bound.json)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from mixsim import load_protocol, mixing_time
from mixsim.blocks import BLOCKS, BlockContext
from mixsim.engine import build_layout
from mixsim.spectral import spectral_gap

HERE = Path(__file__).resolve().parent
SIZES = [16, 64, 256, 1024]
TRACE_UP_TO = 64


def topologies(n: int) -> dict[str, tuple[str, dict]]:
    side = int(math.isqrt(n))
    return {
        "ring": ("gossip", {"graph": "cycle_graph", "weights": "metropolis"}),
        "torus": ("gossip", {"graph": "grid_2d_graph", "graph_args": {"m": side, "n": side,
                                                                      "periodic": True},
                             "weights": "metropolis"}),
        "exponential": ("exponential-graph", {}),
        "random 3-regular": ("gossip", {"graph": "random_regular_graph",
                                        "graph_args": {"d": 3}, "weights": "metropolis"}),
    }


def gap(protocol, n: int) -> float:
    import numpy as np

    rule = protocol.spec.communication[0]
    args = {a: protocol.evaluate(v, n) for a, v in rule.args.items()}
    context = BlockContext(build_layout(protocol, n), np.random.default_rng(0), protocol.source)
    return spectral_gap(BLOCKS[rule.op](context, **args).matrix())


def main() -> None:
    rows = []
    for n in SIZES:
        for name, (base, params) in topologies(n).items():
            protocol = load_protocol(base, params)
            lam = gap(protocol, n)
            spectral = mixing_time(protocol, n, method="spectral")[0].t_mix
            traced = (mixing_time(protocol, n, method="trace")[0].t_mix
                      if n <= TRACE_UP_TO else None)
            bound = n * math.log(n) / lam
            rows.append({"topology": name, "n": n, "spectral_gap": lam,
                         "t_mix_trace": traced, "t_mix_spectral": spectral,
                         "bound_n_log_n_over_gap": bound, "ratio": spectral / bound})
            print(f"{name:>17} n={n:>5}  gap={lam:.3e}  t_mix trace={traced}  "
                  f"spectral={spectral}  n log(n)/gap={bound:.4g}  ratio={spectral / bound:.3f}")
    (HERE / "seed002_gossip_bound.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot(rows)


def plot(rows) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=110)
    ax = fig.subplots()
    for name in dict.fromkeys(r["topology"] for r in rows):
        mine = [r for r in rows if r["topology"] == name]
        line = ax.plot([r["n"] for r in mine], [r["t_mix_spectral"] for r in mine],
                       marker="o", label=f"{name}: measured t_mix")[0]
        ax.plot([r["n"] for r in mine], [r["bound_n_log_n_over_gap"] for r in mine],
                linestyle=":", color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("workers n")
    ax.set_ylabel("steps")
    ax.set_title("Gossip t_mix (solid) against n log(n)/lambda (dotted)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE.parent / "img" / "seed002_gossip_bound.png")


if __name__ == "__main__":
    main()
