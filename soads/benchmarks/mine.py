"""Frequent Subsequence Miner benchmark (paper §4, Fig. 14): soads vs no-relations vs MLlib.

The sequences of a simulated battery plant (:func:`soads.simulator.generate.iter_sequences`)
are written to Parquet and read back, so timings exclude Python-side data creation. The
RELATIONAL DEPENDENCY TABLE is built once beforehand, as the streaming Relational Dependency
Updater would have maintained it; its build time is printed on its own line, and the ratios are
printed twice: mining alone, and with the build added to soads' time (a batch user without the
stream pays both). Every miner gets the same number of runs (``repeat``); the best is shown.

Usage: python -m soads.cli ... or ``from soads.benchmarks.mine import run; print(*run(), sep="\\n")``
"""
from __future__ import annotations

import logging
import os
import tempfile
import time

from soads import schema as S

logger = logging.getLogger(__name__)

MEAN_SEQUENCE_LENGTH = 18.2  # of the simulator's sequences (measured, seed 7)
BRUTE_FORCE_MAX = 50_000  # sequences: the brute-force oracle is checked up to this many


def write_sequences(path: str, events: int, seed: int = 7, n_files: int = 4) -> tuple[int, int, list]:
    """Simulated sequences totalling about ``events`` read points -> Parquet ``oid, sequence``.

    Returns (number of sequences, number of events, the sequences if at most
    :data:`BRUTE_FORCE_MAX` else []).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from soads.simulator.generate import iter_sequences

    n_objects = int(events / MEAN_SEQUENCE_LENGTH) + 1
    oids, seqs, total = [], [], 0
    for oid, seq in iter_sequences(n_objects, seed=seed):
        oids.append(oid)
        seqs.append(seq)
        total += len(seq)
        if total >= events:
            break
    os.makedirs(path, exist_ok=True)
    step = -(-len(oids) // n_files)
    for i in range(n_files):
        part = slice(i * step, (i + 1) * step)
        table = pa.table({S.OID: pa.array(oids[part], pa.string()),
                          S.SEQUENCE: pa.array(seqs[part], pa.list_(pa.string()))})
        pq.write_table(table, os.path.join(path, f"part-{i:03d}.parquet"))
    return len(oids), total, (seqs if len(seqs) <= BRUTE_FORCE_MAX else [])


def _with_timeout(spark, fn, timeout: float | None):
    """``fn()`` in a thread under its own Spark job group; cancelled after ``timeout`` seconds.

    Returns fn's value, or None when it was cancelled.
    """
    import threading
    import uuid

    if timeout is None:
        return fn()
    sc = spark.sparkContext
    group = f"soads-bench-{uuid.uuid4().hex[:8]}"
    box: dict = {}

    def target():
        sc.setJobGroup(group, "benchmark run with a time limit", interruptOnCancel=True)
        try:
            box["value"] = fn()
        except Exception as e:  # re-raised below unless it is our own cancellation
            box["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        sc.cancelJobGroup(group)
        th.join()
        return None
    if "error" in box:
        raise box["error"]
    return box["value"]


def run(events: int = 1_000_000, minsup: float = 0.01, max_length: int = 25,
        algorithms=("soads", "no-relations", "mllib"), seed: int = 7, spark=None,
        workdir: str | None = None, repeat: int = 2, mllib_timeout: float | None = 1800.0
        ) -> list[str]:
    """Time the three miners on the same sequences; return printable lines.

    Lines: data size, relation table build, then per algorithm seconds (best of ``repeat`` runs,
    the same number for every miner) / patterns, the ratios to soads (mining alone, and with the
    relation table build in soads' time), and whether soads equals no-relations and brute force
    (up to :data:`BRUTE_FORCE_MAX` sequences; a line says when that check was skipped). MLlib
    runs are cancelled after ``mllib_timeout`` seconds; its line then says so, no further run of
    it is started, and its ratios are lower bounds.
    """
    from pyspark.sql import functions as F

    from soads.config import SparkConf
    from soads.dependencies import relation_table
    from soads.mining import mine_patterns
    from soads.mining.brute_force import frequent_patterns, minsup_count
    from soads.session import build

    if spark is None:
        spark = build(SparkConf(driver_memory="6g"))
    tmp = tempfile.TemporaryDirectory(dir=workdir)
    lines = []
    t = time.perf_counter()
    seq_path = os.path.join(tmp.name, "sequences")
    n_seq, n_events, small = write_sequences(seq_path, events, seed,
                                             n_files=max(2, spark.sparkContext.defaultParallelism))
    lines.append(f"data: {n_events:,} events, {n_seq:,} sequences "
                 f"(simulated + Parquet in {time.perf_counter() - t:.1f} s), minsup {minsup}, "
                 f"max_length {max_length}, master {spark.sparkContext.master}")
    sequences = spark.read.parquet(seq_path)
    # oid, sequence array<string>

    t = time.perf_counter()
    rel_path = os.path.join(tmp.name, "relations")
    relation_table(sequences).write.parquet(rel_path)
    relations = spark.read.parquet(rel_path)
    # a, b, freq, support
    n_relations = relations.count()
    relation_seconds = time.perf_counter() - t
    lines.append(f"relation table: {n_relations:,} relations built in {relation_seconds:.2f} s "
                 f"(maintained by the streaming updater; in soads' time only where said)")
    lines.append(f"timing: best of {max(1, repeat)} run(s) per miner, the same for each; a "
                 f"run = mine_patterns on the Parquet sequences + count of its patterns")

    _warm_up(sequences)
    frames, results, seconds, cancelled = {}, {}, {}, set()
    for algo in algorithms:
        runs = []
        for _ in range(max(1, repeat)):
            t = time.perf_counter()

            def one(algo=algo):
                df, info = mine_patterns(spark, sequences, relations if algo == "soads" else None,
                                         minsup, max_length, algorithm=algo)
                return df, info, df.count()

            out = _with_timeout(spark, one, mllib_timeout if algo == "mllib" else None)
            runs.append(time.perf_counter() - t)
            if out is None:  # cancelled at the time limit: another run would be cancelled too
                break
        seconds[algo] = min(runs)  # best of `repeat`: 2 shared cores make single runs noisy
        if out is None:
            cancelled.add(algo)
            lines.append(f"{algo:>13}: > {seconds[algo]:7.0f} s  cancelled at the time limit "
                         f"({mllib_timeout:.0f} s); ratios below are lower bounds")
            continue
        df, info, n_patterns = out
        frames[algo] = df
        if algo != "mllib":  # MLlib's gapped patterns can be millions: they stay in Spark
            results[algo] = {tuple(r[S.PATTERN]): r[S.SUPPORT] for r in df.collect()}
        longest = df.agg(F.max(S.LENGTH)).first()[0] or 0
        lines.append(f"{algo:>13}: {seconds[algo]:8.2f} s  {n_patterns:9,} patterns  "
                     f"(longest {longest}, minsup_count {info['minsup_count']})  "
                     f"steps {info['timings']}")
    if "soads" in seconds and "soads" not in cancelled:
        with_build = seconds["soads"] + relation_seconds
        for algo in algorithms:
            if algo != "soads" and algo in seconds:
                bound = ">" if algo in cancelled else ""
                lines.append(f"ratio {algo}/soads: {bound}{seconds[algo] / seconds['soads']:.1f}x "
                             f"(soads mining alone, {seconds['soads']:.2f} s); "
                             f"{bound}{seconds[algo] / with_build:.1f}x with the relation table "
                             f"build in soads' time ({with_build:.2f} s)")
    if "soads" in results and "no-relations" in results:
        lines.append(f"soads == no-relations: {results['soads'] == results['no-relations']}")
    if "soads" in results and small:
        m = minsup_count(minsup, n_seq)
        lines.append(f"soads == brute force: "
                     f"{results['soads'] == frequent_patterns(small, m, max_length)}")
    elif "soads" in results:
        lines.append(f"soads == brute force: check skipped ({n_seq:,} sequences; the oracle "
                     f"runs up to {BRUTE_FORCE_MAX:,})")
    if "soads" in frames and "mllib" in frames:
        # a contiguous pattern is also a gapped one, with at least the same support
        ours, theirs = frames["soads"], frames["mllib"].select(
            S.PATTERN, F.col(S.SUPPORT).alias("_mllib_support"))
        covered = ours.join(theirs, S.PATTERN).filter(
            F.col("_mllib_support") >= F.col(S.SUPPORT)).count()
        lines.append(f"soads patterns found by MLlib with support >= soads': "
                     f"{covered:,} of {ours.count():,}")
        frames["mllib"].unpersist()
    tmp.cleanup()
    return lines


def _warm_up(sequences) -> None:
    """Start the Python workers (numpy, pyarrow imports) before anything is timed."""
    def touch(batches):
        import numpy  # noqa: F401
        import pyarrow.compute  # noqa: F401

        for b in batches:
            yield b.select([0]).slice(0, 0)

    sequences.select(S.OID).mapInArrow(touch, sequences.select(S.OID).schema).count()


if __name__ == "__main__":  # python -m soads.benchmarks.mine [events] [minsup]
    import sys

    logging.basicConfig(level=logging.WARNING)
    ev = int(float(sys.argv[1])) if len(sys.argv) > 1 else 1_000_000
    ms = float(sys.argv[2]) if len(sys.argv) > 2 else 0.01
    algos = tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else ("soads", "no-relations", "mllib")
    limit = float(sys.argv[4]) if len(sys.argv) > 4 else 1800.0
    sys.stdout.write("\n".join(run(ev, ms, algorithms=algos, mllib_timeout=limit)) + "\n")
