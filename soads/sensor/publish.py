"""Sensor readings -> Kafka: the publisher for the sensor job (``soads sensor publish``).

Each Kafka record is one reading in the format :func:`soads.sensor.streaming.parse_reading`
takes, keyed by machine (one machine's readings stay in order within a partition)::

    {"machine_id": "m1", "ts": "2026-11-29T20:30:00.000Z", "values": {"Current": 0.61, ...}}

``ts`` is ISO-8601 UTC; ``values`` maps sensor names (the job's ``[sensor.stream] sensors``) to
numbers. Readings come from :func:`synthetic_readings` (a sine plus Gaussian noise per machine
and sensor, the same for the same seed) or from the rows of a CSV file (:func:`csv_readings`).
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import math
import os
import time
from typing import Callable, Iterable, Iterator, Sequence

from soads import schema as S

logger = logging.getLogger(__name__)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def iso_utc(when: dt.datetime) -> str:
    """ISO-8601 UTC text with milliseconds and ``Z``.

    >>> iso_utc(dt.datetime(2024, 3, 4, 8, 0, 1, 500000, tzinfo=dt.timezone.utc))
    '2024-03-04T08:00:01.500Z'
    """
    when = when.astimezone(dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def reading(machine_id: str, ts: dt.datetime, values: dict) -> bytes:
    """One reading as the JSON the sensor job parses.

    >>> reading("m1", dt.datetime(2024, 3, 4, tzinfo=dt.timezone.utc), {"a": 1.5})
    b'{"machine_id": "m1", "ts": "2024-03-04T00:00:00.000Z", "values": {"a": 1.5}}'
    """
    return json.dumps({S.MACHINE_ID: machine_id, S.TS: iso_utc(ts),
                       S.VALUES: values}).encode("utf-8")


def synthetic_readings(machines: int, sensors: Sequence[str], seed: int, start: dt.datetime,
                       step_seconds: float = 1.0) -> Iterator[tuple[str, dt.datetime, dict]]:
    """Endless ``(machine_id, ts, {sensor: value})``: machines ``m1..mN`` read every
    ``step_seconds`` of event time from ``start``, round after round (every machine once per
    round). Each (machine, sensor) is ``level + amplitude * sin(2 pi t / period + phase)`` plus
    Gaussian noise of a tenth of the amplitude; levels, amplitudes, periods and phases are drawn
    from ``seed``, so the same seed gives the same readings.

    >>> it = synthetic_readings(2, ["a", "b"], seed=1, start=_EPOCH)
    >>> [(m, ts.second, values) for m, ts, values in (next(it), next(it), next(it))][:2]
    [('m1', 0, {'a': 0.419662, 'b': 0.362139}), ('m2', 0, {'a': 0.035358, 'b': 1.035637})]
    >>> [(m, ts.second) for m, ts, _ in (next(it), next(it))]
    [('m2', 1), ('m1', 2)]
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (machines, len(sensors))
    level = rng.uniform(-1.0, 1.0, shape)
    amplitude = rng.uniform(0.2, 1.0, shape)
    period = rng.uniform(30.0, 300.0, shape)  # seconds of event time
    phase = rng.uniform(0.0, 2 * math.pi, shape)
    names = [f"m{i + 1}" for i in range(machines)]
    k = 0
    while True:
        t = k * step_seconds
        ts = start + dt.timedelta(seconds=t)
        values = level + amplitude * np.sin(2 * math.pi * t / period + phase) \
            + rng.normal(0.0, 0.1, shape) * amplitude
        for i, m in enumerate(names):
            yield m, ts, {s: round(float(values[i, j]), 6) for j, s in enumerate(sensors)}
        k += 1


def csv_readings(path: str, machine_id: str | None = None
                 ) -> Iterator[tuple[str, dt.datetime, dict]]:
    """Rows of a CSV file as ``(machine_id, ts, {sensor: value})``, in file order.

    Columns: ``ts`` (ISO-8601; naive = UTC) or SKAB's ``datetime`` (then ``;`` separates the
    fields), ``machine_id`` (else ``machine_id`` here, else the file's name), and the sensor
    columns: every other column; SKAB's ``anomaly`` / ``changepoint`` labels are not sent. An
    empty cell is a missing value (null). A row without a readable time or with a value that
    is not a number raises ``ValueError`` naming the line.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        head = fh.readline()
        fh.seek(0)
        rows = csv.DictReader(fh, delimiter=";" if head.count(";") > head.count(",") else ",")
        time_col = S.TS if S.TS in (rows.fieldnames or ()) else "datetime"
        if time_col not in (rows.fieldnames or ()):
            raise ValueError(f"{path}: no {S.TS} (or datetime) column")
        skip = {time_col, S.MACHINE_ID, "anomaly", "changepoint"}
        sensors = [c for c in rows.fieldnames if c not in skip]
        default_machine = machine_id or os.path.splitext(os.path.basename(path))[0]
        for line, row in enumerate(rows, 2):
            try:
                ts = dt.datetime.fromisoformat(row[time_col].strip().replace("Z", "+00:00"))
                values = {s: None if (row[s] or "").strip() == "" else float(row[s])
                          for s in sensors}
            except (ValueError, AttributeError) as e:
                raise ValueError(f"{path}:{line}: {e}") from None
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=dt.timezone.utc)
            yield machine_id or row.get(S.MACHINE_ID) or default_machine, ts, values


def publish_readings(readings: Iterable[tuple[str, dt.datetime, dict]], bootstrap: str,
                     topic: str, rate: float = 0.0, count: int | None = None,
                     seconds: float | None = None,
                     progress: Callable[[dict], None] | None = None,
                     progress_seconds: float = 2.0) -> dict:
    """Send readings as Kafka records (key = machine_id), paced to ``rate`` readings per second
    (0: as fast as the producer can), until ``readings`` ends, ``count`` were sent or
    ``seconds`` of wall time passed.

    Returns
    -------
    dict
        ``topic, readings, machines, first_ts, last_ts, seconds, readings_per_s``.
    """
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, retries=5)
    stats = {"topic": topic, "readings": 0, "machines": 0, "first_ts": None, "last_ts": None,
             "seconds": 0.0, "readings_per_s": 0.0}
    machines: set[str] = set()
    acked = [0]

    def sent(_meta):
        acked[0] += 1

    start = shown = time.monotonic()
    try:
        for machine, ts, values in readings:
            if count is not None and stats["readings"] >= count:
                break
            now = time.monotonic()
            if seconds is not None and now - start >= seconds:
                break
            if rate > 0:
                delay = start + stats["readings"] / rate - now
                if delay > 0:
                    if seconds is not None and now + delay - start >= seconds:
                        break
                    time.sleep(delay)
            producer.send(topic, key=machine.encode("utf-8"),
                          value=reading(machine, ts, values)).add_callback(sent)
            machines.add(machine)
            stats["readings"] += 1
            stats["first_ts"] = stats["first_ts"] or iso_utc(ts)
            stats["last_ts"] = iso_utc(ts)
            now = time.monotonic()
            if progress is not None and now - shown >= progress_seconds:
                shown = now
                progress(_finish(stats, machines, start, now))
        producer.flush()
    finally:
        producer.close()
    _finish(stats, machines, start, time.monotonic())
    if acked[0] != stats["readings"]:
        raise RuntimeError(f"{stats['readings'] - acked[0]} of {stats['readings']} readings "
                           f"were not acknowledged by {bootstrap}")
    logger.info("published %d readings of %d machines to %s in %.1f s", stats["readings"],
                stats["machines"], topic, stats["seconds"])
    return stats


def _finish(stats: dict, machines: set, start: float, now: float) -> dict:
    stats["machines"] = len(machines)
    stats["seconds"] = round(now - start, 3)
    stats["readings_per_s"] = round(stats["readings"] / max(now - start, 1e-9), 1)
    return stats
