"""Compiler options shared by every numba kernel in mixsim (one place to change them).

Kernels are cached on disk so a second process (a test run, a Dask worker) does not pay the
compilation again. numba keys a cached kernel to the source file it is defined in only, yet
a kernel inlines the kernels it calls from other modules: after an edit to
``operators.py`` (or an upgrade of mixsim) the cached kernels of ``_passages`` would still
run the old operator code. Here every kernel's cache entry is keyed instead to a digest of
all of mixsim's sources, so any change anywhere in the package recompiles every kernel on
first use (``tests/test_numba_cache.py``).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numba
from numba.core import caching, event
from numba.core.dispatcher import Dispatcher

__all__ = ["njit", "njit_inline", "JIT_OPTIONS", "announce_compilation", "compiled_for"]

#: Options passed to ``numba.njit`` by every kernel (``cache`` is handled below).
JIT_OPTIONS = {"nogil": True}

#: What the first compilation in a process says (on stderr, once).
COMPILE_NOTICE = ("mixsim: compiling the numerical kernels (the first run after installing "
                  "takes 20-60 s more; later runs load them from numba's cache)")


def source_digest(package: Path) -> bytes:
    """SHA-256 of every ``.py`` file under ``package``, names and contents, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.digest()


_DIGEST = source_digest(Path(__file__).resolve().parent)


class _PackageStamp:
    """Locator mixin: the freshness stamp of a cached kernel is the package digest."""

    def get_source_stamp(self):
        return _DIGEST


def _stamped(locator: type) -> type:
    return type(f"Package{locator.__name__}", (_PackageStamp, locator), {})


class _CacheImpl(caching.CompileResultCacheImpl):
    # numba's own search order (a user's NUMBA_CACHE_DIR first), package-stamped.
    _locator_classes = [_stamped(cls) for cls in caching.CompileResultCacheImpl._locator_classes
                        if issubclass(cls, caching._SourceFileBackedLocatorMixin)]


class _FunctionCache(caching.FunctionCache):
    _impl_class = _CacheImpl


def njit(func=None, **options):
    """Compile ``func`` with mixsim's standard options (plus ``options``), cached on disk.

    Use as ``@njit`` or ``@njit(error_model="numpy")``.
    """

    def compile_(function):
        dispatcher = numba.njit(**{**JIT_OPTIONS, **options})(function)
        if isinstance(dispatcher, Dispatcher):  # not under NUMBA_DISABLE_JIT=1
            dispatcher._cache = _FunctionCache(dispatcher.py_func)
        return dispatcher

    return compile_ if func is None else compile_(func)


def njit_inline(func):
    """Compile ``func`` with mixsim's options, inlined into its numba callers.

    For the small kernels called once per event in the hot loops: a call between compiled
    functions passes every array by reference count (an atomic operation per array), which
    costs more than applying a two-row operator."""
    return njit(func, inline="always")


def compiled_for(kernel, *args):
    """``kernel``'s compiled code for the types of ``args``, callable without numba's
    type dispatch (about half the cost of a call on tiny arrays: the engine's hot path).

    Call it only with arguments of exactly those types. Under ``NUMBA_DISABLE_JIT=1`` the
    kernel itself is returned.
    """
    if not isinstance(kernel, Dispatcher):
        return kernel
    signature = tuple(numba.typeof(arg) for arg in args)
    kernel.compile(signature)
    return kernel.overloads[signature].entry_point


class _CompileNotice(event.Listener):
    """Says once that kernels are being compiled (numba fires ``numba:compile`` only when
    a kernel is not in the cache)."""

    def __init__(self, stream):
        self.stream = stream
        self.said = False

    def on_start(self, ev):
        if not self.said:
            self.said = True
            print(COMPILE_NOTICE, file=self.stream or sys.stderr, flush=True)

    def on_end(self, ev):
        pass


def announce_compilation(stream=None):
    """A context in which the first kernel compiled prints :data:`COMPILE_NOTICE` on
    ``stream`` (default stderr), so a long first run does not look like a hang.

    Examples
    --------
    >>> with announce_compilation():
    ...     pass
    """
    return event.install_listener("numba:compile", _CompileNotice(stream))
