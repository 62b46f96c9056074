"""Benchmark of the Event Log Preprocessor: flat events parsed per second per core.

Simulates a battery plant (:func:`soads.simulator.generate.simulate`, EPCIS XML), then parses
every document (1) with the pure parser in this process (:func:`soads.epcis.parse_file`, CPU
time, so it is a per-core figure even on a busy machine), (2) with the lxml reference path alone
(what a document outside the plain-ObjectEvent fast path costs), and (3) through Spark
``local[*]`` (:mod:`soads.preprocess`, wall time of the job, divided by the cores). The target
is 100,000 flat events per second per core for the pure parser.

Usage (the CLI prints the lines)::

    soads bench parse --objects 20000
    python -c "from soads.benchmarks.parse import run; print('\\n'.join(run()))"
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
import time

from soads import epcis
from soads.simulator.generate import simulate

logger = logging.getLogger(__name__)


def _parse_all(files: list[str], parse) -> tuple[int, int, float, float]:
    """(flat events, quarantine records, cpu seconds, wall seconds) of ``parse`` over ``files``."""
    n_events = n_quarantine = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for path in files:
        events, quarantine = parse(path)
        n_events += len(events)
        n_quarantine += len(quarantine)
    return n_events, n_quarantine, time.process_time() - cpu, time.perf_counter() - wall


def _reference(path: str):
    with open(path, "rb") as f:
        return epcis._parse_xml(f.read(), path)


def _spark_parse(out_dir: str) -> tuple[int, int, float, int]:
    """(events, quarantine, wall seconds of the job, cores) through Spark local[*]."""
    from soads import preprocess
    from soads.config import SparkConf
    from soads.session import build

    spark = build(SparkConf(master="local[*]", shuffle_partitions=os.cpu_count() or 1))
    cores = spark.sparkContext.defaultParallelism
    wall = time.perf_counter()
    docs = preprocess.read_documents(spark, [out_dir])
    parsed = preprocess.parse_documents(docs).cache()
    events, quarantine = preprocess.split_parsed(parsed)
    n_events, n_quarantine = events.count(), quarantine.count()
    seconds = time.perf_counter() - wall
    parsed.unpersist()
    return n_events, n_quarantine, seconds, cores


def run(n_objects: int = 20000, seed: int = 7, workdir: str | None = None,
        with_spark: bool = True) -> list[str]:
    """Simulate ``n_objects`` cells, parse the EPCIS XML, report the speed; delete the output.

    Parameters
    ----------
    n_objects, seed : passed to :func:`soads.simulator.generate.simulate` (``fmt="xml"``).
    workdir : parent of the temporary directory (default: the system's temp dir).
    with_spark : also time the Spark ``local[*]`` preprocessor on the same files.

    Returns
    -------
    list of str
        Printable lines: simulated input, then per method the flat events, quarantine records,
        seconds and flat events per second per core.
    """
    tmp = tempfile.mkdtemp(prefix="soads-bench-parse-", dir=workdir)
    try:
        out_dir = os.path.join(tmp, "epcis")
        stats = simulate(out_dir, n_objects=n_objects, seed=seed, fmt="xml")
        files = sorted(glob.glob(os.path.join(out_dir, "*.xml")))
        size = sum(os.path.getsize(f) for f in files)
        lines = [f"parse benchmark: {n_objects:,} objects (seed {seed}) -> {len(files)} EPCIS XML "
                 f"documents, {size / 1e6:.1f} MB, {stats['epcis_events']:,} ObjectEvents, "
                 f"{stats['events']:,} EPC reads"]

        n, q, cpu, wall = _parse_all(files, epcis.parse_file)
        lines.append(f"pure parser (soads.epcis, 1 process): {n:,} flat events, {q:,} quarantined, "
                     f"{cpu:.2f} s CPU ({wall:.2f} s wall): {n / cpu:,.0f} flat events/s per core")
        if n != stats["events"]:
            lines.append(f"WARNING: parsed {n:,} flat events, "
                         f"the simulator wrote {stats['events']:,}")
        logger.info("pure parser: %d events in %.2f s CPU", n, cpu)

        n, q, cpu, wall = _parse_all(files, _reference)
        lines.append(f"lxml reference path (no fast path): {n:,} flat events, {cpu:.2f} s CPU: "
                     f"{n / cpu:,.0f} flat events/s per core")

        if with_spark:
            n, q, seconds, cores = _spark_parse(out_dir)
            lines.append(f"Spark local[*] ({cores} cores, soads.preprocess): {n:,} flat events, "
                         f"{q:,} quarantined, {seconds:.2f} s wall: "
                         f"{n / seconds / cores:,.0f} flat events/s per core "
                         f"({n / seconds:,.0f} /s in all)")
        return lines
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
