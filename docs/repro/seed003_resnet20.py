"""Seed 003 §7.2 with ResNet-20, at reduced scale (digits as 1 x 8 x 8 images).

The paper compares CD-Adam with EF21 (extended to both directions) and 1-bit Adam on
ResNets on CIFAR. No CIFAR-10 is available offline here: this trains the built-in
``resnet20`` on scikit-learn's digits read as 1 x 8 x 8 images (float32), 8 workers on a
synchronous parameter server (``sync-ps``), minibatch 16 per worker, ``ROUNDS`` rounds:
CD-Adam (scaled sign both ways, AMSGrad lr 0.001), two-way EF21 (top-k with k = 0.016 d
both ways, SGD lr 0.1, the paper's choices), 1-bit Adam as Tang et al. run it (lr 0.001,
13% of the rounds of warm-up, as §7.2's 13 of 100 epochs) and uncompressed AMSGrad
(lr 0.001) as the reference. One learning rate each (no grid: minutes on 2 shared cores).

Writes docs/repro/seed003_resnet20.json and docs/img/seed003_resnet20.png.

Run: python docs/repro/seed003_resnet20.py [--rounds R] [--replot]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mixsim

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent.parent / "scenarios" / "seed003_nonconvex_logistic.yaml"
WORKERS = 8
ROUNDS = 100
D = 269_434  # resnet20 parameters on 1 x 8 x 8 images, 10 classes (printed by the run)


def methods(rounds: int) -> dict:
    k = round(0.016 * D)
    return {
        "CD-Adam (scaled sign)": {"optimizer.placement": "cd-adam",
                                  "optimizer.compressor": {"name": "scaled-sign"},
                                  "optimizer.method": {"name": "amsgrad", "lr": 0.001}},
        f"EF21 two-way (top-{k}, SGD 0.1)": {
            "optimizer.placement": "two-way", "optimizer.compressor": {"name": "top-k", "k": k},
            "optimizer.method": {"name": "sgd", "lr": 0.1}},
        "1-bit Adam (per worker)": {
            "optimizer.placement": "onebit-adam", "optimizer.compressor": {"name": "none"},
            "optimizer.method": {"name": "onebit-adam", "lr": 0.001,
                                 "warmup": int(0.13 * rounds)}},
        "uncompressed AMSGrad": {"optimizer.placement": "server",
                                 "optimizer.compressor": {"name": "none"},
                                 "optimizer.method": {"name": "amsgrad", "lr": 0.001}},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the PNG from seed003_resnet20.json")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads((HERE / "seed003_resnet20.json").read_text()))
        return
    base = {"workers": WORKERS,
            "problem": {"name": "torch", "params": {"model": "resnet20"}},
            "data": {"name": "digits", "dtype": "float32", "batch": 16,
                     "partition": {"method": "iid"}},
            "steps": args.rounds * WORKERS, "eval_every": max(1, args.rounds // 10) * WORKERS,
            "outputs.dir": None, "outputs.measure_mixing": False}
    results = {}
    for label, change in methods(args.rounds).items():
        start = time.perf_counter()
        result = mixsim.run(SCENARIO, overrides={**base, **change})
        table = result.table
        bits = table["bits_up"] + table["bits_down"]
        results[label] = {
            "overrides": change, "dimension": result.summary["dimension"],
            "round": (table["step"] / WORKERS).tolist(), "loss": table["loss"].tolist(),
            "grad_norm": table["grad_norm"].tolist(),
            "test_accuracy": table["test_accuracy"].tolist(), "bits": bits.tolist(),
            "wall_seconds": round(time.perf_counter() - start, 1)}
        print(f"{label:>34}: d {result.summary['dimension']}, loss {table['loss'][-1]:.4f}, "
              f"test accuracy {table['test_accuracy'][-1]:.3f}, bits {bits[-1]:.3g}, "
              f"{results[label]['wall_seconds']} s", flush=True)
    budget = results["CD-Adam (scaled sign)"]["bits"][-1]
    for label, r in results.items():
        within = [i for i, b in enumerate(r["bits"]) if b <= budget]
        r["loss_at_cd_adam_budget"] = r["loss"][within[-1]]
        r["round_at_cd_adam_budget"] = r["round"][within[-1]]
        print(f"{label:>34}: at CD-Adam's {budget:.3g} bits: round "
              f"{r['round_at_cd_adam_budget']:.0f}, loss {r['loss_at_cd_adam_budget']:.4f}")
    (HERE / "seed003_resnet20.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results)


def plot(results) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), dpi=90)
    axes = fig.subplots(1, 2)
    for label, r in results.items():
        axes[0].plot(r["round"], r["loss"], label=label)
        # From the first evaluation on: the start (0 bits) has no place on a log axis.
        axes[1].plot(r["bits"][1:], r["loss"][1:], marker="o", label=label)
    axes[0].set_xlabel("rounds")
    axes[1].set_xlabel("bits (up + down, all workers)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("seed 003 §7.2 on ResNet-20 (digits as 1 x 8 x 8 images, 8 workers)")
    fig.tight_layout()
    fig.savefig(HERE.parent / "img" / "seed003_resnet20.png")


if __name__ == "__main__":
    main()
