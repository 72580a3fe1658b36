"""numba's on-disk cache never runs a kernel compiled from other sources than the ones installed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mixsim
from mixsim import _numba

PACKAGE = Path(mixsim.__file__).resolve().parent

# Two probe modules added to a copy of the package: a kernel in one module that calls a
# kernel of another, as _passages calls the operator kernels.
CALLEE = "from mixsim._numba import njit\n\n\n@njit\ndef value(x):\n    return x + {}\n"
CALLER = ("from mixsim._numba import njit\nfrom mixsim._probe_callee import value\n\n\n"
          "@njit\ndef twice(x):\n    return 2.0 * value(x)\n")
RUN = "from mixsim._probe_caller import twice; print(twice(1.0))"


def _copy(tmp_path):
    root = tmp_path / "site"
    shutil.copytree(PACKAGE, root / "mixsim", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "mixsim" / "_probe_caller.py").write_text(CALLER)
    return root


def _twice_one(root, cache_dir):
    env = dict(os.environ, PYTHONPATH=str(root), NUMBA_CACHE_DIR=str(cache_dir))
    env.pop("NUMBA_DISABLE_JIT", None)
    out = subprocess.run([sys.executable, "-c", RUN], env=env, cwd=root, check=True,
                         capture_output=True, text=True)
    return float(out.stdout)


def test_a_changed_callee_recompiles_its_callers(tmp_path):
    root = _copy(tmp_path)
    callee = root / "mixsim" / "_probe_callee.py"
    cache = tmp_path / "cache"
    results = []
    for added in (1.0, 2.0, 1.0):  # edit the callee, then revert the edit
        callee.write_text(CALLEE.format(added))
        results.append(_twice_one(root, cache))
    assert results == [4.0, 6.0, 4.0]
    assert any(cache.rglob("*.nbi")), "the kernels were not cached on disk"


def test_the_digest_follows_every_source_file(tmp_path):
    root = tmp_path / "mixsim"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    before = _numba.source_digest(root)
    assert before == _numba._DIGEST
    operators = root / "operators.py"
    text = operators.read_text()
    operators.write_text(text + "\n")
    assert _numba.source_digest(root) != before
    operators.write_text(text)
    assert _numba.source_digest(root) == before
    (root / "optim" / "extra.py").write_text("")
    assert _numba.source_digest(root) != before
