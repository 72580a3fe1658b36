"""An 8-worker AD-PSGD ResNet-20 run on the engine against a hand-written torch loop
(target ratio <= 1.15).

Workload: 8 workers on ``async-ring`` (after each own step a worker averages its copy with
one random ring neighbour), the built-in ``resnet20`` (269,722 parameters, float32) on
CIFAR-format data (a folder of random 3 x 32 x 32 images written to a temporary directory
in the python-batch format: the benchmark measures speed, not accuracy), minibatch 32, SGD,
``STEPS`` computation events. torch runs on one thread in both.

Baseline, measured in the same run: a plain torch loop with eight ``resnet20`` modules
(each worker's parameters and gradients are views of one flat tensor per worker, so an
SGD step and an average are one vector operation each), doing the same forward and
backward passes on the same minibatches (the workers' own sampling streams) in the same
worker order, the same SGD steps and the same pairwise averages as the engine run (order
and pairs taken from a first, untimed engine run with the same seed). Evaluations are
outside both timings. Engine and loop are timed in alternation, ``REPEATS`` times each;
the minimums are compared (noise only adds time). Ratio = engine / loop, printed for wall
time and for the process's CPU time (on a machine shared with other jobs the CPU time is
the steadier of the two: with one torch thread it counts only this process's work).

Run: python benchmarks/bench_torch.py
"""

from __future__ import annotations

import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from mixsim.learning import _Learner
from mixsim.scenario import Scenario
from mixsim.torch_models import resnet20

STEPS = 32
N = 8
LR = 0.05
BATCH = 32
REPEATS = 5


def _write_cifar(folder: Path, train: int = 1024, test: int = 64) -> None:
    rng = np.random.default_rng(0)
    for name, size in (("data_batch_1", train), ("test_batch", test)):
        batch = {b"data": rng.integers(0, 256, (size, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, size)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)


def _scenario(folder: Path) -> Scenario:
    return Scenario.model_validate({
        "name": "bench-torch", "seed": 0, "workers": N, "protocol": {"name": "async-ring"},
        "problem": {"name": "torch", "params": {"model": "resnet20"}},
        "data": {"name": "cifar10", "path": str(folder), "dtype": "float32", "batch": BATCH},
        "optimizer": {"method": {"name": "sgd", "lr": LR}},
        "steps": STEPS, "eval_every": STEPS,
        "outputs": {"measure_mixing": False, "plots": False},
    })


def _schedule(scenario):
    """Worker order and the pairwise averages after each computation, from an engine run."""
    learner = _Learner(scenario, None)
    order = []
    compute = learner.placement.compute

    def recording(worker, g, view):
        order.append(worker)
        return compute(worker, g, view)

    learner.placement.compute = recording
    learner.sim.run(STEPS)
    trace = learner.sim.trace
    averages: dict[int, list[tuple[int, int]]] = {}
    for step, op_index in zip(trace.ev_step, trace.ev_op, strict=True):
        if op_index >= 0:
            rows = trace.ops[op_index].rows
            averages.setdefault(step, []).append((int(rows[0]), int(rows[1])))
    return order, averages


def _clocks():
    return time.perf_counter(), time.process_time()


def _since(start) -> tuple[float, float]:
    wall, cpu = _clocks()
    return wall - start[0], cpu - start[1]


def _engine(scenario) -> tuple[float, float]:
    learner = _Learner(scenario, None)
    start = _clocks()
    learner.sim.run(STEPS)
    return _since(start)


def _loop(scenario, order, averages) -> tuple[float, float]:
    """The hand-written torch loop (module docstring)."""
    learner = _Learner(scenario, None)  # the same data, shards and initial point
    ds = learner.dataset
    rngs = [np.random.default_rng(s) for s in
            np.random.SeedSequence(learner._worker_seed).spawn(N)]
    x0 = torch.from_numpy(learner.sim.trace.initial_state[0].copy())
    models, flats, grads = [], [], []
    for _ in range(N):
        model = resnet20((3, 32, 32), 10)
        flat = x0.clone()
        grad = torch.zeros_like(flat)
        start = 0
        for p in model.parameters():
            size = p.numel()
            p.data = flat[start:start + size].view_as(p)
            p.grad = grad[start:start + size].view_as(p)
            start += size
        models.append(model.train())
        flats.append(flat)
        grads.append(grad)
    start = _clocks()
    for t, worker in enumerate(order):
        shard = learner.shards[worker]
        rows = shard[rngs[worker].choice(shard.size, BATCH, replace=False)]
        inputs = torch.from_numpy(ds.A_train[rows]).view(BATCH, 3, 32, 32)
        labels = torch.from_numpy(ds.y_train[rows])
        grads[worker].zero_()
        loss = torch.nn.functional.cross_entropy(models[worker](inputs), labels)
        loss.backward()
        with torch.no_grad():
            flats[worker].sub_(grads[worker], alpha=LR)
            for i, j in averages.get(t, []):
                mean = (flats[i] + flats[j]) / 2
                flats[i].copy_(mean)
                flats[j].copy_(mean)
    return _since(start)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1):
        folder = Path(tmp)
        _write_cifar(folder)
        scenario = _scenario(folder)
        order, averages = _schedule(scenario)  # also warms torch up
        engine_times, loop_times = [], []
        for _ in range(REPEATS):
            loop_times.append(_loop(scenario, order, averages))
            engine_times.append(_engine(scenario))
    print(f"{STEPS} steps, {N} workers, resnet20, batch {BATCH}, torch threads 1")
    for index, clock in enumerate(("wall", "cpu")):
        loop = [t[index] for t in loop_times]
        engine = [t[index] for t in engine_times]
        ratio = min(engine) / min(loop)
        verdict = "met" if ratio <= 1.15 else "NOT met"
        print(f"{clock} time: hand-written torch loop {min(loop):.2f} s (baseline; all "
              f"{', '.join(f'{t:.2f}' for t in loop)}), mixsim engine {min(engine):.2f} s "
              f"(all {', '.join(f'{t:.2f}' for t in engine)}): ratio {ratio:.3f} "
              f"(target <= 1.15: {verdict})")


if __name__ == "__main__":
    main()
