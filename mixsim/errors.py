"""The exception hierarchy of mixsim.

Every error a user can cause derives from :class:`MixsimError`; the command line turns
these into one line on stderr and exit code 2.
"""

from __future__ import annotations

__all__ = ["MixsimError", "ConfigError", "ProtocolError", "DivergenceError", "StoppedError"]


class MixsimError(Exception):
    """Base class of every error mixsim raises on purpose."""


class ConfigError(MixsimError, ValueError):
    """A configuration value (file, key, value) is invalid.

    Parameters
    ----------
    message : str
        What is wrong and, where possible, the allowed values.
    source : str, optional
        The file (or other origin) the value came from.
    key : str, optional
        The dotted key of the bad value.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source = source
        self.key = key
        self.message = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = ": ".join(part for part in (self.source, self.key) if part)
        return f"{where}: {self.message}" if where else self.message


class ProtocolError(ConfigError):
    """A protocol file or protocol parameter is invalid, or a protocol breaks the model."""


class DivergenceError(MixsimError, FloatingPointError):
    """A run produced a non-finite value.

    Parameters
    ----------
    step : int
        The computation step at which the first non-finite value appeared.
    message : str
        Details.

    Attributes
    ----------
    result : RunResult or None
        What a learning run recorded up to the divergence (set by :func:`mixsim.run`).
    """

    def __init__(self, step: int, message: str = "non-finite value in the state"):
        self.step = step
        self.detail = message
        self.result = None
        # ``args`` are the constructor's arguments, so a copy made as
        # ``type(exc)(*exc.args)`` (SimPy does so when a process fails) is the same error.
        super().__init__(step, message)

    def __str__(self) -> str:
        return f"diverged at step {self.step}: {self.detail}"


class StoppedError(MixsimError, RuntimeError):
    """A :class:`~mixsim.Simulation` whose run stopped with an error cannot run again.

    An exception inside a run (a compute callback's error, a divergence, Ctrl-C) can leave
    a worker between two of its events and the random streams between two blocks; the
    simulation keeps what it recorded (trace and state agree) but does not continue.
    """

