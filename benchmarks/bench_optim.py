"""Speed of the mixsim.optim kernels, as ratios measured in the same run.

    python benchmarks/bench_optim.py [--quick]

Prints, for each kernel, the median time over repetitions, the named baseline, the ratio
(kernel / baseline, lower is better) and the target. torch is optional: without it the
torch rows are skipped. ``--quick`` uses 10x smaller sizes (a smoke run, not the figures).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import numpy as np

from mixsim.optim import (
    amsgrad,
    amsgrad_torch,
    chain,
    error_feedback,
    select_top_k,
    top_k,
)


def median_seconds(fn, repeat: int) -> float:
    return paired_medians([fn], repeat)[0]


def paired_medians(fns, repeat: int) -> list[float]:
    """Median times of ``fns``, run in alternation so that load on a shared machine hits
    the kernel and its baseline alike (the ratio is then meaningful even when busy)."""
    for fn in fns:
        fn()  # warm-up: compilation, first-touch page faults
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, bucket in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def numpy_amsgrad(x, g, m, v, v_hat, lr, b1, b2, eps, tmp):
    """AMSGrad (seeds' form) in plain NumPy, in place, one temporary: a fair baseline."""
    m *= b1
    m += (1 - b1) * g
    np.multiply(g, g, out=tmp)
    tmp *= 1 - b2
    v *= b2
    v += tmp
    np.maximum(v_hat, v, out=v_hat)
    np.add(v_hat, eps, out=tmp)
    np.sqrt(tmp, out=tmp)
    np.divide(m, tmp, out=tmp)
    tmp *= lr
    x -= tmp


def report(name: str, seconds: float, baseline: str, base_seconds: float, target: float | None):
    ratio = seconds / base_seconds
    verdict = "" if target is None else ("  met" if ratio <= target else "  NOT met")
    goal = "-" if target is None else f"<= {target:.2f}"
    print(
        f"{name:<44} {seconds * 1e3:9.2f} ms  vs {baseline:<34} {base_seconds * 1e3:9.2f} ms"
        f"  ratio {ratio:5.2f}  target {goal}{verdict}"
    )


def bench_amsgrad(d: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal(d, dtype=np.float32)
    x = rng.standard_normal(d, dtype=np.float32)

    opt = amsgrad(1e-3)
    state = opt.init(x)
    ours = median_seconds(lambda: opt.step(g, state, x), repeat)
    opt_t = amsgrad_torch(1e-3)
    state_t = opt_t.init(x)
    ours_torch_form = median_seconds(lambda: opt_t.step(g, state_t, x), repeat)

    m, v, v_hat, tmp = (np.zeros(d, np.float32) for _ in range(4))
    plain = median_seconds(
        lambda: numpy_amsgrad(x, g, m, v, v_hat, 1e-3, 0.9, 0.999, 1e-8, tmp), repeat
    )
    print(f"AMSGrad step, d = {d:.0e}, float32 (one thread for mixsim)")
    report("mixsim amsgrad (seeds' form)", ours, "plain NumPy (in place)", plain, None)
    report("mixsim amsgrad-torch", ours_torch_form, "plain NumPy (in place)", plain, None)

    if importlib.util.find_spec("torch") is None:
        print("torch not installed: torch rows skipped (pip install 'mixsim[torch]')")
        return
    import torch

    for threads in sorted({1, torch.get_num_threads()}):
        torch.set_num_threads(threads)
        p = torch.nn.Parameter(torch.from_numpy(x.copy()))
        p.grad = torch.from_numpy(g.copy())
        adam = torch.optim.Adam([p], lr=1e-3, amsgrad=True, fused=True)
        with torch.no_grad():
            mine, mine_torch_form, fused = paired_medians(
                [lambda: opt.step(g, state, x), lambda: opt_t.step(g, state_t, x), adam.step],
                repeat,
            )
        label = f"torch Adam(amsgrad, fused), {threads} thr"
        report("mixsim amsgrad-torch", mine_torch_form, label, fused, 1.0)
        report("mixsim amsgrad (seeds' form)", mine, label, fused, 1.0)


def bench_fused(d: int, repeat: int) -> None:
    rng = np.random.default_rng(1)
    g = rng.standard_normal(d, dtype=np.float32)
    x = rng.standard_normal(d, dtype=np.float32)
    k = d // 100
    opt = chain(error_feedback(top_k(k)), amsgrad(1e-3))
    assert opt.spec.name == "fused-ef-top-k-amsgrad"
    state = opt.init(x)
    plain = amsgrad(1e-3)
    plain_state = plain.init(x)
    fused, plain_amsgrad = paired_medians(
        [lambda: opt.step(g, state, x), lambda: plain.step(g, plain_state, x)], repeat
    )
    print(f"\nerror feedback + top-k (k = 1%) + AMSGrad step, d = {d:.0e}, float32")
    report("mixsim fused EF + top-k + AMSGrad", fused, "mixsim amsgrad step", plain_amsgrad, 1.5)


def top_k_inputs(d: int) -> dict[str, np.ndarray]:
    """Normal input and three adversarial ones: heavy ties, sorted, constant."""
    rng = np.random.default_rng(2)
    normal = rng.standard_normal(d, dtype=np.float32)
    return {
        "normal": normal,
        # Integer values in [-8, 8]: about 6% of the entries share each magnitude, so the
        # k-th magnitude is tied with several times k entries.
        "tied integers": rng.integers(-8, 9, d).astype(np.float32),
        "sorted": np.sort(normal),
        "constant": np.full(d, 0.5, np.float32),
    }


def bench_top_k(d: int, repeat: int) -> None:
    k = d // 100
    print(f"\nexact top-k indices, d = {d:.0e}, k = 1%, float32")
    for name, x in top_k_inputs(d).items():
        magnitudes = np.abs(x)
        ours, with_abs, without_abs = paired_medians(
            [
                lambda x=x: select_top_k(x, k),
                lambda x=x: np.argpartition(np.abs(x), d - k)[d - k :],
                lambda m=magnitudes: np.argpartition(m, d - k)[d - k :],
            ],
            repeat,
        )
        target = 0.33 if name == "normal" else 1.0
        report(f"mixsim select_top_k, {name}", ours, "np.argpartition(np.abs(x))", with_abs,
               target)
        report(f"mixsim select_top_k, {name}", ours, "np.argpartition(|x| precomputed)",
               without_abs, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    bench_amsgrad(20_000_000 // scale, args.repeat)
    bench_fused(20_000_000 // scale, args.repeat)
    bench_top_k(10_000_000 // scale, args.repeat)


if __name__ == "__main__":
    main()
