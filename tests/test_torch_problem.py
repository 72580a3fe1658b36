"""The torch problem: a torch.nn.Module whose parameters are the state (small models only)."""

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import learning_twin  # noqa: E402
from cifar_files import write_folder  # noqa: E402

from mixsim.errors import ConfigError  # noqa: E402
from mixsim.learning import _Learner, run  # noqa: E402
from mixsim.problems import MLP, LeastSquares  # noqa: E402
from mixsim.scenario import Scenario  # noqa: E402
from mixsim.torch_models import resnet20  # noqa: E402
from mixsim.torch_problem import make_torch_problem  # noqa: E402

LINEAR = """
import torch

def zero_linear(features=64, classes=10):
    layer = torch.nn.Linear(features, classes)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    return torch.nn.Sequential(torch.nn.Flatten(), layer)

def not_a_module():
    return 3

def leaves():
    raise SystemExit(0)
"""


def _scenario(problem, **changes):
    base = {"name": "t", "seed": 5, "workers": 4, "protocol": {"name": "async-ring"},
            "problem": problem, "data": {"name": "digits", "batch": 16},
            "optimizer": {"method": {"name": "amsgrad", "lr": 0.01}},
            "steps": 24, "eval_every": 8,
            "outputs": {"measure_mixing": False, "plots": False}}
    base.update(changes)
    return Scenario.model_validate(base)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(LINEAR)
    return path


def test_zero_linear_module_follows_the_softmax_problem(model_file, tmp_path, monkeypatch):
    # SGD and AMSGrad from zeros act coordinate-wise: the layout of the parameters does not
    # matter, so the loss trajectories agree up to rounding (float64).
    scenario_path = tmp_path / "s.yaml"
    scenario_path.write_text("problem: {name: torch, params: {model: 'models.py:zero_linear'}}\n"
                             "workers: 4\nprotocol: {name: async-ring}\nseed: 5\n"
                             "data: {name: digits, batch: 16}\nsteps: 40\neval_every: 8\n"
                             "outputs: {measure_mixing: false, plots: false}\n")
    learners = learning_twin.spy_on_learner(monkeypatch)
    torch_run = run(scenario_path)
    softmax_run = run(scenario_path, overrides={"problem": {"name": "softmax"}})
    gap = np.abs(torch_run.table["loss"] - softmax_run.table["loss"]) / softmax_run.table["loss"]
    assert gap.max() <= 1e-6
    # Both against the NumPy twin of the run (tests/learning_twin.py: the run's event order,
    # hand-built pairwise averages, the same mini-batches, softmax regression and AMSGrad
    # written out): the softmax run to rounding, the torch run to its gap above.
    expected, X = learning_twin.simulate(learners[1], learning_twin.softmax(10), target="own",
                                         consensus=("workers", None), synchronous=False)
    np.testing.assert_array_equal(softmax_run.table["step"], 8 * np.arange(6))
    np.testing.assert_allclose(softmax_run.table["loss"], expected, rtol=1e-10)
    np.testing.assert_allclose(learners[1].sim.X, X, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(torch_run.table["loss"], expected, rtol=1e-6)
    assert expected[-1] < 0.8 * expected[0]  # sanity: it learns
    np.testing.assert_array_equal(torch_run.table["test_accuracy"],
                                  softmax_run.table["test_accuracy"])


def test_gradient_of_the_torch_mlp_matches_the_numpy_mlp_on_the_same_weights():
    rng = np.random.default_rng(0)
    A, y = rng.standard_normal((20, 12)), rng.integers(0, 3, 20)
    problem = make_torch_problem({"model": "mlp", "model_args": {"hidden": [5, 4]}},
                                 data_dim=12, n_classes=3)
    numpy_mlp = MLP(12, 3, hidden=(5, 4))
    x = problem.init(1)
    # torch keeps weight (out, in) then bias per layer; the NumPy MLP keeps (in, out) then bias.
    blocks = [x[a:b] for a, b in problem.layers]
    shapes = [(5, 12), (5,), (4, 5), (4,), (3, 4), (3,)]
    z = np.concatenate([block.reshape(s).T.ravel() if len(s) == 2 else block
                        for block, s in zip(blocks, shapes, strict=True)])
    loss, grad = problem.loss_and_grad(x, A, y)
    assert loss == pytest.approx(numpy_mlp.loss(z, A, y), rel=1e-12)
    expected = numpy_mlp.grad(z, A, y)
    got = np.concatenate([block.reshape(s).T.ravel() if len(s) == 2 else block
                          for block, s in zip([grad[a:b] for a, b in problem.layers], shapes,
                                              strict=True)])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)
    assert problem.offsets == [0, 60, 65, 85, 89, 101, 104]


def test_mse_loss_on_regression_data_is_twice_least_squares():
    rng = np.random.default_rng(1)
    A, y = rng.standard_normal((15, 6)), rng.standard_normal(15)
    code = "torch.nn.Linear(6, 1, bias=False)"
    problem = make_torch_problem({"model": "mlp", "model_args": {"hidden": []}, "loss": "mse"},
                                 data_dim=6, n_classes=None)
    assert problem.dim == 7, code  # weight and bias of one linear layer
    x = rng.standard_normal(7)
    x[6] = 0.0
    loss, grad = problem.loss_and_grad(x, A, y)
    reference = LeastSquares(6)
    assert loss == pytest.approx(2 * reference.loss(x[:6], A, y), rel=1e-12)
    np.testing.assert_allclose(grad[:6], 2 * reference.grad(x[:6], A, y), rtol=1e-10)


def test_parameters_are_views_of_the_state_and_the_gradient_one_flat_buffer():
    problem = make_torch_problem({"model": "cnn"}, data_dim=64, n_classes=10,
                                 sample_shape=(1, 8, 8))
    x = problem.init(3, dtype=np.float32)
    A = np.random.default_rng(2).standard_normal((4, 64)).astype(np.float32)
    out = np.zeros_like(x)
    problem.for_worker(0).grad(x, A, np.arange(4), out=out)
    params = list(problem.module.parameters())
    assert all(p.dtype == torch.float32 for p in params)
    base = x.__array_interface__["data"][0]
    assert params[0].data_ptr() == base
    assert params[-1].grad.data_ptr() == out.__array_interface__["data"][0] + 4 * (
        problem.layers[-1][0])
    assert np.abs(out).sum() > 0


def test_resnet20_has_the_papers_parameter_count():
    model = resnet20((3, 32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) == 269_722  # "0.27M" (He et al. §4.2)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 19  # 1 + 3 stages x 3 blocks x 2 (+ the linear layer: 20 layers)
    out = model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_batchnorm_statistics_are_private_per_worker_and_averaged_for_evaluation():
    problem = make_torch_problem({"model": "resnet20", "model_args": {"width": 4}},
                                 data_dim=64, n_classes=10, sample_shape=(1, 8, 8))
    x = problem.init(0)
    rng = np.random.default_rng(0)
    for worker in (0, 1):
        A = rng.standard_normal((6, 64)) + 3 * worker
        problem.for_worker(worker).grad(x, A, np.arange(6))
    stats = [problem._worker_buffers[w]["bn1.running_mean"] for w in (0, 1)]
    assert not torch.equal(stats[0], stats[1])
    mean = problem._eval_buffers(x)["bn1.running_mean"]
    torch.testing.assert_close(mean, (stats[0] + stats[1]) / 2)
    assert problem._worker_buffers[0]["bn1.num_batches_tracked"].item() == 1


class _TorchTwin:
    """ResNet-20 trained as the torch problem documents it, written with plain torch: each
    worker its own module (its own BatchNorm running statistics, updated by its training
    passes), the parameters loaded from the state with ``vector_to_parameters``, mean
    cross-entropy in training mode for a gradient; the consensus model evaluated in eval
    mode with the mean running statistics of the workers that have computed (the initial
    ones before any)."""

    def __init__(self, sample_shape, dtype):
        self.shape = sample_shape
        self.dtype = torch.float64 if dtype == np.float64 else torch.float32
        self.fresh = resnet20(sample_shape, 10).to(self.dtype)
        self.workers = {}

    def _inputs(self, module, x, A, y):
        torch.nn.utils.vector_to_parameters(torch.from_numpy(np.array(x)), module.parameters())
        inputs = torch.from_numpy(np.ascontiguousarray(A)).to(self.dtype)
        return inputs.reshape(-1, *self.shape), torch.from_numpy(np.asarray(y, dtype=np.int64))

    def worker_grad(self, worker, x, A, y):
        module = self.workers.setdefault(worker, copy.deepcopy(self.fresh))
        module.train()
        inputs, labels = self._inputs(module, x, A, y)
        loss = torch.nn.functional.cross_entropy(module(inputs), labels)
        grads = torch.autograd.grad(loss, list(module.parameters()))
        return torch.cat([g.reshape(-1) for g in grads]).numpy()

    def loss_and_grad(self, x, A, y):
        module = copy.deepcopy(self.fresh)
        if self.workers:
            buffers = dict(module.named_buffers())
            for name, buffer in buffers.items():
                if buffer.is_floating_point():
                    values = [dict(w.named_buffers())[name] for w in self.workers.values()]
                    buffer.copy_(torch.stack(values).mean(dim=0))
        module.eval()
        inputs, labels = self._inputs(module, x, A, y)
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(module(inputs), labels)), None


def test_resnet20_on_cifar_files_learns_and_one_seed_gives_the_same_bytes(tmp_path,
                                                                          monkeypatch):
    write_folder(tmp_path / "cifar", train_per_batch=(16,), test=8)
    scenario = tmp_path / "r.yaml"
    scenario.write_text(textwrap.dedent("""\
        seed: 2
        workers: 2
        protocol: {name: async-ring}
        problem: {name: torch, params: {model: resnet20}}
        data: {name: cifar10, path: PATH, batch: 4}
        optimizer: {method: {name: sgd, lr: 0.05}}
        steps: 8
        eval_every: 4
        outputs: {measure_mixing: false, plots: false}
        """).replace("PATH", str(tmp_path / "cifar")))
    learners = learning_twin.spy_on_learner(monkeypatch)
    first = run(scenario, out=tmp_path / "a")
    run(scenario, out=tmp_path / "b")
    assert ((tmp_path / "a" / "metrics.csv").read_bytes()
            == (tmp_path / "b" / "metrics.csv").read_bytes())
    # Against the twin above on the run's event order and mini-batches (SGD on each
    # worker's copy, pairwise averages built by hand), in the data's float64: to rounding.
    learner = learners[0]
    twin = _TorchTwin(learner.dataset.sample_shape, learner.initial_X.dtype)
    expected, X = learning_twin.simulate(learner, twin.loss_and_grad, target="own",
                                         consensus=("workers", None), synchronous=False,
                                         worker_grad=twin.worker_grad)
    assert learner.initial_X.dtype == np.float64
    np.testing.assert_allclose(first.table["loss"], expected, rtol=1e-10)
    np.testing.assert_allclose(learner.sim.X, X, rtol=1e-10, atol=1e-13)
    assert expected[-1] < expected[0]  # sanity: it learns


@pytest.mark.parametrize(("model", "message"), [
    ("no_such_package.models:net", "cannot import 'no_such_package.models'"),
    ("missing.py:net", "no such file"),
    ("models.py:absent", "has no callable 'absent'"),
    ("models.py:not_a_module", "returned int, not a torch.nn.Module"),
    ("resnet21", "unknown model 'resnet21'"),
    # A scenario file cannot call the standard library with arguments of its choosing.
    ("os:system", "is not a model factory"),
    ("subprocess:run", "is not a model factory"),
    ("models.py:leaves", "the factory failed: SystemExit"),
])
def test_a_model_that_does_not_resolve_is_one_line_naming_the_key(model_file, model, message):
    with pytest.raises(ConfigError) as info:
        make_torch_problem({"model": model}, data_dim=64, n_classes=10,
                           base_dir=model_file.parent)
    assert message in str(info.value) and info.value.key == "problem.params.model"


def test_a_model_whose_input_does_not_fit_the_data_is_refused_before_any_step(model_file):
    with pytest.raises(ConfigError, match="does not take inputs of shape"):
        _Learner(_scenario({"name": "torch", "params": {
            "model": f"{model_file}:zero_linear", "model_args": {"features": 30}}}), None)
    with pytest.raises(ConfigError, match=r"gives outputs of shape \(2, 3\)"):
        _Learner(_scenario({"name": "torch", "params": {
            "model": f"{model_file}:zero_linear", "model_args": {"classes": 3}}}), None)


_BLOCK_TORCH = """
import importlib.abc
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, _NoTorch())
"""


def _cli(args, cwd, block_torch=False):
    code = ("import sys\n" + (_BLOCK_TORCH if block_torch else "")
            + "from mixsim.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True,
                          text=True)


@pytest.mark.parametrize("case", ["import", "shape", "cifar", "no-torch"])
def test_cli_bad_input_is_one_line_and_exit_2_with_no_metrics(tmp_path, model_file, case):
    problem = "{name: torch, params: {model: 'models.py:zero_linear'}}"
    data = "{name: digits}"
    if case == "import":
        problem = "{name: torch, params: {model: 'nowhere.net:build'}}"
    elif case == "shape":
        problem = "{name: torch, params: {model: cnn}}"
        data = "{name: breast-cancer}"
    elif case == "cifar":
        write_folder(tmp_path / "cifar")
        (tmp_path / "cifar" / "data_batch_2").write_bytes(b"\x80\x02garbage")
        data = f"{{name: cifar10, path: {tmp_path / 'cifar'}}}"
    (tmp_path / "s.yaml").write_text(f"problem: {problem}\ndata: {data}\nsteps: 2\n")
    done = _cli(["run", "s.yaml", "--out", "o", "--quiet"], tmp_path, case == "no-torch")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "s.yaml" in lines[0], done.stderr
    expected = {"import": "problem.params.model", "shape": "problem.params.model",
                "cifar": "data.path", "no-torch": "mixsim[torch]"}[case]
    assert expected in lines[0]
    assert not (tmp_path / "o" / "metrics.csv").exists()
