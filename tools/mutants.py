"""Mutation testing of mixsim's core modules: plant one small bug at a time, see if a test fails.

Why a script of our own: mutmut 3 swaps every function for a Python trampoline, which a
numba kernel cannot call; cosmic-ray edits the file in the checkout and has no sampling.
This script never touches the checkout: it copies the package to a temporary directory,
writes one mutant of one module there, and runs that module's test files with the copy
first on ``PYTHONPATH`` and a fresh ``NUMBA_CACHE_DIR``, so numba compiles the mutant (the
cache is keyed to the package sources anyway, see ``mixsim/_numba.py``). Modules without
kernels (``engine.py``, ``topology.py``, ``optim/compressors.py``) cannot change compiled
code, so their mutants share one warm cache (see ``_pin_digest``): several times faster.

Mutations (one per run, on the AST, inside functions and module-level constants; docstrings,
strings and decorators are left alone): arithmetic operator swapped (``+``/``-``, ``*``/``/``,
``//``/``/``, ``%``/``//``, ``**``/``*``), comparison swapped (``<``/``<=``, ``>``/``>=``,
``==``/``!=``, ``is``/``is not``, ``in``/``not in``), ``and``/``or`` swapped, ``not`` and
unary minus dropped, a number changed (``0`` -> ``1``, ``1`` -> ``2``, ``n`` -> ``n + 1``,
floats ``x`` -> ``2x + 1``), ``True``/``False`` flipped, ``break``/``continue`` swapped.

A mutant is *killed* when the tests fail (or time out), *survives* when they pass. Run::

    python tools/mutants.py                      # every module in MODULES, sampled
    python tools/mutants.py engine --sample 0    # one module, every mutant
    python tools/mutants.py --list engine        # only list the mutants

Results are printed and written as JSON to ``--out`` (default ``mutants.json``).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mixsim"

#: Module (path under mixsim/) -> the test files that are meant to catch its bugs.
MODULES = {
    "engine": ("engine.py", ["tests/test_engine.py", "tests/test_trace.py"]),
    "topology": ("topology.py", ["tests/test_topology.py"]),
    "kernels": ("optim/_kernels.py", ["tests/test_optim_kernels.py",
                                      "tests/test_compressors.py", "tests/test_memory.py"]),
    "compressors": ("optim/compressors.py", ["tests/test_compressors.py"]),
    "operators": ("operators.py", ["tests/test_operators.py", "tests/test_passages.py",
                                   "tests/test_probes.py"]),
    "passages": ("_passages.py", ["tests/test_passages.py", "tests/test_probes.py"]),
}

_SWAPS = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.And: ast.Or, ast.Or: ast.And,
    ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd, ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
}


def _skipped(tree: ast.Module) -> set[int]:
    """ids of nodes not to mutate: docstrings, decorators, annotations, f-strings."""
    skip = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            skip.update(id(n) for n in ast.walk(body[0]))
        for deco in getattr(node, "decorator_list", ()):
            skip.update(id(n) for n in ast.walk(deco))
        for name in ("annotation", "returns"):
            if getattr(node, name, None) is not None:
                skip.update(id(n) for n in ast.walk(getattr(node, name)))
        if isinstance(node, ast.JoinedStr):
            skip.update(id(n) for n in ast.walk(node))
    return skip


def _points(tree: ast.Module):
    """Every (node index, kind, description) that can be mutated, in source order."""
    skip = _skipped(tree)
    nodes = [n for n in ast.walk(tree) if id(n) not in skip]
    for index, node in enumerate(nodes):
        line = getattr(node, "lineno", None)
        if isinstance(node, ast.BinOp | ast.AugAssign | ast.BoolOp) and type(node.op) in _SWAPS:
            yield index, 0, line, f"{type(node.op).__name__} -> {_SWAPS[type(node.op)].__name__}"
        elif isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                yield index, k, line, f"{type(op).__name__} -> {_SWAPS[type(op)].__name__}"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
            yield index, 0, line, f"drop {type(node.op).__name__}"
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
            yield index, 0, line, f"{node.value!r} -> {_new_constant(node.value)!r}"
        elif isinstance(node, ast.Break | ast.Continue):
            yield index, 0, line, f"{type(node).__name__} swapped"


def _new_constant(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return 2.0 * value + 1.0


class _Mutate(ast.NodeTransformer):
    def __init__(self, target, k):
        self.target, self.k = target, k

    def visit(self, node):
        node = self.generic_visit(node)
        if node is not self.target:
            return node
        if isinstance(node, ast.Compare):
            node.ops[self.k] = _SWAPS[type(node.ops[self.k])]()
        elif isinstance(node, ast.BinOp | ast.AugAssign | ast.BoolOp):
            node.op = _SWAPS[type(node.op)]()
        elif isinstance(node, ast.UnaryOp):
            return node.operand
        elif isinstance(node, ast.Constant):
            return ast.copy_location(ast.Constant(_new_constant(node.value)), node)
        elif isinstance(node, ast.Break):
            return ast.copy_location(ast.Continue(), node)
        elif isinstance(node, ast.Continue):
            return ast.copy_location(ast.Break(), node)
        return node


def mutants(source: str):
    """All mutants of ``source``: (line, description, mutated source)."""
    points = list(_points(ast.parse(source)))
    for index, k, line, what in points:
        tree = ast.parse(source)
        skip = _skipped(tree)
        node = [n for n in ast.walk(tree) if id(n) not in skip][index]
        mutated = ast.fix_missing_locations(_Mutate(node, k).visit(tree))
        yield line, what, ast.unparse(mutated)


def _run_tests(site: Path, tests: list[str], timeout: float,
               cache: Path | None = None) -> tuple[str, float]:
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    env.pop("NUMBA_DISABLE_JIT", None)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as fresh:
        env["NUMBA_CACHE_DIR"] = str(cache or fresh)
        try:
            done = subprocess.run(
                [str(Path(sys.executable).parent / "pytest"), "-x", "-q", "-p",
                 "no:cacheprovider", *tests],
                cwd=ROOT, env=env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.perf_counter() - start
    # 1: a test failed; 2: collection failed (the mutant does not import); negative: the
    # process died of a signal (a kernel writing out of bounds); 5: no tests.
    status = {0: "survived", 1: "killed", 2: "killed"}.get(done.returncode, "error")
    if done.returncode < 0:
        status = "killed"
    return status, time.perf_counter() - start


def _pin_digest(package: Path) -> Path:
    """Keep the copy's kernel cache valid across mutants of a module without kernels.

    A module without ``njit`` cannot change compiled code (kernels call only kernels), so
    its mutants may share one warm cache: the copy's source digest is frozen at the value of
    the unmutated sources. Returns the cache directory, inside the copy's parent.
    """
    numba_module = package / "_numba.py"
    text = numba_module.read_text()
    line = "_DIGEST = source_digest(Path(__file__).resolve().parent)"
    if line not in text:
        raise SystemExit(f"{numba_module}: no line {line!r} to pin")
    digest = source_digest_of(package)
    numba_module.write_text(text.replace(line, f"_DIGEST = bytes.fromhex({digest.hex()!r})"))
    cache = package.parent / "numba-cache"
    cache.mkdir()
    return cache


def source_digest_of(package: Path) -> bytes:
    """mixsim's own digest of ``package`` (the function of the copy, not of the checkout)."""
    spec = importlib.util.spec_from_file_location("_numba_copy", package / "_numba.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.source_digest(package)


def run_module(name: str, sample: int, seed: int, log, only=None) -> dict:
    relative, tests = MODULES[name]
    source = (PACKAGE / relative).read_text()
    every = list(mutants(source))
    chosen = list(range(len(every)))
    if 0 < sample < len(every):
        chosen = sorted(random.Random(seed).sample(chosen, sample))
    if only is not None:
        chosen = [i for i in chosen if i in only]
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        shutil.copytree(PACKAGE, site / "mixsim", ignore=shutil.ignore_patterns("__pycache__"))
        # The protocol catalog, found beside the package as in a source checkout.
        shutil.copytree(ROOT / "protocols", site / "protocols")
        target = site / "mixsim" / relative
        cache = None
        if "njit" not in source:
            cache = _pin_digest(site / "mixsim")
        status, took = _run_tests(site, tests, timeout=3600, cache=cache)
        if status != "survived":
            raise SystemExit(f"{name}: the tests fail on the unmutated copy ({status})")
        timeout = 3 * took + 30
        log(f"{name}: {len(every)} mutants, running {len(chosen)}; clean run {took:.0f} s")
        results = []
        for i in chosen:
            line, what, text = every[i]
            target.write_text(text)
            status, took = _run_tests(site, tests, timeout, cache)
            results.append({"index": i, "line": line, "mutation": what, "status": status,
                            "seconds": round(took, 1)})
            log(f"  {name} #{i} line {line} {what}: {status} ({took:.0f} s)")
        target.write_text(source)
    killed = sum(r["status"] in ("killed", "timeout") for r in results)
    return {"module": relative, "tests": tests, "mutants": len(every), "run": len(results),
            "killed": killed, "score": killed / max(len(results), 1), "results": results}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"any of {', '.join(MODULES)} (default all)")
    parser.add_argument("--sample", type=int, default=40,
                        help="mutants drawn per module (0: all); default 40")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--only", type=lambda text: {int(i) for i in text.split(",")},
                        help="run only these mutant numbers of the sample (e.g. the "
                             "survivors of a previous run: 12,40)")
    parser.add_argument("--out", type=Path, default=Path("mutants.json"))
    args = parser.parse_args(argv)
    names = args.modules or list(MODULES)
    unknown = sorted(set(names) - set(MODULES))
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}; allowed: {', '.join(MODULES)}")
    if args.list:
        for name in names:
            for i, (line, what, _) in enumerate(mutants((PACKAGE / MODULES[name][0]).read_text())):
                print(f"{name} #{i} line {line}: {what}")
        return
    report = {}
    for name in names:
        report[name] = run_module(name, args.sample, args.seed,
                                  lambda text: print(text, flush=True), args.only)
        args.out.write_text(json.dumps(report, indent=1))
    for result in report.values():
        print(f"{result['module']}: {result['killed']}/{result['run']} killed "
              f"({100 * result['score']:.0f}%) of {result['mutants']} mutants")
        for r in result["results"]:
            if r["status"] not in ("killed", "timeout"):
                print(f"  {r['status']}: #{r['index']} line {r['line']} {r['mutation']}")


if __name__ == "__main__":
    main()
