"""Dask clients for sweeps and Monte Carlo runs: a local cluster of processes, or an
existing cluster by its scheduler address.

Work reaches Dask only as picklable functions applied to plain arguments; results come back
to the calling process, which alone writes files (workers of a remote cluster need not
share its file system).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

from mixsim.errors import ConfigError

__all__ = ["dask_client", "map_runs_on", "mixing_times"]

#: Seconds to wait for an existing scheduler to answer.
_CONNECT_TIMEOUT = 30
#: Tasks per Dask thread when batching Monte Carlo runs: enough for load balance, few
#: enough that per-task overhead stays small against runs of a millisecond.
_TASKS_PER_THREAD = 8


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None):
    """A connected ``distributed.Client``, closed (with its local cluster) on exit.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://HOST:PORT``); default: start a local
        cluster of worker processes on 127.0.0.1.
    workers : int, optional
        Worker processes of the local cluster (one thread each; default: the number of
        cores). Ignored with ``scheduler``.

    Yields
    ------
    distributed.Client

    Raises
    ------
    ConfigError
        ``workers < 1``, or no scheduler answers at ``scheduler``.
    """
    from distributed import Client, LocalCluster

    if workers is not None and workers < 1:
        raise ConfigError(f"{workers}: must be >= 1", key="--workers")
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=_CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"{scheduler!r}: no Dask scheduler answered ({exc})",
                              key="--scheduler") from None
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                           processes=True, host="127.0.0.1", dashboard_address=None,
                           silence_logs=logging.ERROR)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def _call_each(function, arguments: list) -> list:
    from threadpoolctl import threadpool_limits

    # Runs are small linear-algebra calls: one BLAS thread each, the cores go to Dask.
    with threadpool_limits(limits=1):
        return [function(argument) for argument in arguments]


def map_runs_on(client):
    """A ``map_runs(function, seeds)`` for :func:`mixsim.mixing_time` that evaluates the
    runs on a Dask client, in batches, and returns their results in the order of ``seeds``.

    Each run depends only on its seed, so the results are those of the serial loop.
    """

    def map_runs(function, seeds) -> list:
        seeds = list(seeds)
        if not seeds:
            return []
        threads = max(1, sum(client.nthreads().values()))
        size = max(1, -(-len(seeds) // (_TASKS_PER_THREAD * threads)))
        batches = [seeds[i:i + size] for i in range(0, len(seeds), size)]
        futures = client.map(_call_each, [function] * len(batches), batches, pure=False)
        try:
            return [value for batch in client.gather(futures) for value in batch]
        finally:
            for future in futures:
                future.release()

    return map_runs


def mixing_times(protocols: list, workers: list[int], *, map_runs=None, **kwargs) -> dict:
    """:func:`mixsim.mixing_time` of several protocols: ``{protocol: [MixingTime per n]}``.

    With ``map_runs`` (from :func:`map_runs_on`), every (protocol, n) is submitted at once,
    from threads of this process, so that the cluster is not idle between them. Each
    (protocol, n) depends only on its own seeds: the values are those of the serial loop.
    Keyword arguments are those of :func:`mixsim.mixing_time`.
    """
    from concurrent.futures import ThreadPoolExecutor

    from mixsim.mixing import mixing_time
    from mixsim.protocol import load_protocol

    if map_runs is None:
        return {protocol: mixing_time(protocol, workers, **kwargs) for protocol in protocols}
    # Mistakes are reported before anything is submitted, as in the serial loop.
    for n in workers:
        if n < 1:
            raise ConfigError(f"{n!r} workers: must be an integer >= 1", key="workers")
    for protocol in protocols:
        load_protocol(protocol, kwargs.get("params"))
    with ThreadPoolExecutor(max_workers=len(protocols) * len(workers)) as pool:
        futures = {(protocol, n): pool.submit(mixing_time, protocol, [n], **kwargs,
                                              map_runs=map_runs)
                   for protocol in protocols for n in workers}
        return {protocol: [futures[protocol, n].result()[0] for n in workers]
                for protocol in protocols}
