"""mixsim: a discrete-event simulator for weakly consistent parallel learning.

The public surface: protocols (:func:`load_protocol`, :func:`list_protocols`), the engine
(:class:`Simulation`, :class:`Timing`), the state model (:class:`Operator`,
:class:`Trace`, :class:`Consensus`) and the mixing time (:func:`mixing_time`).
"""

from mixsim.engine import Simulation
from mixsim.errors import ConfigError, DivergenceError, MixsimError, ProtocolError
from mixsim.mixing import MixingTime, mixing_time, trace_mixing_time
from mixsim.operators import Operator
from mixsim.plotting import plot_mixing_times
from mixsim.protocol import Protocol, list_protocols, load_protocol
from mixsim.state import SlotLayout
from mixsim.timing import ComputeTime, Links, Timing
from mixsim.trace import Consensus, Trace

__all__ = [
    "ComputeTime",
    "ConfigError",
    "Consensus",
    "DivergenceError",
    "Links",
    "MixingTime",
    "MixsimError",
    "Operator",
    "Protocol",
    "ProtocolError",
    "Simulation",
    "SlotLayout",
    "Timing",
    "Trace",
    "list_protocols",
    "load_protocol",
    "mixing_time",
    "plot_mixing_times",
    "trace_mixing_time",
]
__version__ = "0.1.0"
