"""Compiler options shared by every numba kernel in mixsim (one place to change them)."""

from __future__ import annotations

import sys

import numba
from numba.core import event

__all__ = ["njit", "JIT_OPTIONS", "announce_compilation"]

#: Options passed to ``numba.njit`` by every kernel: cached on disk so a second process
#: (a test run, a Dask worker) does not pay the compilation again.
JIT_OPTIONS = {"cache": True, "nogil": True}

#: What the first compilation in a process says (on stderr, once).
COMPILE_NOTICE = ("mixsim: compiling the numerical kernels (the first run after installing "
                  "takes 20-60 s more; later runs load them from numba's cache)")


def njit(func):
    """Compile ``func`` with mixsim's standard options."""
    return numba.njit(**JIT_OPTIONS)(func)


def njit_inline(func):
    """Compile ``func`` with mixsim's options, inlined into its numba callers.

    For the small kernels called once per event in the hot loops: a call between compiled
    functions passes every array by reference count (an atomic operation per array), which
    costs more than applying a two-row operator."""
    return numba.njit(inline="always", **JIT_OPTIONS)(func)


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
