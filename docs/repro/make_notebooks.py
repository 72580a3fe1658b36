"""Build notebooks/02_seed000_sparsification.ipynb, 03_seed001_error_feedback.ipynb and
04_seed003_cd_adam.ipynb (unexecuted; ``--execute`` runs them at full size in place).

    python docs/repro/make_notebooks.py [--execute]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

SETUP = '''import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import mixsim

SMALL = os.environ.get("MIXSIM_NOTEBOOK_SMALL") == "1"
# The notebook runs from notebooks/; the scenario files are beside it.
SCENARIOS = Path("..") / "scenarios"
# Results stay in memory: nothing is written (outputs.dir = null).
QUIET = {"outputs.dir": None, "outputs.plots": False, "outputs.measure_mixing": False}'''


def nb02():
    cells = [
        new_markdown_cell(
            "# Seed 000: AMSGrad with gradient sparsification\n\n"
            "*Distributed Adaptive Optimization with Gradient Sparsification*, §6 (Fig 2-4) and "
            "§5 (delays). AMSGrad (lr 1e-3, b1 0.9, b2 0.999, batch 128) on gradients "
            "sparsified three ways at sparsity s = c/d: **uniform** (p_i = s), "
            "**non-adaptive** (Bernoulli, p_i = min(lambda |g_i|, 1), eq. 2) and the paper's "
            "**adaptive** probabilities (Thm 2 / Alg 2, xi in {1/2, 1/4}, best reported). The "
            "paper runs the sequential algorithm; mixsim runs one worker on a synchronous "
            "parameter server that applies AMSGrad (placement `server`). MNIST-type data are "
            "replaced by scikit-learn's digits (MLP) and breast-cancer (binary logistic).\n\n"
            "The paper claims: adaptive < non-adaptive < uniform in training loss, the gap "
            "largest at s = 0.01; convergence slower at higher sparsity. The figures are "
            "missing from our copy of the paper. `MIXSIM_NOTEBOOK_SMALL=1` runs a reduced "
            "version."),
        new_code_cell(SETUP + '''
MLP = SCENARIOS / "seed000_mlp.yaml"
LOGISTIC = SCENARIOS / "seed000_logistic.yaml"
SPARSITIES = [0.01] if SMALL else [0.01, 0.05, 0.1]
SEEDS = [0] if SMALL else [0, 1, 2]
SCHEMES = {"uniform": {"name": "uniform"}, "non-adaptive": {"name": "bernoulli"},
           "adaptive xi=1/2": {"name": "adaptive", "xi": 0.5},
           "adaptive xi=1/4": {"name": "adaptive", "xi": 0.25}}
print(MLP.read_text())'''),
        new_markdown_cell(
            "## The grid\n\nOne run per scheme, sparsity and seed; curves are averaged over "
            "the seeds. For the adaptive scheme the better xi (by final loss) is kept, as in "
            "the paper."),
        new_code_cell('''def grid(path, epochs, extra=None):
    curves = {}
    for s in SPARSITIES:
        for name, comp in SCHEMES.items():
            tables = [mixsim.run(path, seed=seed, overrides={
                **QUIET, **(extra or {}), "epochs": epochs,
                "optimizer.compressor": {**comp, "density": s}}).table for seed in SEEDS]
            curves[name, s] = {k: np.mean([t[k] for t in tables], axis=0)
                               for k in ("epoch", "loss", "test_accuracy")}
        best = min(("adaptive xi=1/2", "adaptive xi=1/4"),
                   key=lambda n: curves[n, s]["loss"][-1])
        curves["adaptive (best xi)", s] = curves[best, s]
    return curves


def plot(curves, metric="loss"):
    fig, axes = plt.subplots(1, len(SPARSITIES), figsize=(4 * len(SPARSITIES), 3.2),
                             squeeze=False)
    for ax, s in zip(axes[0], SPARSITIES):
        for name in ("uniform", "non-adaptive", "adaptive (best xi)"):
            ax.plot(curves[name, s]["epoch"], curves[name, s][metric], label=name)
        ax.set_title(f"s = {s}"); ax.set_xlabel("epoch"); ax.set_ylabel(metric)
        if metric == "loss":
            ax.set_yscale("log")
    axes[0][0].legend()
    fig.tight_layout()


def finals(curves):
    return {f"{name} s={s}": round(float(c["loss"][-1]), 4)
            for (name, s), c in curves.items()}


mlp = grid(MLP, epochs=5 if SMALL else 30)
plot(mlp)
plot(mlp, "test_accuracy")
finals(mlp)'''),
        new_code_cell('''# The ordering the paper claims, as mixsim measures it at full size.
if not SMALL:
    for s in SPARSITIES:
        assert (mlp["adaptive (best xi)", s]["loss"][-1] < mlp["non-adaptive", s]["loss"][-1]
                < mlp["uniform", s]["loss"][-1])'''),
        new_markdown_cell(
            "## Logistic regression (Fig 2)\n\nBinary logistic regression on breast-cancer "
            "(d = 30: at s = 0.01 one coordinate is sent every third step on average)."),
        new_code_cell('''logistic = grid(LOGISTIC, epochs=10 if SMALL else 100)
plot(logistic)
finals(logistic)'''),
        new_markdown_cell(
            "## Delayed gradients (§5)\n\nFour workers push adaptive-sparsified gradients to "
            "an asynchronous server that applies each one `delay` steps late (constant, and "
            "geometric with the same mean: bounded second moment). The paper has no "
            "experiment here; its corollaries say the delay's effect fades as T grows and "
            "weighs relatively less at high sparsity."),
        new_code_cell('''DELAY = SCENARIOS / "seed000_delay.yaml"
delays = [(0, "constant"), (16, "constant")] if SMALL else [
    (0, "constant"), (4, "constant"), (16, "constant"), (64, "constant"), (16, "geometric")]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
delay_final = {}
for ax, s in zip(axes, [0.01, 0.1]):
    for delay, law in delays:
        t = mixsim.run(DELAY, overrides={**QUIET, "epochs": 5 if SMALL else 30,
                                         "protocol.params": {"delay": delay, "distribution": law},
                                         "optimizer.compressor.density": s}).table
        ax.plot(t["epoch"], t["loss"], label=f"{law} {delay}")
        delay_final[s, delay, law] = round(float(t["loss"][-1]), 4)
    ax.set_yscale("log"); ax.set_title(f"s = {s}"); ax.set_xlabel("epoch")
axes[0].set_ylabel("training loss"); axes[0].legend(title="delay (steps)")
fig.tight_layout()
delay_final'''),
    ]
    return cells


def nb03():
    return [
        new_markdown_cell(
            "# Seed 001: SPARS-AMS, top-k with error feedback\n\n"
            "*Sparsified Distributed Adaptive Learning with Error Feedback*, Alg. 1 and Fig 1: "
            "20 workers send `TopK(g + e)` (error feedback `e`) to a server that averages the "
            "messages and runs AMSGrad. Claim: top-k with error feedback matches full "
            "AMSGrad, top-k without it does not. The draft gives no dataset, k or step size "
            "(and the figure is missing): mixsim uses the 128-64 MLP on scikit-learn's "
            "digits, k = 0.1% of d, lr 1e-3, minibatch 16 per worker.\n\n"
            "`MIXSIM_NOTEBOOK_SMALL=1` runs a reduced version."),
        new_code_cell(SETUP + '''
SPARS = SCENARIOS / "seed001_topk_ef.yaml"
STEPS = 400 if SMALL else 4000          # 20 steps = one synchronous round
print(SPARS.read_text())'''),
        new_code_cell('''variants = {
    "full AMSGrad": {"optimizer.compressor": {"name": "none"}},
    "top-k + error feedback": {"optimizer.memory": "error-feedback"},
    "top-k, no error feedback": {"optimizer.memory": "none"},
}
runs = {name: mixsim.run(SPARS, overrides={**QUIET, **change, "steps": STEPS,
                                           "eval_every": STEPS // 20}).table
        for name, change in variants.items()}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for name, t in runs.items():
    axes[0].plot(t["step"] / 20, t["test_accuracy"], label=name)
    axes[1].plot(t["step"] / 20, t["loss"], label=name)
    axes[2].plot(t["bits_up"], t["loss"], label=name)
axes[0].set_ylabel("test accuracy"); axes[1].set_ylabel("training loss")
axes[2].set_ylabel("training loss"); axes[2].set_xlabel("bits sent up")
axes[0].set_xlabel("round"); axes[1].set_xlabel("round")
axes[1].set_yscale("log"); axes[2].set_yscale("log"); axes[2].set_xscale("log")
axes[0].legend(); fig.tight_layout()
{name: (round(float(t["test_accuracy"][-1]), 3), round(float(t["loss"][-1]), 4),
        float(t["bits_up"][-1])) for name, t in runs.items()}'''),
        new_code_cell('''if not SMALL:
    full, ef, plain = (runs[n] for n in variants)
    assert ef["test_accuracy"][-1] > full["test_accuracy"][-1] - 0.03
    assert plain["test_accuracy"][-1] < full["test_accuracy"][-1] - 0.05'''),
    ]


def nb04():
    return [
        new_markdown_cell(
            "# Seed 003: CD-Adam on nonconvex logistic regression\n\n"
            "*Communication-Compressed Adaptive Gradient Method* (CD-Adam), §7.1 Fig 2 "
            "(scaled sign) and App. E.1 Fig 4 (top-1): f(x) = mean log(1 + exp(-y a^T x)) + "
            "0.1 sum x_j^2/(1 + x_j^2), n = 20 workers with equal parts of the data, "
            "full-batch gradients. CD-Adam (Alg. 1: Markov compression both ways, AMSGrad on "
            "the workers) against AMSGrad with error feedback, naive compression and no "
            "compression (all on a synchronous parameter server), plus EF21 and 1-bit Adam "
            "(§7.2). The paper's LibSVM datasets are replaced by breast-cancer (d = 30). Each "
            "method gets the best step size of the paper's grid 0.001 ... 0.009 by final "
            "gradient norm; the whole grid is shown.\n\n"
            "`MIXSIM_NOTEBOOK_SMALL=1` runs a reduced version."),
        new_code_cell(SETUP + '''
CD = SCENARIOS / "seed003_nonconvex_logistic.yaml"
ROUNDS = 40 if SMALL else 500
LRS = [0.001, 0.009] if SMALL else [0.001, 0.003, 0.005, 0.007, 0.009]
print(CD.read_text())'''),
        new_code_cell('''def methods(compressor):
    return {
        "CD-Adam": {"optimizer.placement": "cd-adam", "optimizer.compressor": compressor},
        "error feedback": {"optimizer.placement": "server", "optimizer.memory": "error-feedback",
                           "optimizer.compressor": compressor},
        "naive": {"optimizer.placement": "server", "optimizer.memory": "none",
                  "optimizer.compressor": compressor},
        "uncompressed": {"optimizer.placement": "server",
                         "optimizer.compressor": {"name": "none"}},
    }


def grid(compressor):
    runs = {}
    for name, change in methods(compressor).items():
        for lr in LRS:
            runs[name, lr] = mixsim.run(CD, overrides={
                **QUIET, **change, "optimizer.method.lr": lr, "steps": 20 * ROUNDS,
                "eval_every": 20}).table
    best = {name: min(LRS, key=lambda lr: runs[name, lr]["grad_norm"][-1])
            for name in methods(compressor)}
    return runs, best


def plot(runs, best, title):
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
    for name, lr in best.items():
        t = runs[name, lr]
        axes[0].plot(t["bits_up"] + t["bits_down"], t["grad_norm"], label=f"{name} (lr {lr})")
        axes[1].plot(t["step"] / 20, t["grad_norm"])
        axes[2].plot(LRS, [runs[name, x]["grad_norm"][-1] for x in LRS], marker="o",
                     label=name)
    axes[0].set_xscale("log"); axes[0].set_xlabel("bits (up + down)")
    axes[1].set_xlabel("iteration"); axes[2].set_xlabel("step size")
    axes[2].set_ylabel("final gradient norm")
    for ax in axes:
        ax.set_yscale("log")
    axes[0].set_ylabel("gradient norm"); axes[0].legend(); axes[2].legend()
    fig.suptitle(title); fig.tight_layout()


sign_runs, sign_best = grid({"name": "scaled-sign"})
plot(sign_runs, sign_best, "scaled sign (Fig 2)")
{name: (lr, float(sign_runs[name, lr]["grad_norm"][-1])) for name, lr in sign_best.items()}'''),
        new_code_cell('''topk_runs, topk_best = grid({"name": "top-k", "k": 1})
plot(topk_runs, topk_best, "top-1 (Fig 4)")
{name: (lr, float(topk_runs[name, lr]["grad_norm"][-1])) for name, lr in topk_best.items()}'''),
        new_markdown_cell(
            "## EF21 and 1-bit Adam (§7.2)\n\nEF21 extended to both directions, as §7.2 "
            "compares it (`placement: two-way`): Markov compression (top-1 here) of the "
            "uplink and of the broadcast, SGD on the workers with the paper's lr 0.1 (not "
            "tuned). 1-bit Adam as Tang et al. run it (`placement: onebit-adam`): Adam for "
            "the first 13% of rounds, then frozen variance; each worker sends the "
            "error-compensated scaled sign of its own momentum, the server that of their "
            "mean (32 d bits both ways during warm-up, 32 + d afterwards, seed 003 "
            "Table 2)."),
        new_code_cell('''d = 30
warmup = int(0.13 * ROUNDS)
ef21 = mixsim.run(CD, overrides={**QUIET, "steps": 20 * ROUNDS, "eval_every": 20,
                                 "optimizer.placement": "two-way",
                                 "optimizer.compressor": {"name": "top-k", "k": 1},
                                 "optimizer.method": {"name": "sgd", "lr": 0.1}}).table
onebit = {lr: mixsim.run(CD, overrides={
    **QUIET, "steps": 20 * ROUNDS, "eval_every": 20, "optimizer.placement": "onebit-adam",
    "optimizer.compressor": {"name": "none"},
    "optimizer.method": {"name": "onebit-adam", "lr": lr, "warmup": warmup}}).table
    for lr in LRS}
lr1 = min(LRS, key=lambda lr: onebit[lr]["grad_norm"][-1])
onebit_bits = onebit[lr1]["bits_up"] + onebit[lr1]["bits_down"]
cd = sign_runs["CD-Adam", sign_best["CD-Adam"]]
fig, ax = plt.subplots(figsize=(6, 3.4))
ax.plot(cd["bits_up"] + cd["bits_down"], cd["grad_norm"], label="CD-Adam (scaled sign)")
ax.plot(ef21["bits_up"] + ef21["bits_down"], ef21["grad_norm"], label="EF21 (top-1, SGD 0.1)")
ax.plot(onebit_bits, onebit[lr1]["grad_norm"], label=f"1-bit Adam (lr {lr1})")
ax.set_xscale("log"); ax.set_yscale("log"); ax.set_xlabel("bits (up + down)")
ax.set_ylabel("gradient norm"); ax.legend(); fig.tight_layout()
{"EF21": float(ef21["grad_norm"][-1]), "1-bit Adam": float(onebit[lr1]["grad_norm"][-1]),
 "CD-Adam": float(cd["grad_norm"][-1])}'''),
        new_code_cell('''# What holds at full size in mixsim (docs/reproductions.md):
# naive compression stalls.
if not SMALL:
    naive = sign_runs["naive", sign_best["naive"]]
    assert naive["grad_norm"][-1] > 10 * cd["grad_norm"][-1]'''),
    ]


def build(name, cells):
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    path = NOTEBOOKS / name
    nbformat.write(nb, path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execute", action="store_true", help="run at full size, in place")
    args = parser.parse_args(argv)
    paths = [build("02_seed000_sparsification.ipynb", nb02()),
             build("03_seed001_error_feedback.ipynb", nb03()),
             build("04_seed003_cd_adam.ipynb", nb04())]
    for path in paths:
        print("wrote", path)
        if args.execute:
            import time

            from nbclient import NotebookClient

            nb = nbformat.read(path, as_version=4)
            started = time.perf_counter()
            NotebookClient(nb, timeout=900, kernel_name="python3",
                           resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
            nbformat.write(nb, path)
            print(f"executed {path.name} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
