"""PyTorch modules as learning problems: the model's parameters live in the state.

``problem: {name: torch, params: {model: resnet20, loss: cross-entropy}}`` trains a
``torch.nn.Module`` where the NumPy problems train a closed-form model. The module is
given as a built-in name (:mod:`mixsim.torch_models`), ``package.module:factory`` or
``path/to/file.py:factory`` (relative to the scenario file); the factory returns the module.

How a module becomes a problem on a flat vector ``x``:

* **Parameters** are ``x`` itself. Every computation rebinds each parameter to a zero-copy
  view of ``x`` (``torch.from_numpy(x)[start:stop].view(shape)``), in the order of
  ``named_parameters()``; :attr:`TorchProblem.layers` holds these blocks, so per-layer
  compression (``optimizer.layerwise``) compresses each tensor on its own.
* **Gradients** land in one flat buffer: each parameter's ``.grad`` is a view of it, and
  autograd accumulates into it in place; the numba optimizers and compressors read it as
  they read a NumPy problem's gradient.
* **dtype**: the module runs in the state's dtype (float32 or float64).
* **Seeds**: :meth:`TorchProblem.init` builds the module afresh under
  ``torch.manual_seed(seed)`` (the problem seed of the run), so the starting point depends
  on the seed only; it then seeds torch's global generator with the same seed, so dropout
  and other random layers draw the same numbers in the (deterministic) order of the
  computation events. ``threads`` (default 1) fixes torch's intra-op threads for the
  process: the CPU kernels are deterministic at a fixed thread count, and one seed gives
  the same bytes.
* **BatchNorm running statistics** (buffers that are not parameters) are a worker's
  *internal storage*: each worker keeps its own, updated by its own forward passes in
  training mode (batches normalize with their own statistics, as in data-parallel training
  without SyncBatchNorm); they are not in the state and never mixed. The consensus model
  is evaluated in eval mode with the workers' mean running statistics (mean of the running
  means, mean of the running variances).
* **Losses**: ``cross-entropy`` (classes; accuracy is reported) and ``mse`` (against the
  one-hot labels for classification data, against the targets for regression data).

Evaluation (``loss``, ``grad``, ``accuracy`` of the problem itself) runs in eval mode in
chunks of ``eval_batch`` rows, so the full-data loss and gradient of a deep model fit in
memory; training gradients come from :meth:`TorchProblem.for_worker` views in training
mode.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

import numpy as np

from mixsim.errors import ConfigError

__all__ = ["TorchProblem", "make_torch_problem", "import_torch"]

_LOSSES = ("cross-entropy", "mse")
_PARAMS = ("model", "loss", "model_args", "threads", "eval_batch", "flatten")
_KEY = "problem.params"


def import_torch():
    """``torch``, or a :class:`ConfigError` naming the extra that installs it."""
    try:
        import torch
    except ImportError:
        raise ConfigError("the torch problem needs PyTorch: pip install 'mixsim[torch]'",
                          key="problem.name") from None
    return torch


def _resolve_factory(spec: str, base_dir: Path):
    """The callable named by a built-in name, ``package.module:factory`` or
    ``path/file.py:factory``."""
    from mixsim import torch_models

    key = f"{_KEY}.model"
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"must be a model name or 'module:factory', got {spec!r}", key=key)
    if spec in torch_models.MODELS:
        return torch_models.MODELS[spec], True
    if ":" not in spec:
        raise ConfigError(f"unknown model {spec!r}; built-in: "
                          f"{', '.join(torch_models.MODELS)}, or give 'package.module:factory' "
                          "or 'path/file.py:factory'", key=key)
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise ConfigError(f"{spec!r}: no such file {path}", key=key)
        module_name = f"_mixsim_model_{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            raise ConfigError(f"{spec!r}: importing {path} failed: "
                              f"{type(exc).__name__}: {exc}", key=key) from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise ConfigError(f"{spec!r}: cannot import {where!r}: "
                              f"{type(exc).__name__}: {exc}", key=key) from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ConfigError(f"{spec!r}: {where} has no callable {name!r}", key=key)
    if not where.endswith(".py"):
        _check_factory(spec, factory, key)
    return factory, False


def _check_factory(spec: str, factory, key: str) -> None:
    """A ``package.module:factory`` must be a Python function or class of the user's own
    code: a scenario file must not call ``os:system`` or ``subprocess:run`` with arguments
    of its choosing (the standard library and compiled built-ins are refused)."""
    import inspect
    import sys

    origin = getattr(factory, "__module__", None) or ""
    top = origin.split(".")[0]
    if (not (inspect.isfunction(factory) or inspect.isclass(factory))
            or top in sys.stdlib_module_names or top == "builtins"):
        raise ConfigError(f"{spec!r} is not a model factory (a Python function or class "
                          "returning a torch.nn.Module, outside the standard library)",
                          key=key)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class TorchProblem:
    """A ``torch.nn.Module`` as a problem on a flat parameter vector (module docstring).

    Parameters
    ----------
    build : callable
        ``build() -> torch.nn.Module``; called once here and once per :meth:`init`.
    data_dim : int
        Number of features of a data row ``p``.
    n_classes : int or None
        Classes of the data (None: regression).
    sample_shape : tuple of int
        Shape one row is reshaped to before it reaches the module (``(C, H, W)`` for
        images, ``(p,)`` for flat rows).
    loss : {"cross-entropy", "mse"}
    threads : int
        torch intra-op threads (set for the process).
    eval_batch : int
        Rows per chunk in evaluation.
    name : str
        What the model was called (for messages).

    Attributes
    ----------
    dim : int
        Number of parameters.
    layers : list of (int, int)
        ``(start, stop)`` of every parameter tensor in ``x``.
    parameter_names : list of str
        ``named_parameters()`` order.
    """

    name = "torch"

    def __init__(self, build, data_dim: int, n_classes: int | None, sample_shape, *,
                 loss: str = "cross-entropy", threads: int = 1, eval_batch: int = 1000,
                 name: str = "model"):
        self._torch = torch = import_torch()
        torch.set_num_threads(threads)
        self._build = build
        self.data_dim = int(data_dim)
        self.n_classes = n_classes
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.loss_name = loss
        self.eval_batch = int(eval_batch)
        self.model_name = name
        self.task = "classification" if loss == "cross-entropy" else "regression"
        self.module = self._new_module()
        params = list(self.module.named_parameters())
        if not params:
            raise ConfigError(f"model {name!r} has no parameters", key=f"{_KEY}.model")
        self.parameter_names = [n for n, _ in params]
        self._shapes = [tuple(p.shape) for _, p in params]
        self.layers = []
        start = 0
        for _, p in params:
            self.layers.append((start, start + p.numel()))
            start += p.numel()
        self.dim = start
        self._initial_buffers = {n: b.detach().clone() for n, b in self.module.named_buffers()}
        self._worker_buffers: dict[int, dict[str, Any]] = {}
        self._dtype = None
        self._check_output()

    def __repr__(self) -> str:
        return f"TorchProblem(model={self.model_name!r}, dim={self.dim}, loss={self.loss_name!r})"

    @property
    def offsets(self) -> list[int]:
        """Layer boundaries ``[0, o_1, ..., dim]`` (the compressors' ``offsets``)."""
        return [0] + [stop for _, stop in self.layers]

    # -- building ---------------------------------------------------------------------------
    def _new_module(self):
        torch = self._torch
        try:
            module = self._build()
        except ConfigError:
            raise
        except (Exception, SystemExit) as exc:  # a factory's exit() is a failure too
            raise ConfigError(f"model {self.model_name!r}: the factory failed: "
                              f"{_first_line(exc)}", key=f"{_KEY}.model") from None
        if not isinstance(module, torch.nn.Module):
            raise ConfigError(f"model {self.model_name!r}: the factory returned "
                              f"{type(module).__name__}, not a torch.nn.Module",
                              key=f"{_KEY}.model")
        return module

    def _check_output(self):
        """One forward pass on a zero sample: the module must take the data's shape and
        give the loss's output shape."""
        torch = self._torch
        sample = torch.zeros((2, *self.sample_shape), dtype=torch.float32)
        self.module.eval()
        try:
            with torch.no_grad():
                out = self.module.float()(sample)
        except Exception as exc:
            raise ConfigError(f"model {self.model_name!r} does not take inputs of shape "
                              f"(batch, {', '.join(map(str, self.sample_shape))}): "
                              f"{_first_line(exc)}", key=f"{_KEY}.model") from None
        expected = ((2, self.n_classes) if self.n_classes is not None else (2,))
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        ok = shape == expected or (self.n_classes is None and shape == (2, 1))
        if not ok:
            raise ConfigError(f"model {self.model_name!r} gives outputs of shape {shape} for "
                              f"inputs (2, {', '.join(map(str, self.sample_shape))}); the "
                              f"{self.loss_name} loss on this data needs {expected}",
                              key=f"{_KEY}.model")

    def init(self, seed: int | None = None, *, dtype=np.float64) -> np.ndarray:
        """Starting point: the factory's own initialisation under ``torch.manual_seed(seed)``.

        Returns
        -------
        numpy.ndarray
            Shape ``(dim,)``, in ``dtype``.
        """
        torch = self._torch
        seed = 0 if seed is None else int(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self._new_module()
        torch.manual_seed(seed)
        flat = [p.detach().to(torch.float64).reshape(-1) for p in module.parameters()]
        return torch.cat(flat).numpy().astype(dtype)

    def for_worker(self, worker: int) -> _WorkerProblem:
        """The problem as ``worker`` trains it: training mode, its own BatchNorm statistics."""
        return _WorkerProblem(self, worker)

    # -- the computation --------------------------------------------------------------------
    def _prepare(self, x, A, y):
        torch = self._torch
        x = np.asarray(x)
        if x.ndim != 1 or x.shape[0] != self.dim or x.dtype not in (np.float32, np.float64):
            raise ValueError(f"x must be float32 or float64 of shape ({self.dim},), got "
                             f"{x.dtype} {x.shape}")
        A = np.asarray(A)
        if A.ndim != 2 or A.shape[1] != self.data_dim or A.shape[0] < 1:
            raise ValueError(f"A must have shape (m >= 1, {self.data_dim}), got {A.shape}")
        self._ensure_dtype(x.dtype)
        if not x.flags.writeable:
            x = x.copy()
        flat = torch.from_numpy(x)
        for (module, key), (start, stop), shape in zip(self._slots(), self.layers,
                                                        self._shapes, strict=True):
            module._parameters[key].data = flat[start:stop].view(shape)
        inputs = torch.from_numpy(np.ascontiguousarray(A, dtype=x.dtype))
        return x, inputs.view((A.shape[0], *self.sample_shape)), np.asarray(y)

    def _ensure_dtype(self, dtype):
        """Run the module (and keep the BatchNorm statistics) in ``dtype``."""
        dtype = np.dtype(dtype)
        # np.dtype compares equal to None (None means float64): test identity first.
        if self._dtype is not None and self._dtype == dtype:
            return
        torch_dtype = self._torch.float64 if dtype == np.float64 else self._torch.float32
        self.module.to(torch_dtype)
        self._initial_buffers = {n: b.to(torch_dtype) if b.is_floating_point() else b
                                 for n, b in self._initial_buffers.items()}
        self._worker_buffers.clear()
        self._dtype = dtype

    def _slots(self):
        if not hasattr(self, "_slot_list"):
            self._slot_list = []
            for name in self.parameter_names:
                owner, _, key = name.rpartition(".")
                self._slot_list.append((self.module.get_submodule(owner), key))
        return self._slot_list

    def _use_buffers(self, buffers: dict):
        for name, tensor in buffers.items():
            owner, _, key = name.rpartition(".")
            self.module.get_submodule(owner)._buffers[key] = tensor

    def _eval_buffers(self, x) -> dict:
        """The mean of the workers' BatchNorm statistics (the initial ones before any)."""
        self._ensure_dtype(np.asarray(x).dtype)
        if not self._worker_buffers:
            return self._initial_buffers
        mean = {}
        for name, initial in self._initial_buffers.items():
            values = [b[name] for b in self._worker_buffers.values()]
            mean[name] = (sum(values[1:], values[0].clone()) / len(values)
                          if initial.is_floating_point() else values[0])
        return mean

    def _loss_tensor(self, out, labels):
        torch = self._torch
        functional = torch.nn.functional
        if self.loss_name == "cross-entropy":
            return functional.cross_entropy(out, torch.from_numpy(labels.astype(np.int64)),
                                            reduction="sum")
        if self.n_classes is not None:
            target = functional.one_hot(torch.from_numpy(labels.astype(np.int64)),
                                        self.n_classes).to(out.dtype)
            return functional.mse_loss(out, target, reduction="sum") / self.n_classes
        return functional.mse_loss(out.reshape(-1), torch.from_numpy(labels).to(out.dtype),
                                   reduction="sum")

    def _run(self, x, A, y, out, *, train: bool, buffers: dict):
        """Sum over rows of the loss and, when ``out`` is given, of its gradient."""
        torch = self._torch
        x, inputs, labels = self._prepare(x, A, y)
        self._use_buffers(buffers)
        self.module.train(train)
        if out is None:
            with torch.no_grad():
                return float(self._loss_tensor(self.module(inputs), labels))
        grad = torch.from_numpy(out)
        for (module, key), (start, stop), shape in zip(self._slots(), self.layers,
                                                        self._shapes, strict=True):
            module._parameters[key].grad = grad[start:stop].view(shape)
        with torch.enable_grad():
            total = self._loss_tensor(self.module(inputs), labels)
            total.backward()
        return float(total.detach())

    def _chunks(self, m):
        step = self.eval_batch
        return [slice(i, min(m, i + step)) for i in range(0, m, step)]

    def loss_and_grad(self, x, A, y, out=None):
        """Mean loss on ``(A, y)`` and its gradient (eval mode, in chunks).

        Returns
        -------
        (float, numpy.ndarray)
        """
        x = np.asarray(x)
        if out is None:
            out = np.empty_like(x)
        out[...] = 0
        buffers = self._eval_buffers(x)
        m = np.shape(A)[0]
        total = 0.0
        for rows in self._chunks(m):
            total += self._run(x, A[rows], np.asarray(y)[rows], out, train=False,
                               buffers=buffers)
        out /= m
        return total / m, out

    def loss(self, x, A, y) -> float:
        """Mean loss on ``(A, y)`` (eval mode, in chunks)."""
        buffers = self._eval_buffers(x)
        m = np.shape(A)[0]
        return sum(self._run(x, A[rows], np.asarray(y)[rows], None, train=False,
                             buffers=buffers) for rows in self._chunks(m)) / m

    def grad(self, x, A, y, out=None) -> np.ndarray:
        """Gradient of :meth:`loss`."""
        return self.loss_and_grad(x, A, y, out)[1]

    def accuracy(self, x, A, y) -> float:
        """Fraction classified correctly (NaN for regression data or no rows)."""
        torch = self._torch
        if self.n_classes is None or np.shape(A)[0] == 0:
            return float("nan")
        buffers = self._eval_buffers(x)
        correct = 0
        for rows in self._chunks(np.shape(A)[0]):
            _, inputs, labels = self._prepare(x, A[rows], np.asarray(y)[rows])
            self._use_buffers(buffers)
            self.module.eval()
            with torch.no_grad():
                predicted = self.module(inputs).argmax(dim=1).numpy()
            correct += int(np.sum(predicted == labels))
        return correct / np.shape(A)[0]

    def smoothness(self, A) -> None:
        """None: a deep network has no global gradient Lipschitz constant."""
        return None

    def _worker_gradient(self, worker, x, A, y, out):
        self._ensure_dtype(np.asarray(x).dtype)
        buffers = self._worker_buffers.get(worker)
        if buffers is None:
            buffers = self._worker_buffers[worker] = {
                n: b.clone() for n, b in self._initial_buffers.items()}
        out[...] = 0
        m = np.shape(A)[0]
        total = self._run(x, A, y, out, train=True, buffers=buffers)
        out /= m
        return total / m, out


class _WorkerProblem:
    """One worker's training view of a :class:`TorchProblem` (its own buffers)."""

    def __init__(self, problem: TorchProblem, worker: int):
        self.problem = problem
        self.worker = worker

    def loss_and_grad(self, x, A, y, out=None):
        out = np.empty_like(np.asarray(x)) if out is None else out
        return self.problem._worker_gradient(self.worker, x, A, y, out)

    def grad(self, x, A, y, out=None):
        return self.loss_and_grad(x, A, y, out)[1]


def _positive(params, key, default):
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"must be an integer >= 1, got {value!r}", key=f"{_KEY}.{key}")
    return value


def make_torch_problem(params: dict, *, data_dim: int, n_classes: int | None,
                       sample_shape=None, base_dir=None) -> TorchProblem:
    """Build the ``torch`` problem from a scenario's ``problem.params``.

    Parameters
    ----------
    params : dict
        ``model`` (required), ``loss`` (``cross-entropy`` or ``mse``; default cross-entropy
        for classification data, mse otherwise), ``model_args`` (keyword arguments of the
        factory), ``threads`` (1), ``eval_batch`` (1000), ``flatten`` (false: image data
        reaches the model as ``(batch, C, H, W)``; true: as ``(batch, p)``).
    data_dim : int
        Features per row.
    n_classes : int or None
        Classes (None: regression data).
    sample_shape : tuple of int, optional
        The image shape of a row (None: flat).
    base_dir : str or Path, optional
        Folder a ``file.py:factory`` path is relative to (default: the working directory).

    Raises
    ------
    ConfigError
        PyTorch missing, unknown key, a model that does not resolve, a factory that fails
        or does not return a module, a module that does not take the data's shape or
        gives the wrong output shape (``key="problem.params.<key>"``).
    """
    import_torch()
    for key in params:
        if key not in _PARAMS:
            raise ConfigError(f"problem 'torch' takes no parameter {key!r}; allowed: "
                              f"{', '.join(_PARAMS)}", key=f"{_KEY}.{key}")
    if "model" not in params:
        raise ConfigError("the torch problem needs a model (a built-in name, "
                          "'package.module:factory' or 'path/file.py:factory')",
                          key=f"{_KEY}.model")
    loss = params.get("loss", "cross-entropy" if n_classes is not None else "mse")
    if loss not in _LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; allowed: {', '.join(_LOSSES)}",
                          key=f"{_KEY}.loss")
    if loss == "cross-entropy" and n_classes is None:
        raise ConfigError("cross-entropy needs classification data; use loss: mse",
                          key=f"{_KEY}.loss")
    model_args = params.get("model_args", {})
    if not isinstance(model_args, dict):
        raise ConfigError(f"must be a mapping of keyword arguments, got {model_args!r}",
                          key=f"{_KEY}.model_args")
    flatten = params.get("flatten", False)
    if not isinstance(flatten, bool):
        raise ConfigError(f"must be true or false, got {flatten!r}", key=f"{_KEY}.flatten")
    threads = _positive(params, "threads", 1)
    eval_batch = _positive(params, "eval_batch", 1000)
    shape = (int(data_dim),) if (sample_shape is None or flatten) else tuple(sample_shape)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    factory, builtin = _resolve_factory(params["model"], base)
    if builtin:
        kwargs = {"in_shape": shape, "n_classes": n_classes if n_classes is not None else 1}
        accepted = inspect.signature(factory).parameters
        for key in model_args:
            if key not in accepted or key in kwargs:
                raise ConfigError(f"model {params['model']!r} takes no argument {key!r}; "
                                  f"allowed: "
                                  f"{', '.join(k for k in accepted if k not in kwargs)}",
                                  key=f"{_KEY}.model_args.{key}")
        kwargs.update(model_args)
    else:
        kwargs = dict(model_args)

    def build():
        return factory(**kwargs)

    return TorchProblem(build, data_dim, n_classes, shape, loss=loss, threads=threads,
                        eval_batch=eval_batch, name=str(params["model"]))
