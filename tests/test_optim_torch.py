"""Adam, Nesterov SGD, weight decay and schedules against torch.optim on the same gradients."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mixsim.errors import ConfigError  # noqa: E402
from mixsim.optim import make_optimizer  # noqa: E402
from mixsim.optim.registry import _OPTIMIZERS  # noqa: E402

STEPS = 25


def _gradients(d=7, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(d) * 10 ** rng.uniform(-2, 1) for _ in range(STEPS)]


def _torch_trajectory(make, x0, gradients, scheduler=None):
    param = torch.nn.Parameter(torch.tensor(x0, dtype=torch.float64))
    optimizer = make([param])
    sched = scheduler(optimizer) if scheduler else None
    path = []
    for g in gradients:
        param.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
        if sched:
            sched.step()
        path.append(param.detach().numpy().copy())
    return np.array(path)


def _mixsim_trajectory(opt, x0, gradients):
    x = x0.copy()
    state = opt.init(x)
    path = []
    for g in gradients:
        state = opt.step(g, state, x)
        path.append(x.copy())
    return np.array(path)


CASES = {
    "adam": (dict(name="adam", lr=0.01, b1=0.8, b2=0.99, eps=1e-6),
             lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    "adam-l2": (dict(name="adam", lr=0.01, weight_decay=0.1),
                lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
    "adamw": (dict(name="adam", lr=0.01, decoupled_weight_decay=0.1),
              lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
    "amsgrad-torch-l2": (dict(name="amsgrad-torch", lr=0.01, weight_decay=0.05),
                         lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True,
                                                    weight_decay=0.05)),
    "nesterov": (dict(name="momentum", lr=0.05, mu=0.9, nesterov=True),
                 lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    "nesterov-l2": (dict(name="momentum", lr=0.05, mu=0.9, nesterov=True, weight_decay=5e-4),
                    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                              weight_decay=5e-4)),
    "sgd-l2": (dict(name="sgd", lr=0.05, weight_decay=0.2),
               lambda p: torch.optim.SGD(p, lr=0.05, weight_decay=0.2)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_optimizer_follows_torch(case):
    params, make = CASES[case]
    params = dict(params)
    x0 = np.random.default_rng(1).standard_normal(7)
    gradients = _gradients()
    expected = _torch_trajectory(make, x0, gradients)
    got = _mixsim_trajectory(make_optimizer(params.pop("name"), **params), x0, gradients)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("schedule", "scheduler"), [
    ({"name": "step-decay", "factor": 0.5, "every": 4},
     lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5)),
    ({"name": "cosine", "steps": 10, "low": 0.001},
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001)),
])
def test_schedules_follow_torch_schedulers(schedule, scheduler):
    x0 = np.zeros(7)
    gradients = _gradients(seed=2)[:11]  # within the annealing (torch's cosine turns back up)
    expected = _torch_trajectory(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), x0,
                                 gradients, scheduler)
    opt = make_optimizer("momentum", lr=0.1, mu=0.9, schedule=schedule)
    np.testing.assert_allclose(_mixsim_trajectory(opt, x0, gradients), expected, rtol=1e-12,
                               atol=1e-13)


@pytest.mark.parametrize("name", sorted(_OPTIMIZERS))
def test_every_method_takes_both_weight_decays_as_defined(name):
    # Reference: the definitions on the undecayed method (x shrinks by 1 - lr wd first; the
    # method sees g + wd x).
    x0 = np.random.default_rng(3).standard_normal(7)
    gradients = _gradients(seed=4)[:8]
    lr = 0.01
    decayed = make_optimizer(name, lr=lr, weight_decay=0.3, decoupled_weight_decay=0.2)
    plain = make_optimizer(name, lr=lr)
    x, state = x0.copy(), plain.init(x0)
    expected = []
    for g in gradients:
        g = g + 0.3 * x
        x *= 1 - lr * 0.2
        state = plain.step(g, state, x)
        expected.append(x.copy())
    np.testing.assert_allclose(_mixsim_trajectory(decayed, x0, gradients), expected,
                               rtol=1e-13, atol=1e-15)
    update, _ = decayed.update(gradients[0], decayed.init(x0), x0)
    first = x0.copy()
    decayed.step(gradients[0], decayed.init(first), first)
    np.testing.assert_allclose(x0 + update, first, rtol=1e-13)


def test_bad_schedule_and_weight_decay_are_config_errors():
    with pytest.raises(ConfigError, match="schedule"):
        make_optimizer("sgd", lr=0.1, schedule="cosine")
    with pytest.raises(ConfigError, match="weight_decay"):
        make_optimizer("sgd", lr=0.1, weight_decay=-1)
    with pytest.raises(ConfigError, match="steps"):
        make_optimizer("sgd", lr=0.1, schedule={"name": "cosine", "steps": 0})
