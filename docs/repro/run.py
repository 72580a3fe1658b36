"""Reproduce the learning experiments of seeds 000, 001 and 003 with mixsim.

    python docs/repro/run.py seed000 [--seeds 3]
    python docs/repro/run.py seed001 [--seeds 3]
    python docs/repro/run.py seed003

Runs the grids through the public API (``mixsim.run`` on the scenario files in
``scenarios/`` with overrides), writes the numbers to ``docs/repro/results/PAPER.json`` and
the figures to ``docs/img/PAPER_*.png``. Nothing is tuned except where the paper tunes it
(seed 003's step-size grid, shown in full; seed 000's xi in {1/2, 1/4}, best reported).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import mixsim  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCEN = ROOT / "scenarios"
IMG = ROOT / "docs" / "img"
RESULTS = Path(__file__).resolve().parent / "results"
QUIET = {"outputs.dir": None, "outputs.plots": False, "outputs.measure_mixing": False}
DPI = 70


def run(scenario, overrides, seed=None):
    """One run; returns its table (lists) and wall time."""
    started = time.perf_counter()
    result = mixsim.run(scenario, overrides={**QUIET, **overrides}, seed=seed)
    wall = time.perf_counter() - started
    table = {k: [float(v) for v in col] for k, col in result.table.items()}
    return table, wall


def save(paper, data):
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{paper}.json"
    path.write_text(json.dumps(data, indent=1))
    print("wrote", path)


def savefig(fig, name):
    IMG.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(IMG / name, dpi=DPI)
    plt.close(fig)
    print("wrote", IMG / name)


# ---------------------------------------------------------------------------------------
# Seed 000: uniform / non-adaptive (Bernoulli) / adaptive sparsification with AMSGrad
# ---------------------------------------------------------------------------------------
SEED000_WORKLOADS = {
    # name: (scenario file, overrides, caption)
    "logistic": ("seed000_logistic.yaml", {}, "binary logistic regression, breast-cancer"),
    "softmax": ("seed000_logistic.yaml",
                {"problem.name": "softmax", "data.name": "digits", "epochs": 50,
                 "eval_every": 12},
                "multinomial logistic (softmax) regression, digits"),
    "mlp": ("seed000_mlp.yaml", {}, "MLP 128-64, digits"),
}
SPARSITIES = (0.01, 0.05, 0.1)
SCHEMES = {  # label: compressor section
    "uniform": {"name": "uniform"},
    "non-adaptive": {"name": "bernoulli"},
    "adaptive xi=1/2": {"name": "adaptive", "xi": 0.5},
    "adaptive xi=1/4": {"name": "adaptive", "xi": 0.25},
}


def seed000(seeds):
    out = {"workloads": {}, "delay": {}}
    for wname, (file, base, caption) in SEED000_WORKLOADS.items():
        res = {"caption": caption, "file": f"scenarios/{file}", "overrides": base,
               "seeds": list(range(seeds)), "grid": {}}
        vanilla = [run(SCEN / file, {**base, "optimizer.compressor": {"name": "none"}}, s)
                   for s in range(seeds)]
        res["vanilla"] = _mean_curves(vanilla)
        for s in SPARSITIES:
            for label, comp in SCHEMES.items():
                runs = [run(SCEN / file, {**base, "optimizer.compressor": {**comp, "density": s}},
                            seed) for seed in range(seeds)]
                res["grid"][f"{label} s={s}"] = _mean_curves(runs)
                print(wname, s, label, res["grid"][f"{label} s={s}"]["final_loss"], flush=True)
            a = [res["grid"][f"adaptive xi={x} s={s}"] for x in ("1/2", "1/4")]
            best = min(a, key=lambda r: r["final_loss"])
            res["grid"][f"adaptive (best xi) s={s}"] = best
        out["workloads"][wname] = res
        _plot000(wname, res)
    out["delay"] = _delay000(seeds)
    save("seed000", out)


def _mean_curves(runs):
    tables = [t for t, _ in runs]
    walls = [w for _, w in runs]
    keys = ("epoch", "step", "loss", "test_accuracy", "bits_up")
    mean = {k: np.mean([t[k] for t in tables], axis=0).tolist() for k in keys}
    finals = [t["loss"][-1] for t in tables]
    return {**mean, "final_loss": float(np.mean(finals)), "final_loss_runs": finals,
            "final_loss_sem": float(np.std(finals, ddof=1) / np.sqrt(len(finals)))
            if len(finals) > 1 else None,
            "final_test_accuracy": float(np.mean([t["test_accuracy"][-1] for t in tables])),
            "wall_s": float(np.mean(walls))}


def _plot000(wname, res):
    colors = {"uniform": "tab:gray", "non-adaptive": "tab:orange",
              "adaptive (best xi)": "tab:blue"}
    metrics = [("loss", "training loss")]
    if wname == "mlp":
        metrics.append(("test_accuracy", "test accuracy"))
    for metric, ylabel in metrics:
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), sharey=True)
        for ax, s in zip(axes, SPARSITIES, strict=True):
            v = res["vanilla"]
            ax.plot(v["epoch"], v[metric], color="k", ls=":", label="AMSGrad (dense)")
            for label, color in colors.items():
                r = res["grid"][f"{label} s={s}"]
                ax.plot(r["epoch"], r[metric], color=color, label=label)
            ax.set_title(f"s = {s}")
            ax.set_xlabel("epoch")
            if metric == "loss":
                ax.set_yscale("log")
        axes[0].set_ylabel(ylabel)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"seed 000: AMSGrad + sparsification, {res['caption']}", fontsize=9)
        suffix = "" if metric == "loss" else "_accuracy"
        savefig(fig, f"seed000_{wname}{suffix}.png")


DELAYS = ((0, "constant"), (4, "constant"), (16, "constant"), (64, "constant"),
          (16, "geometric"))


def _delay000(seeds):
    out = {"file": "scenarios/seed000_delay.yaml", "grid": {}}
    for s in (0.01, 0.1):
        for delay, dist in DELAYS:
            runs = [run(SCEN / "seed000_delay.yaml",
                        {"protocol.params": {"delay": delay, "distribution": dist},
                         "optimizer.compressor.density": s}, seed) for seed in range(seeds)]
            key = f"s={s} delay={delay} {dist}"
            out["grid"][key] = _mean_curves(runs)
            print(key, out["grid"][key]["final_loss"], flush=True)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, s in zip(axes, (0.01, 0.1), strict=True):
        for delay, dist in DELAYS:
            r = out["grid"][f"s={s} delay={delay} {dist}"]
            ax.plot(r["epoch"], r["loss"], label=f"{dist} {delay}")
        ax.set_yscale("log")
        ax.set_title(f"adaptive sparsification s = {s}")
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("training loss")
    axes[0].legend(fontsize=7, title="delay (steps)", title_fontsize=7)
    fig.suptitle("seed 000 §5: delayed asynchronous server, MLP on digits, 4 workers",
                 fontsize=9)
    savefig(fig, "seed000_delay.png")
    return out


# ---------------------------------------------------------------------------------------
# Seed 001: SPARS-AMS, top-k with and without error feedback vs full AMSGrad, 20 workers
# ---------------------------------------------------------------------------------------
SEED001_VARIANTS = {
    "full AMSGrad": {"optimizer.compressor": {"name": "none"}},
    "top-k + EF": {"optimizer.memory": "error-feedback"},
    "top-k, no EF": {"optimizer.memory": "none"},
}


def seed001(seeds):
    file = SCEN / "seed001_topk_ef.yaml"
    out = {"file": "scenarios/seed001_topk_ef.yaml", "seeds": list(range(seeds)), "grid": {}}
    for density in (0.001, 0.01):
        for label, change in SEED001_VARIANTS.items():
            if label == "full AMSGrad" and density != 0.001:
                out["grid"][f"{label} density={density}"] = out["grid"][
                    f"{label} density=0.001"]
                continue
            runs = [run(file, {"optimizer.compressor.density": density, **change}
                        if "compressor" not in str(change) else change, seed)
                    for seed in range(seeds)]
            key = f"{label} density={density}"
            out["grid"][key] = _mean_curves(runs)
            print(key, out["grid"][key]["final_loss"],
                  out["grid"][key]["final_test_accuracy"], flush=True)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    styles = {0.001: "-", 0.01: "--"}
    colors = {"full AMSGrad": "k", "top-k + EF": "tab:blue", "top-k, no EF": "tab:red"}
    for density in (0.001, 0.01):
        for label in SEED001_VARIANTS:
            if label == "full AMSGrad" and density != 0.001:
                continue
            r = out["grid"][f"{label} density={density}"]
            name = label if label == "full AMSGrad" else f"{label}, k = {density:g} d"
            rounds = np.array(r["step"]) / 20
            axes[0].plot(rounds, r["test_accuracy"], styles[density], color=colors[label],
                         label=name)
            axes[1].plot(rounds, r["loss"], styles[density], color=colors[label])
            axes[2].plot(r["bits_up"], r["loss"], styles[density], color=colors[label])
    axes[0].set_ylabel("test accuracy")
    axes[0].set_ylim(0.5, 1.0)
    axes[1].set_ylabel("training loss")
    axes[2].set_ylabel("training loss")
    for ax in axes[1:]:
        ax.set_yscale("log")
    axes[2].set_xscale("log")
    axes[0].set_xlabel("round (20 worker steps)")
    axes[1].set_xlabel("round (20 worker steps)")
    axes[2].set_xlabel("bits sent up (all workers)")
    axes[0].legend(fontsize=7)
    fig.suptitle("seed 001 Fig 1: SPARS-AMS, 20 workers, MLP 128-64 on digits", fontsize=9)
    savefig(fig, "seed001_topk_ef.png")
    save("seed001", out)


# ---------------------------------------------------------------------------------------
# Seed 003: CD-Adam vs error feedback, naive compression, uncompressed AMSGrad, EF21, 1-bit Adam
# ---------------------------------------------------------------------------------------
LRS = (0.001, 0.003, 0.005, 0.007, 0.009)
SEED003_DATA = {
    "breast-cancer": ({}, 30),
    "synthetic-d300": ({"data": {"name": "synthetic-classification", "samples": 2000,
                                 "features": 300, "classes": 2, "test_fraction": 0.2,
                                 "partition": {"method": "iid"}, "batch": None}}, 300),
}
SEED003_COMPRESSORS = {"scaled-sign": {"name": "scaled-sign"}, "top-1": {"name": "top-k", "k": 1}}
SEED003_METHODS = {
    "CD-Adam": {"optimizer.placement": "cd-adam"},
    "error feedback": {"optimizer.placement": "server", "optimizer.memory": "error-feedback"},
    "naive": {"optimizer.placement": "server", "optimizer.memory": "none"},
}
ROUNDS = 500
WORKERS = 20


def seed003(_seeds):
    file = SCEN / "seed003_nonconvex_logistic.yaml"
    out = {"file": "scenarios/seed003_nonconvex_logistic.yaml", "rounds": ROUNDS,
           "lr_grid": list(LRS), "data": {}}
    for dname, (data_change, d) in SEED003_DATA.items():
        res = {"d": d, "overrides": data_change, "runs": {}, "best": {}}
        warmup = int(0.13 * ROUNDS)  # 13 of 100 epochs in the paper (§7.2)
        k21 = max(1, round(0.016 * d))
        families = {}
        for cname, comp in SEED003_COMPRESSORS.items():
            for mname, change in SEED003_METHODS.items():
                families[f"{mname} [{cname}]"] = (
                    {**change, "optimizer.compressor": comp}, LRS)
        families["uncompressed AMSGrad"] = (
            {"optimizer.placement": "server", "optimizer.compressor": {"name": "none"}}, LRS)
        # 1-bit Adam as Tang et al. run it: each worker compresses its own momentum.
        families["1-bit Adam"] = (
            {"optimizer.placement": "onebit-adam", "optimizer.compressor": {"name": "none"},
             "optimizer.method": {"name": "onebit-adam", "warmup": warmup}}, LRS)
        # EF21 extended to both directions, as seed 003 §7.2 compares it.
        families[f"EF21 (SGD lr 0.1, top-{k21})"] = (
            {"optimizer.placement": "two-way",
             "optimizer.compressor": {"name": "top-k", "k": k21},
             "optimizer.method": {"name": "sgd", "lr": 0.1}}, (None,))
        for family, (change, lrs) in families.items():
            for lr in lrs:
                ov = {**data_change, **change, "steps": ROUNDS * WORKERS}
                if lr is not None:
                    ov["optimizer.method.lr"] = lr
                table, wall = run(file, ov)
                bits = np.array(table["bits_up"]) + np.array(table["bits_down"])
                key = f"{family} lr={lr}"
                res["runs"][key] = {"family": family, "lr": lr, "round": (
                    np.array(table["step"]) / WORKERS).tolist(),
                    "grad_norm": table["grad_norm"], "loss": table["loss"],
                    "bits": bits.tolist(), "final_grad_norm": table["grad_norm"][-1],
                    "min_grad_norm": min(table["grad_norm"]), "wall_s": wall}
                print(dname, key, table["grad_norm"][-1], f"{wall:.1f}s", flush=True)
            best = min((k for k in res["runs"] if res["runs"][k]["family"] == family),
                       key=lambda k: res["runs"][k]["final_grad_norm"])
            res["best"][family] = best
        out["data"][dname] = res
        _plot003(dname, res)
    save("seed003", out)


def _plot003(dname, res):
    colors = {"CD-Adam": "tab:blue", "error feedback": "tab:orange", "naive": "tab:red",
              "uncompressed AMSGrad": "k", "1-bit Adam": "tab:purple", "EF21": "tab:green"}

    def color(family):
        return next(c for name, c in colors.items() if family.startswith(name))

    for cname in SEED003_COMPRESSORS:
        fams = [f for f in res["best"] if f.endswith(f"[{cname}]")]
        fams += [f for f in res["best"] if "[" not in f]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        for fam in fams:
            r = res["runs"][res["best"][fam]]
            label = f"{fam.replace(f' [{cname}]', '')} (lr {r['lr']})"
            axes[0].plot(r["bits"], r["grad_norm"], color=color(fam), label=label)
            axes[1].plot(r["round"], r["grad_norm"], color=color(fam))
        for ax in axes:
            ax.set_yscale("log")
            ax.set_ylabel("gradient norm")
        axes[0].set_xscale("log")
        axes[0].set_xlabel("bits (up + down, all workers)")
        axes[1].set_xlabel("iteration (round)")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"seed 003 {'Fig 2' if cname == 'scaled-sign' else 'Fig 4'}: "
                     f"nonconvex logistic, {dname} (d = {res['d']}), 20 workers, {cname}; "
                     "best lr per method", fontsize=9)
        savefig(fig, f"seed003_{dname}_{cname}.png")
    # The whole grid: final gradient norm against lr, per method.
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for fam in res["best"]:
        pts = [(r["lr"], r["final_grad_norm"]) for r in res["runs"].values()
               if r["family"] == fam and r["lr"] is not None]
        if pts:
            ls = "--" if "top-1" in fam else "-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker="o",
                    color=color(fam), label=fam)
    ax.set_yscale("log")
    ax.set_xlabel("step size")
    ax.set_ylabel(f"gradient norm after {ROUNDS} rounds")
    ax.legend(fontsize=6)
    ax.set_title(f"seed 003 step-size grid, {dname}", fontsize=9)
    savefig(fig, f"seed003_{dname}_grid.png")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paper", choices=["seed000", "seed001", "seed003"])
    parser.add_argument("--seeds", type=int, default=3, help="seeds averaged (000, 001)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    {"seed000": seed000, "seed001": seed001, "seed003": seed003}[args.paper](args.seeds)
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
