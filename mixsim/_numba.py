"""Compiler options shared by every numba kernel in mixsim (one place to change them)."""

from __future__ import annotations

import numba

#: Options passed to ``numba.njit`` by every kernel: cached on disk so a second process
#: (a test run, a Dask worker) does not pay the compilation again.
JIT_OPTIONS = {"cache": True, "nogil": True}


def njit(func):
    """Compile ``func`` with mixsim's standard options."""
    return numba.njit(**JIT_OPTIONS)(func)


def njit_inline(func):
    """Compile ``func`` with mixsim's options, inlined into its numba callers.

    For the small kernels called once per event in the hot loops: a call between compiled
    functions passes every array by reference count (an atomic operation per array), which
    costs more than applying a two-row operator."""
    return numba.njit(inline="always", **JIT_OPTIONS)(func)
