"""mixsim: a discrete-event simulator for weakly consistent parallel learning."""

from mixsim.errors import ConfigError, DivergenceError, MixsimError, ProtocolError

__all__ = ["MixsimError", "ConfigError", "ProtocolError", "DivergenceError"]
__version__ = "0.1.0"
