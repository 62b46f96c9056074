"""Rules the batch and the streaming job share around the context detector (pure: no Spark).

- :func:`is_closed`: whether an object is finished, so that its END step is scored;
- :func:`verdict_columns`: a :class:`~soads.detect.context.Verdict` as object_score's columns
  (``anomaly``, ``is_anomaly``, ``explanation`` JSON text): one encoding for both jobs;
- :func:`model_run_rows` / :func:`rows_of_run`: a fitted model's counts as ``detector_count``
  rows and back;
- :func:`anomaly_rate`: the anomaly rate per window of event time and read point (the oracle of
  the Spark version, :func:`soads.detect.spark.anomaly_rate`, and the event job's increments
  over its finished objects, :func:`soads.storage.sinks.rate_increments`).

**Closed rule.** An object is finished when its last read is more than ``idle_seconds``
(``[stream] idle_seconds``) older than the *horizon*: in batch the newest event time in the log,
in the stream the event-time watermark at which the object is evicted. Both jobs call
:func:`is_closed`, so a batch recomputation with the stream's horizon gives the stream's rows.
"""
from __future__ import annotations

import json
from typing import Iterable, Sequence

from soads import schema as S


def idle_us(idle_seconds: float) -> int:
    """``idle_seconds`` in whole microseconds (the unit both jobs compare times in)."""
    return int(round(float(idle_seconds) * 1_000_000))


def is_closed(last_us, horizon_us, idle_seconds: float):
    """True when an object whose last read is at ``last_us`` is finished at ``horizon_us``
    (microseconds since the epoch, UTC): its last read is more than ``idle_seconds`` old (a read
    exactly ``idle_seconds`` later still continues the object's session, as in the stream's state).

    Works on ints and elementwise on numpy arrays.

    Examples
    --------
    >>> is_closed(0, 3_600_000_001, 3600), is_closed(0, 3_600_000_000, 3600)
    (True, False)
    """
    return horizon_us - last_us > idle_us(idle_seconds)


def explanation_json(explanation: dict | None) -> str | None:
    """The JSON text object_score stores for an explanation (None stays None), keys in the
    core's order, so the batch and the stream write the same text."""
    return None if explanation is None else json.dumps(explanation, ensure_ascii=False)


def verdict_columns(verdict) -> tuple[float, bool, str | None]:
    """``(anomaly, is_anomaly, explanation JSON text)`` of a verdict."""
    return (float(verdict.anomaly), bool(verdict.is_anomaly),
            explanation_json(verdict.explanation))


def worst_read_point(sequence: Sequence[str], explanation: dict | None) -> str | None:
    """The read point an object's anomaly is charged to: its worst step's read point, or, when
    the worst step is the END step, its last read point (where it stopped). None without an
    explanation or read.

    Examples
    --------
    >>> worst_read_point(["a", "b"], {"read_point": None, "kind": "end"})
    'b'
    """
    if explanation is None:
        return None
    if explanation.get("read_point") is not None:
        return explanation["read_point"]
    return sequence[-1] if len(sequence) else None


# -- a model run's stored counts and settings -------------------------------------------------

MISSED_READ_RATE = "missed_read_rate"
"""Key of a model run's conf JSON beside the [detector] settings: the chance of a missed read the
model scores with ([sequences] missed_read_rate when fitted on RFID reads)."""


def run_conf(conf, missed_read_rate: float) -> dict:
    """The conf JSON of a model run: the [detector] settings and the missed-read rate."""
    import dataclasses

    return {**dataclasses.asdict(conf), MISSED_READ_RATE: float(missed_read_rate)}


def conf_of_run(stored: dict | None):
    """``(DetectorConf, missed_read_rate)`` of a model run's conf JSON (settings this version
    does not know are ignored; missing ones take their defaults)."""
    import dataclasses

    from soads.config import DetectorConf

    stored = dict(stored or {})
    known = {f.name for f in dataclasses.fields(DetectorConf)}
    conf = DetectorConf(**{k: v for k, v in stored.items() if k in known})
    return conf, float(stored.get(MISSED_READ_RATE, 0.0))



def model_run_rows(run_id: str, rows: Iterable[tuple]) -> list[dict]:
    """``detector_count`` rows of a model's count rows (``ContextModel.to_rows`` order: row_id
    is the position there)."""
    return [{S.RUN_ID: run_id, S.ROW_ID: i, S.FEATURE: f, S.CTX_ORDER: int(o),
             S.CONTEXT: list(c), S.VALUE: v, S.COUNT: int(n)}
            for i, (f, o, c, v, n) in enumerate(rows)]


def rows_of_run(records: Iterable[dict]) -> list[tuple]:
    """Count rows ``(feature, order, context tuple, value, count)`` of stored
    ``detector_count`` records (context decoded from JSON or already a list)."""
    out = []
    for r in records:
        ctx = r[S.CONTEXT]
        if isinstance(ctx, str):
            ctx = json.loads(ctx)
        out.append((r[S.FEATURE], int(r[S.CTX_ORDER]), tuple(ctx), r[S.VALUE], int(r[S.COUNT])))
    return out


# -- anomaly rate -----------------------------------------------------------------------------


def window_of(time_us: int, window_seconds: int) -> int:
    """Start (microseconds) of the tumbling window, aligned to the epoch, holding ``time_us``.

    >>> window_of(3_600_000_001, 3600)
    3600000000
    """
    w = int(window_seconds) * 1_000_000
    return (int(time_us) // w) * w


def anomaly_rate(objects: Iterable[tuple], window_seconds: int) -> dict:
    """Anomaly rate per window and read point, the slow, obvious way.

    An object belongs to the window (tumbling, aligned to the epoch) holding its last read. It
    is *seen* at every distinct read point on its path and *flagged* only at one: the read
    point of its worst step (:func:`worst_read_point`) when its verdict is an anomaly. So the
    flagged counts of a window add up to its flagged objects, and a read point's rate says
    where in the plant objects go wrong, not which stations anomalous objects passed.

    Parameters
    ----------
    objects : ``(sequence, last_us, is_anomaly, explanation dict | None)``

    Returns
    -------
    dict ``{(window_start_us, read_point): (objects, flagged)}`` (rate = flagged / objects)
    """
    out: dict = {}
    for seq, last_us, flagged, expl in objects:
        if last_us is None:
            continue
        w = window_of(last_us, window_seconds)
        at = worst_read_point(seq, expl) if flagged else None
        for rp in set(seq):
            n, f = out.get((w, rp), (0, 0))
            out[(w, rp)] = (n + 1, f + (rp == at))
    return out
