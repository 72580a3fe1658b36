"""Mutation testing of mixsim's core modules: plant one small bug at a time, see if a test fails.

Why a script of our own: mutmut 3 swaps every function for a Python trampoline, which a
numba kernel cannot call; cosmic-ray edits the file in the checkout and has no sampling.
This script never touches the checkout: it copies the package to a temporary directory,
writes one mutant of one module there, and runs that module's test files with the copy
first on ``PYTHONPATH``, so the tests import the mutant as they import the package.

numba: the clean run fills one numba cache (``NUMBA_CACHE_DIR``), with the copy's source
digest pinned at the value of the unmutated sources (``_pin_digest``; mixsim keys cached
kernels to it, see ``mixsim/_numba.py``). Then, per mutant (see :func:`cache_plan`):

* a mutant in a plain Python function that does not run at import (a kernel can call only
  kernels; such a function reaches them only through arguments) shares that warm cache;
* a mutant in a kernel, or in a module constant that kernels read, runs on a copy of the
  warm cache less the kernels whose compiled code it may change: the mutated kernel and
  every kernel that names it, or the constant, directly or through other kernels (numba
  links a callee's code into its caller's). Only those are compiled again;
* anything else (a function that runs at import or builds kernels, module-level code
  binding no name) runs with an empty cache: every kernel compiled from the mutant.

Names are matched by spelling across the package, so every doubt falls on the side of
compiling more. ``--numba-opt`` sets ``NUMBA_OPT`` (numba's default unless given).

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
from typing import NamedTuple

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
    """All mutants of ``source``: (line, description, mutated source, function), where
    function is the qualified name of the top-level function or method whose body holds
    the mutation (None: module-level code, a class body, a default value)."""
    tree = ast.parse(source)
    where = _functions_of(tree)
    skip = _skipped(tree)
    nodes = [n for n in ast.walk(tree) if id(n) not in skip]
    located = [where.get(id(nodes[index])) for index, *_ in _points(tree)]
    for (index, k, line, what), function in zip(_points(ast.parse(source)), located, strict=True):
        tree = ast.parse(source)
        skip = _skipped(tree)
        node = [n for n in ast.walk(tree) if id(n) not in skip][index]
        mutated = ast.fix_missing_locations(_Mutate(node, k).visit(tree))
        yield line, what, ast.unparse(mutated), function


# ---------------------------------------------------------------- which mutants need a fresh cache

#: Names that make compiled code of the functions they are given (as decorators or calls).
#: ``numba`` itself stands for any of its attributes.
_COMPILERS = frozenset({
    "njit", "njit_inline", "jit", "intrinsic", "overload", "overload_method",
    "overload_attribute", "overload_classmethod", "register_jitable", "generated_jit",
    "vectorize", "guvectorize", "cfunc", "stencil", "jitclass", "lower_builtin",
    "type_callable", "infer_global", "numba"})
#: Decorators that leave a function plain Python (matched by their last name).
_PLAIN_DECORATORS = frozenset({
    "property", "staticmethod", "classmethod", "setter", "getter", "deleter",
    "cached_property", "cache", "lru_cache", "wraps", "contextmanager", "abstractmethod",
    "override", "dataclass", "field_validator", "model_validator"})


def _read(*nodes) -> set[str]:
    """Every name and attribute name under ``nodes`` (a superset of what the code reads)."""
    out = set()
    for root in nodes:
        for n in ast.walk(root):
            if isinstance(n, ast.Name):
                out.add(n.id)
            elif isinstance(n, ast.Attribute):
                out.add(n.attr)
    return out


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp,
           ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _globals_read(node) -> set[str]:
    """What a function's code may read from outside: :func:`_read` of its body and default
    values less its own local variables (arguments and names it binds, not counting
    nested scopes, whose names all count as read)."""
    local = {a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                             node.args.vararg, node.args.kwarg) if a is not None}
    declared = set()
    todo = list(node.body)
    while todo:
        n = todo.pop()
        if isinstance(n, ast.Global | ast.Nonlocal):
            declared.update(n.names)
        elif isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            local.add(n.id)
        elif isinstance(n, ast.alias):
            local.add((n.asname or n.name).split(".")[0])
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            local.add(n.name)
        if not isinstance(n, _SCOPES):
            todo.extend(ast.iter_child_nodes(n))
    read = _read(*node.body, *node.args.defaults, *filter(None, node.args.kw_defaults))
    # Attribute names are never local; names of nested scopes may be.
    attributes = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    nested = set()
    for n in ast.walk(node):
        if n is not node and isinstance(n, _SCOPES):
            nested |= _read(n)
    return (read - (local - declared)) | attributes | nested


def _last_name(node) -> str:
    while isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _defs(body, prefix=""):
    """(qualified name, def node, enclosing class nodes) of the functions and methods of a
    module or class body, classes walked into."""
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + stmt.name, stmt, ()
        elif isinstance(stmt, ast.ClassDef):
            for name, node, classes in _defs(stmt.body, f"{prefix}{stmt.name}."):
                yield name, node, (stmt, *classes)


def _functions_of(tree: ast.Module) -> dict[int, str]:
    """id of every node inside the body of a function or method -> its qualified name."""
    where = {}
    for name, node, _ in _defs(tree.body):
        for stmt in node.body:
            where.update((id(n), name) for n in ast.walk(stmt))
    return where


def _statements(body):
    """The statements of a module or class body other than definitions, classes walked
    into (the code run at import)."""
    for stmt in body:
        if isinstance(stmt, ast.ClassDef):
            yield from _statements(stmt.body)
        elif not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            yield stmt


def _compiled(node, classes) -> bool:
    """Whether a function is, or may make, compiled code: a decorator that is not plain
    Python (on it or on its class), or a compiler named in its body."""
    decorators = [*node.decorator_list, *(d for c in classes for d in c.decorator_list)]
    if any(_last_name(d) not in _PLAIN_DECORATORS for d in decorators):
        return True
    return bool(_read(*node.body) & _COMPILERS)


#: Run in a fresh interpreter: import every module of the package with a profiler on and
#: print the (file, first line) of every function that ran.
_TRACE_IMPORTS = """
import importlib, json, pkgutil, sys, threading
ran = set()
def profile(frame, event, arg):
    if event == "call":
        ran.add((frame.f_code.co_filename, frame.f_code.co_firstlineno))
sys.setprofile(profile)
threading.setprofile(profile)
import mixsim
failed = []
for info in pkgutil.walk_packages(mixsim.__path__, "mixsim."):
    if not info.name.endswith("__main__"):
        try:
            importlib.import_module(info.name)
        except Exception:
            failed.append(info.name)
sys.setprofile(None)
print(json.dumps({"ran": sorted(ran), "failed": failed}))
"""


def _run_at_import(package: Path) -> tuple[set[tuple[str, int]], list[str]]:
    """(module path under ``package``, first line) of every function run while every module
    of the package is imported, and the modules that failed to import."""
    env = dict(os.environ, PYTHONPATH=str(package.parent), NUMBA_DISABLE_JIT="0")
    done = subprocess.run([sys.executable, "-c", _TRACE_IMPORTS], env=env, cwd=package.parent,
                          capture_output=True, text=True, check=True)
    found = json.loads(done.stdout.splitlines()[-1])
    ran = set()
    for filename, line in found["ran"]:
        path = Path(filename).resolve()
        if path.is_relative_to(package.resolve()):
            ran.add((path.relative_to(package.resolve()).as_posix(), line))
    return ran, [name.removeprefix("mixsim.").replace(".", "/") + ".py"
                 for name in found["failed"]]


def cache_needs(package: Path, relative: str) -> Needs:
    """What mutants of module ``relative`` may change compiled code, judged on the whole
    package (every doubt on the side of compiling more); see :class:`Needs`.

    A kernel is a function with a decorator other than plain Python ones (``@njit``,
    ``@njit_inline``, ``@intrinsic``, ...) or one that names a compiler (it may build
    kernels). Besides kernels, a function needs an empty cache if it runs while the
    package is imported (traced in a fresh interpreter: it may compute a module constant
    that a kernel reads), or assigns a global that a kernel or import-time code names
    (``global``, or an attribute of an imported name: ``_kernels._SMALL = 8``). Any other
    function runs only after import, and what it does reaches a kernel as arguments only
    (their types pick a signature, compiled from the unmutated kernel), never as compiled
    code.
    """
    ran, failed = _run_at_import(package)
    edges: dict[str, set[str]] = {}  # a name -> the statements (or names) binding it
    reads: dict[str, set[str]] = {}  # a statement -> the names in it
    named: set[str] = set()  # what kernels and import-time functions name
    trees: dict[str, ast.Module] = {}
    imports: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package).as_posix()
        tree = trees[module] = ast.parse(path.read_text())
        imports[module] = {(alias.asname or alias.name).split(".")[0] for stmt in ast.walk(tree)
                           if isinstance(stmt, ast.ImportFrom | ast.Import)
                           for alias in stmt.names}
        for stmt in _statements(tree.body):
            if isinstance(stmt, ast.ImportFrom | ast.Import):
                for alias in stmt.names:
                    edges.setdefault(alias.asname or alias.name, set()).add(alias.name)
            else:
                key = f"{module}:{stmt.lineno}"
                reads[key] = _read(stmt)
                for name in _assigned(stmt):
                    edges.setdefault(name, set()).add(key)
        for _, node, classes in _defs(tree.body):
            if _compiled(node, classes) or _ran(node, module, ran):
                named |= _globals_read(node)
    reached = set()
    todo = list(named)
    for item in todo:
        if item not in reached:
            reached.add(item)
            todo.extend(edges.get(item, ()))
            todo.extend(reads.get(item, ()))
    import_named = set()
    kernels_of_package = []  # (module file stem, qualified name, the names it depends on)
    for module, tree in trees.items():
        for qualname, node, classes in _defs(tree.body):
            if _ran(node, module, ran):
                import_named |= _globals_read(node)
            if _compiled(node, classes):
                depends = _globals_read(node) | _read(*node.decorator_list)
                params = {a.arg for a in (*node.args.args, *node.args.kwonlyargs)}
                if any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                       and n.func.id in params for n in ast.walk(node)):
                    depends.add("*")  # calls a function it is given: any kernel
                kernels_of_package.append((Path(module).stem, qualname, depends))
    fresh = {}
    for qualname, node, classes in _defs(trees[relative].body):
        writes = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
                  and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name)
                  and n.value.id in imports[relative]}
        writes.update(*(n.names for n in ast.walk(node) if isinstance(n, ast.Global)))
        if _compiled(node, classes) and not node.decorator_list:
            fresh[qualname] = "builds kernels"  # their cache files are not named after it
        elif _compiled(node, classes):
            fresh[qualname] = "a kernel"
        elif failed:
            fresh[qualname] = f"{failed[0]} did not import in the trace"
        elif _ran(node, relative, ran):
            fresh[qualname] = "runs at import"
        elif writes & reached:
            fresh[qualname] = f"assigns {sorted(writes & reached)[0]}"
    kernels = any(_compiled(node, classes) for _, node, classes in _defs(trees[relative].body))
    return Needs(relative, fresh, reached, kernels, kernels_of_package, edges, reads,
                 import_named)


class Needs(NamedTuple):
    """What :func:`cache_needs` found."""

    #: The module (path under the package).
    module: str
    #: Its functions and methods (qualified names) that are kernels or need an empty
    #: cache, with the reason.
    fresh: dict[str, str]
    #: Every name a kernel or an import-time function names, and what the module-level
    #: statements binding those name in turn (by spelling, across the package).
    reached: set[str]
    #: Whether the module defines kernels.
    kernels: bool
    #: Every kernel of the package: (file stem, qualified name, the names it depends on:
    #: the globals it names and its decorators; "*" if it calls a function it is given).
    kernels_of_package: list[tuple[str, str, set[str]]]
    #: A name -> the module-level statements ("module:line") binding it, or the names it
    #: is an import alias of.
    edges: dict[str, set[str]]
    #: A module-level statement -> the names in it.
    reads: dict[str, set[str]]
    #: The names that functions run at import name.
    import_named: set[str]


def _stale_kernels(needs: Needs, changed: set[str]) -> set[tuple[str, str]]:
    """(file stem, qualified name) of every kernel whose compiled code may depend on the
    names in ``changed``: the kernels naming one of them, and the kernels naming those
    (numba links a callee's code into its caller's cached code), to a fixed point."""
    aliases: dict[str, set[str]] = {}  # a name -> the import aliases bound to it
    for name, targets in needs.edges.items():
        for target in targets:
            if target not in needs.reads:
                aliases.setdefault(target, set()).add(name)
    names = set(changed)
    todo = list(changed)
    for name in todo:
        for alias in aliases.get(name, ()):
            if alias not in names:
                names.add(alias)
                todo.append(alias)
    stale: set[tuple[str, str]] = set()
    grew = True
    while grew:
        grew = False
        for stem, qualname, depends in needs.kernels_of_package:
            if (stem, qualname) not in stale and (depends & names or "*" in depends):
                stale.add((stem, qualname))
                grew = True
                todo = [qualname.rsplit(".", 1)[-1]]
                for name in todo:
                    if name not in names:
                        names.add(name)
                        todo.extend(aliases.get(name, ()))
    return stale


def _derived(needs: Needs, names: set[str]) -> set[str]:
    """``names`` and every name bound by a module-level statement that names one of them,
    to a fixed point (``_SMALL = 8 * _SAMPLE`` derives from ``_SAMPLE``)."""
    out = set(names)
    grew = True
    while grew:
        grew = False
        for key, read in needs.reads.items():
            if read & out:
                for name, targets in needs.edges.items():
                    if key in targets and name not in out:
                        out.add(name)
                        grew = True
    return out


def _ran(node, module: str, ran: set[tuple[str, int]]) -> bool:
    """Whether the function ``node`` of ``module``, or a function nested in it, ran."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return any(m == module and first <= line <= node.end_lineno for m, line in ran)


def _assigned(stmt) -> set[str]:
    """Names a module-level statement binds: targets, definitions, class attributes (not
    the variables of comprehensions, lambdas or function bodies)."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
        return {stmt.name}  # a mutant in a default value or a decorator
    out = set()
    todo = [stmt]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            out.add(n.id)
        elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(n.name)
        if n is stmt or not isinstance(n, _SCOPES) or isinstance(n, ast.ClassDef):
            todo.extend(ast.iter_child_nodes(n))
    return out


def cache_plan(source: str, line: int, function: str | None, needs: Needs):
    """How to run the mutant at ``line`` (in ``function``, see :func:`mutants`):

    * ``("warm", "")``: it cannot change compiled code; the shared warm cache;
    * ``("partial", stale)``: a copy of the warm cache less the kernels in ``stale`` (file
      stem, qualified name), the only ones whose compiled code it may change (a kernel
      mutated, a module constant changed: see :func:`_stale_kernels`);
    * ``("fresh", why)``: an empty cache, every kernel compiled from the mutant.
    """
    if function is None:
        stmt = next((stmt for stmt in ast.parse(source).body
                     if stmt.lineno <= line <= stmt.end_lineno), None)
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            function = stmt.name  # in a default value or a decorator
        elif stmt is None or not _assigned(stmt):
            return "fresh", "module-level code binding no name"
        else:
            names = _derived(needs, _assigned(stmt))
            if names & needs.import_named:
                return "fresh", "a constant that code run at import names"
            if needs.kernels or names & needs.reached:
                return "partial", _stale_kernels(needs, names)
            return "warm", ""
    why = needs.fresh.get(function, "")
    if why == "a kernel":
        return "partial", _stale_kernels(needs, {function.rsplit(".", 1)[-1]}) | {
            (Path(needs.module).stem, function)}
    return ("fresh", why) if why else ("warm", "")


def _def_lines(source: str) -> list[tuple[str, int]]:
    """(name, first line) of every function: numba's cache index is named after them."""
    return [(n.name, n.lineno) for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _run_tests(site: Path, tests: list[str], timeout: float,
               cache: Path | None = None, opt: int | None = None) -> tuple[str, float]:
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    env.pop("NUMBA_DISABLE_JIT", None)
    env.pop("NUMBA_OPT", None)
    if opt is not None:
        env["NUMBA_OPT"] = str(opt)
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
    """Keep the copy's kernel cache valid across the mutants that cannot change compiled
    code (see :func:`cache_needs`): the copy's source digest is frozen at the value of the
    unmutated sources. Returns the shared cache directory, inside the copy's parent.
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


def run_module(name: str, sample: int, seed: int, log, only=None,
               numba_opt: str = "default", always_fresh: bool = False) -> dict:
    relative, tests = MODULES[name]
    source = (PACKAGE / relative).read_text()
    every = list(mutants(source))
    chosen = list(range(len(every)))
    if 0 < sample < len(every):
        chosen = sorted(random.Random(seed).sample(chosen, sample))
    if only is not None:
        chosen = [i for i in chosen if i in only]
    needs = cache_needs(PACKAGE, relative)
    opt = None if numba_opt == "default" else int(numba_opt)
    # The clean run is of the unparsed source, as the mutants are: numba names a cached
    # kernel after its first line, which must be the same for a warm mutant to hit it.
    clean = ast.unparse(ast.parse(source))
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        shutil.copytree(PACKAGE, site / "mixsim", ignore=shutil.ignore_patterns("__pycache__"))
        # The protocol catalog, found beside the package as in a source checkout.
        shutil.copytree(ROOT / "protocols", site / "protocols")
        target = site / "mixsim" / relative
        cache = _pin_digest(site / "mixsim")
        target.write_text(clean)
        status, took = _run_tests(site, tests, timeout=3600, cache=cache, opt=opt)
        if status != "survived":
            raise SystemExit(f"{name}: the tests fail on the unmutated copy ({status})")
        timeout = 3 * took + 30
        plans = []
        for i in chosen:
            plan = cache_plan(source, every[i][0], every[i][3], needs)
            if plan[0] != "fresh" and _def_lines(every[i][2]) != _def_lines(clean):
                plan = ("fresh", "the mutant moves a function's first line")
            if always_fresh:
                plan = ("fresh", "--fresh-cache")
            plans.append(plan)
        counts = {kind: sum(plan[0] == kind for plan in plans)
                  for kind in ("warm", "partial", "fresh")}
        log(f"{name}: {len(every)} mutants, running {len(chosen)} (numba cache: "
            f"{', '.join(f'{n} {kind}' for kind, n in counts.items())}); "
            f"NUMBA_OPT={'default' if opt is None else opt}; clean run {took:.0f} s")
        results = []
        for i, (kind, detail) in zip(chosen, plans, strict=True):
            line, what, text, _ = every[i]
            target.write_text(text)
            with tempfile.TemporaryDirectory() as scratch:
                own = None if kind == "fresh" else cache
                if kind == "partial":
                    own = Path(scratch) / "cache"
                    shutil.copytree(cache, own)
                    for stem, qualname in detail:
                        for pattern in (f"{stem}.{qualname}-*.nbi", f"{stem}.{qualname}.*.nbi"):
                            for index in own.rglob(pattern):
                                index.unlink()
                status, took = _run_tests(site, tests, timeout, own, opt)
            results.append({"index": i, "line": line, "mutation": what, "status": status,
                            "seconds": round(took, 1), "cache": kind})
            log(f"  {name} #{i} line {line} {what}: {status} ({took:.0f} s, {kind} cache"
                f"{f', {len(detail)} kernels recompiled' if kind == 'partial' else ''})")
        target.write_text(source)
    killed = sum(r["status"] in ("killed", "timeout") for r in results)
    return {"module": relative, "tests": tests, "mutants": len(every), "run": len(results),
            "killed": killed, "score": killed / max(len(results), 1),
            "numba_opt": "default" if opt is None else opt, "results": results}


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
    parser.add_argument("--numba-opt", choices=["default", "0", "1", "2", "3"],
                        default="default",
                        help="NUMBA_OPT of the test runs (LLVM optimisation level; 0 "
                             "compiles faster but runs the kernels' tests slower: no gain "
                             "here, see docs/testing.md)")
    parser.add_argument("--fresh-cache", action="store_true",
                        help="compile every kernel for every mutant (an empty numba cache "
                             "each), to check the shared and partial caches")
    args = parser.parse_args(argv)
    names = args.modules or list(MODULES)
    unknown = sorted(set(names) - set(MODULES))
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}; allowed: {', '.join(MODULES)}")
    if args.list:
        for name in names:
            source = (PACKAGE / MODULES[name][0]).read_text()
            needs = cache_needs(PACKAGE, MODULES[name][0])
            for i, (line, what, _, function) in enumerate(mutants(source)):
                kind, detail = cache_plan(source, line, function, needs)
                if kind == "partial":
                    detail = f"{len(detail)} kernels recompiled"
                print(f"{name} #{i} line {line}: {what} [{kind} cache"
                      f"{f': {detail}' if detail else ''}]")
        return
    report = {}
    for name in names:
        report[name] = run_module(name, args.sample, args.seed,
                                  lambda text: print(text, flush=True), args.only,
                                  args.numba_opt, args.fresh_cache)
        args.out.write_text(json.dumps(report, indent=1))
    for result in report.values():
        print(f"{result['module']}: {result['killed']}/{result['run']} killed "
              f"({100 * result['score']:.0f}%) of {result['mutants']} mutants")
        for r in result["results"]:
            if r["status"] not in ("killed", "timeout"):
                print(f"  {r['status']}: #{r['index']} line {r['line']} {r['mutation']}")


if __name__ == "__main__":
    main()
