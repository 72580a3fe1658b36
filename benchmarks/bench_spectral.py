"""Spectral mixing time of 10,000-worker gossip topologies.

Run: ``python benchmarks/bench_spectral.py``

For the ring (weights 1/3) and the static exponential graph (uniform weights), times
``consensus_rounds`` (t_mix = rounds * n computation steps) and reports

* wall time, against the 10 s target, and as a ratio to one sparse mat-vec ``W @ x``;
* peak memory: tracemalloc peak (numpy / Python allocations; SuperLU's own buffers are not
  traced) and growth of the process peak RSS, each as a ratio to the bytes of W (O(edges));
* the rounds against a closed form: ring gap ``(4/3) sin^2(pi/n)``, exponential graph
  eigenvalues from the FFT of its circulant first row.
"""

from __future__ import annotations

import math
import resource
import sys
import time
import tracemalloc

import numpy as np
import scipy.sparse as sp

from mixsim.spectral import consensus_rounds
from mixsim.topology import exponential_graph, gossip_matrix, ring_matrix

N = 10_000
TARGET_SECONDS = 10.0


def _rounds_from_modulus(mu: float) -> int:
    return max(1, math.ceil(math.log(0.5) / math.log(mu)))


def _ring_closed_form(n: int) -> int:
    gap = 4 / 3 * math.sin(math.pi / n) ** 2
    return max(1, math.ceil(math.log(0.5) / math.log1p(-gap)))


def _circulant_closed_form(W: sp.csr_array) -> int:
    # W is circulant: its eigenvalues are the DFT of its first column.
    eigenvalues = np.fft.fft(W[:, [0]].toarray().ravel())
    moduli = np.sort(np.abs(eigenvalues))
    return _rounds_from_modulus(float(moduli[-2]))


def _matrix_bytes(W: sp.csr_array) -> int:
    return W.data.nbytes + W.indices.nbytes + W.indptr.nbytes


def _matvec_seconds(W: sp.csr_array, repeats: int = 200) -> float:
    x = np.random.default_rng(0).standard_normal(W.shape[0])
    start = time.perf_counter()
    for _ in range(repeats):
        x = W @ x
    return (time.perf_counter() - start) / repeats


def _peak_rss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def run(name: str, W: sp.csr_array, closed_form: int) -> bool:
    n = W.shape[0]
    rss_before = _peak_rss_bytes()
    tracemalloc.start()
    start = time.perf_counter()
    rounds = consensus_rounds(W)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = _peak_rss_bytes() - rss_before
    matvec = _matvec_seconds(W)
    size = _matrix_bytes(W)
    met = seconds <= TARGET_SECONDS
    verdict = "target met" if met else "not met"
    print(f"{name}: n = {n}, nnz(W) = {W.nnz}, W = {size / 1e6:.2f} MB")
    print(f"  consensus_rounds = {rounds}   t_mix = rounds * n = {rounds * n:.6g}")
    print(f"  closed form rounds = {closed_form}   ratio = {rounds / closed_form:.9f}")
    print(
        f"  wall {seconds:.3f} s (target {TARGET_SECONDS:g} s: {verdict})"
        f"   = {seconds / matvec:.0f} sparse mat-vecs ({matvec * 1e6:.1f} us each)"
    )
    print(
        f"  tracemalloc peak {traced_peak / 1e6:.2f} MB = {traced_peak / size:.1f} x W;"
        f"   peak RSS growth {rss_growth / 1e6:.2f} MB"
    )
    return met and rounds == closed_form


def main() -> int:
    ring = ring_matrix(N)
    exponential = gossip_matrix(exponential_graph(N), "uniform")
    results = [
        run("ring, weights 1/3", ring, _ring_closed_form(N)),
        run(
            "static exponential graph, uniform weights",
            exponential,
            _circulant_closed_form(exponential),
        ),
    ]
    print("all targets met" if all(results) else "some target not met")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
