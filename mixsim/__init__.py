"""mixsim: a discrete-event simulator for weakly consistent parallel learning.

The public surface: learning runs (:func:`run`, :func:`load_scenario`), protocols
(:func:`load_protocol`, :func:`list_protocols`), the engine (:class:`Simulation`,
:class:`Timing`), the state model (:class:`Operator`, :class:`Trace`, :class:`Consensus`),
the mixing time (:func:`mixing_time`), problems and data (:func:`make_problem`,
:func:`load_dataset`, :func:`partition`); optimizers and compressors live in
:mod:`mixsim.optim`, the formulas of seed 002 in :mod:`mixsim.theory`.
"""

from mixsim.data import load_dataset, partition
from mixsim.engine import Simulation
from mixsim.errors import ConfigError, DivergenceError, MixsimError, ProtocolError, StoppedError
from mixsim.learning import RunResult, run
from mixsim.mixing import MixingTime, mixing_time, trace_mixing_time
from mixsim.operators import Operator
from mixsim.plotting import plot_mixing_times
from mixsim.problems import make_problem
from mixsim.protocol import Protocol, list_protocols, load_protocol
from mixsim.scenario import Scenario, load_scenario
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
    "RunResult",
    "Scenario",
    "Simulation",
    "StoppedError",
    "SlotLayout",
    "Timing",
    "Trace",
    "list_protocols",
    "load_dataset",
    "load_protocol",
    "load_scenario",
    "make_problem",
    "mixing_time",
    "partition",
    "plot_mixing_times",
    "run",
    "trace_mixing_time",
]
__version__ = "0.1.0"
