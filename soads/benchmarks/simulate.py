"""Benchmark of the battery factory simulator: time and peak memory at the paper's scale.

Paper 001 §4.4 mines a 10 GB event log of about 9 million events; 500,000 simulated cells give
about 9.1 million reads. The simulator streams, so peak RSS must stay flat as ``n_objects`` grows.

Usage (the CLI prints the lines)::

    python -c "from soads.benchmarks.simulate import run; print('\\n'.join(run()))"
"""
from __future__ import annotations

import logging
import os
import resource
import shutil
import tempfile
import threading

import psutil

from soads.simulator.generate import simulate

logger = logging.getLogger(__name__)


class _PeakRss:
    """Samples this process's RSS in a thread (``ru_maxrss`` alone cannot be reset per run)."""

    def __init__(self, every: float = 0.1):
        self.every, self.peak = every, 0
        self._stop = threading.Event()
        self._proc = psutil.Process(os.getpid())
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.every)

    def __enter__(self):
        self.start = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def run(n_objects: int = 500_000, seed: int = 7, workdir: str | None = None,
        fmt: str = "xml") -> list[str]:
    """Simulate ``n_objects`` cells into a temporary directory, measure, delete the output.

    Parameters
    ----------
    n_objects, seed, fmt : passed to :func:`soads.simulator.generate.simulate`.
    workdir : parent of the temporary output directory (default: the system's temp dir).

    Returns
    -------
    Printable lines: objects, events, EPCIS events, documents, bytes written, seconds, events/s,
    RSS before and peak RSS (MB, sampled), and ``ru_maxrss`` of the process.
    """
    out = tempfile.mkdtemp(prefix="soads-sim-", dir=workdir)
    try:
        with _PeakRss() as rss:
            stats = simulate(out, n_objects=n_objects, seed=seed, fmt=fmt)
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    lines = [
        f"simulator benchmark (seed {seed}, {fmt})",
        f"objects        {stats['objects']:>12,}",
        f"events (reads) {stats['events']:>12,}",
        f"EPCIS events   {stats['epcis_events']:>12,}",
        f"documents      {stats['documents']:>12,}",
        f"bytes written  {size:>12,}",
        f"seconds        {stats['seconds']:>12.1f}",
        f"events/s       {stats['events'] / stats['seconds']:>12,.0f}",
        f"RSS before MB  {rss.start / 2**20:>12.1f}",
        f"peak RSS MB    {rss.peak / 2**20:>12.1f}",
        f"ru_maxrss MB   {maxrss_mb:>12.1f}",
    ]
    logger.info("simulator benchmark: %s", "; ".join(lines[1:]))
    return lines
