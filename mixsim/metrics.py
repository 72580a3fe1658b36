"""The columns of a learning run's metrics table (``metrics.csv``, ``RunResult.rows``).

A name shared by the run (:mod:`mixsim.learning`), its outputs (:mod:`mixsim.report`) and
sweeps (:mod:`mixsim.sweep`), kept below all three.
"""

from __future__ import annotations

__all__ = ["METRICS"]

#: Columns of the metrics table, in order.
METRICS = ("step", "epoch", "time", "loss", "grad_norm", "test_accuracy",
           "stationary_distance", "bits_up", "bits_down")
