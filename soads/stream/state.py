"""Relational Dependency Updater of the event job: the per-oid state step (DESIGN.md "Streaming
guarantees"), as a pure core (:func:`step`) and as Spark state operators (:func:`object_updates`:
the JVM port ``soads/java/RelationUpdater.java`` or a Python state function running :func:`step`).

Exactly-once: Spark's checkpoint replays a micro-batch with the same offsets, watermark and state,
and the step is deterministic, so a replay produces the same rows (the relational sink skips a
batch id it already recorded, :mod:`soads.storage.sinks`).

Late and out-of-order policy
----------------------------
Every event is stored in the EVENT LOG TABLE whatever its time. For relations and scores, the
new events of one object in a micro-batch are taken in ``(event_time, arrival)`` order (arrival
= :func:`soads.sequences.arrival_key` of the source, as in the batch Sequence Extractor). An
event is *late* when its event_time is earlier than the query's event-time watermark of that
micro-batch (the largest event_time seen in earlier micro-batches minus
``watermark_seconds``), or not later than the object's last read accepted in an *earlier*
micro-batch (ties inside one micro-batch keep arrival order). A late event creates no relation,
changes no state and no score; it is recorded in the ``late_event`` table (oid, source,
read_point, event_time), in the same transaction as the relation counts. Accepted events of an
object therefore form a time-ordered chain; a gap of more than ``idle_seconds`` between two
accepted reads ends the object's *session*: the next read starts a new sequence (no relation
across the gap) and its relations count support again (a reappearing oid is a new object). An
object's state is evicted once the watermark is more than ``idle_seconds`` past its last read
(an event-time timeout), so state stays bounded by the objects read within
``idle_seconds + watermark_seconds`` of the newest event time; a read arriving
after the eviction is either late (below the watermark) or more than ``idle_seconds`` after the
last read, so eviction never changes a result. Eviction writes the object's final row,
``closed`` (the closed rule, :func:`is_closed`: its END step is then judged); every other
object row is live (``closed`` false). Each visit keeps the attributes of its first read
(:data:`soads.schema.VISIT_ATTRIBUTES`, a null field left out), as the batch sequences do.
The batch recomputation (:func:`recompute_sessions`) applies the same policy: the event log
minus the ``late_event`` rows, per oid in ``(event_time, arrival)`` order, cut at gaps of more
than ``idle_seconds``, de-duplicated within the dwell window; its relation counts equal the
table, and scoring each object's last session equals ``object_score`` (verdicts: closed by
:func:`is_closed` at the stream's last watermark).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Iterable

from soads import schema as S
from soads.dependencies import LastRead, advance
from soads.detect import runs
from soads.sequences import arrival_key

logger = logging.getLogger(__name__)


# -- pure core: the per-oid step -------------------------------------------------------------


NO_ATTRIBUTES: dict = {}


@dataclass(frozen=True)
class ObjectState:
    """Per-oid state: the last accepted read, the session's visits, the relations whose
    support this session already counted, and per visit the attributes of its first read
    (``{key: value}`` with the keys of :data:`soads.schema.VISIT_ATTRIBUTES`, a null field left
    out: the batch sequences' rule, :func:`soads.sequences.extract_sequences`). Visits and
    attributes are bounded by ``max_visits`` (the newest kept)."""

    last: LastRead
    visits: tuple[str, ...]
    seen: frozenset
    attributes: tuple = ()


@dataclass(frozen=True)
class StepOut:
    """What one step found: relation occurrences (freq), relations new to the session
    (support), late reads, and whether the object changed (then it is scored)."""

    relations: tuple = ()
    new_support: tuple = ()
    late: tuple = ()
    changed: bool = False


def step(state: ObjectState | None, reads: Iterable[tuple], watermark_us: int,
         dwell_seconds: float, idle_seconds: float, max_visits: int = 1000
         ) -> tuple[ObjectState | None, StepOut]:
    """One micro-batch of one object: new reads ``(read_point, time_us, source[,
    attributes])``, any order (``attributes``: the read's ``{key: value}``, default none).

    Applies the late/out-of-order policy of the module docstring; the dwell de-duplication
    and the relations come from :func:`soads.dependencies.advance`. A new visit keeps the
    attributes of its first read; a repeat within the dwell window changes nothing.

    Examples
    --------
    >>> st, out = step(None, [("B", 20_000_000, "t/0/2"), ("A", 0, "t/0/1")], 0, 60, 3600)
    >>> st.visits, out.relations, out.new_support
    (('A', 'B'), (('A', 'B'),), (('A', 'B'),))
    >>> st, out = step(st, [("A", 10_000_000, "t/0/3"), ("C", 90_000_000, "t/0/4")], 0, 60, 3600)
    >>> st.visits, out.relations, [r[2] for r in out.late]
    (('A', 'B', 'C'), (('B', 'C'),), ['t/0/3'])
    >>> st, _ = step(None, [("A", 0, "f:1", {"biz_step": "x"}), ("A", 10**6, "f:2", {}),
    ...                     ("B", 10**8, "f:3", {"biz_step": "y"})], 0, 60, 3600)
    >>> st.attributes
    ({'biz_step': 'x'}, {'biz_step': 'y'})
    """
    idle_us = int(idle_seconds * 1e6)
    prev_time = state.last.time_us if state is not None else None
    rels, support, late = [], [], []
    changed = False
    for r in sorted(reads, key=lambda r: (r[1], arrival_key(r[2]))):
        rp, t, src = r[0], r[1], r[2]
        attrs = r[3] if len(r) > 3 and r[3] is not None else NO_ATTRIBUTES
        if t < watermark_us or (prev_time is not None and t <= prev_time):
            late.append((rp, t, src))
            continue
        changed = True
        if state is None or t - state.last.time_us > idle_us:
            # a new session: no relation across the gap, support counts again
            state = ObjectState(LastRead(rp, t), (rp,), frozenset(), (dict(attrs),))
            continue
        last, found = advance(state.last, [(rp, t)], dwell_seconds)
        visits, seen, attributes = state.visits, state.seen, state.attributes
        for rel in found:
            rels.append(rel)
            visits = (visits + (rel[1],))[-max_visits:]
            attributes = (attributes + (dict(attrs),))[-max_visits:]
            if rel not in seen:
                support.append(rel)
                seen = seen | {rel}
        state = ObjectState(last, visits, seen, attributes)
    return state, StepOut(tuple(rels), tuple(support), tuple(late), changed)


def is_closed(last_us: int, horizon_us: int, idle_seconds: float) -> bool:
    """The closed rule, batch and stream alike: an object is finished once the horizon (the
    stream: the event-time watermark; a batch recomputation: the horizon it is given) is more
    than ``idle_seconds`` past its last read. Its END step is then scored.

    >>> is_closed(0, 3_600_000_000, 3600), is_closed(0, 3_600_000_001, 3600)
    (False, True)
    """
    return runs.is_closed(last_us, horizon_us, idle_seconds)


def should_evict(state: ObjectState, watermark_us: int, idle_seconds: float) -> bool:
    """True once the watermark is more than ``idle_seconds`` past the object's last read
    (:func:`is_closed`): the state goes, and the object's final row is written closed.

    >>> should_evict(ObjectState(LastRead("A", 0), ("A",), frozenset()), 3_601_000_000, 3600)
    True
    """
    return is_closed(state.last.time_us, watermark_us, idle_seconds)


@dataclass(frozen=True)
class Session:
    """One session of an object as the batch recomputation sees it: its visits, each visit's
    attributes (those of its first read) and the time of its last read (µs)."""

    sequence: list
    attributes: list
    last_us: int


def recompute_sessions(reads: Iterable[tuple], dwell_seconds: float, idle_seconds: float
                       ) -> dict[str, list[Session]]:
    """The batch recomputation of the policy: ``(oid, read_point, time_us, source[,
    attributes])`` reads (the event log minus the late events) -> ``{oid: [Session, ...]}``.

    Examples
    --------
    >>> got = recompute_sessions([("o", "A", 0, "f:1", {"action": "ADD"}),
    ...                           ("o", "A", 10**6, "f:2", {"action": "OBSERVE"}),
    ...                           ("o", "C", 10**10, "f:3")], 60, 3600)
    >>> [(s.sequence, s.attributes, s.last_us) for s in got["o"]]
    [(['A'], [{'action': 'ADD'}], 1000000), (['C'], [{}], 10000000000)]
    """
    by_oid: dict[str, list] = {}
    for r in reads:
        attrs = r[4] if len(r) > 4 and r[4] is not None else NO_ATTRIBUTES
        by_oid.setdefault(r[0], []).append((r[2], arrival_key(r[3]), r[1], attrs))
    out = {}
    idle_us = int(idle_seconds * 1e6)
    for oid, rs in by_oid.items():
        rs.sort(key=lambda r: (r[0], r[1]))
        sessions, cur = [], [rs[0]]
        for prev, r in zip(rs, rs[1:]):
            if r[0] - prev[0] > idle_us:
                sessions.append(cur)
                cur = []
            cur.append(r)
        sessions.append(cur)
        out[oid] = []
        for s in sessions:
            # soads.sequences.dedup_dwell, keeping each visit's first read
            keep = [i for i in range(len(s)) if i == 0 or not (
                s[i][2] == s[i - 1][2] and s[i][0] / 1e6 - s[i - 1][0] / 1e6 <= dwell_seconds)]
            out[oid].append(Session([s[i][2] for i in keep], [dict(s[i][3]) for i in keep],
                                    s[-1][0]))
    return out


def recompute_sequences(reads: Iterable[tuple], dwell_seconds: float,
                        idle_seconds: float) -> dict[str, list[list[str]]]:
    """:func:`recompute_sessions`' sequences only: ``{oid: [session sequence, ...]}``.

    Examples
    --------
    >>> recompute_sequences([("o", "A", 0, "f:1"), ("o", "B", 10**6, "f:2"),
    ...                      ("o", "C", 10**10, "f:3")], 60, 3600)
    {'o': [['A', 'B'], ['C']]}
    """
    return {oid: [s.sequence for s in ss]
            for oid, ss in recompute_sessions(reads, dwell_seconds, idle_seconds).items()}


# -- Spark: the state step (JVM flatMapGroupsWithState, or Python applyInPandasWithState) ----

OPERATORS = ("jvm", "python")
# what a checkpoint's state holds per operator (soads.stream.checkpoint refuses another): the
# operator and its state layout (the JVM operator's ObjectState.FORMAT and its (hash, oid) key
# since format 2; the Python one stores _encode's tuple; both keep the visits' attributes
# since format 2; the visits' attributes since jvm format 3 / python format 2; jvm format 4
# keeps each visit's attributes as one encoded string)
STATE_FORMATS = {"jvm": "jvm state-format-4", "python": "python state-format-2"}
_WATERMARK_DELAY_KEY = "spark.watermarkDelayMs"  # Spark's EventTimeWatermark.delayKey
_NEVER_LATE = "2200-01-01 00:00:00"  # within pandas' nanosecond range


_ABSENT, _SLOT = "\x1f", "\x1e"  # ASCII unit and record separators: never in an EPCIS value


def encode_attributes(attributes: dict) -> str:
    """One read's or visit's attributes as the parse stage, the state and its update rows carry
    them: one slot per key of :data:`soads.schema.VISIT_ATTRIBUTES`, in that order, joined by
    RS; a slot holds the value, or US when the key is absent; "" when all are absent.
    Positional, so the keys' names are not repeated in every visit (a fifth of the bytes the
    JVM state operator copies and the score stage reads).

    >>> encode_attributes({"biz_step": "s", "action": "ADD"}) == "s\x1e\x1f\x1e\x1f\x1eADD\x1e\x1f"
    True
    >>> decode_attributes(encode_attributes({"biz_step": "s", "action": "ADD"}))
    {'biz_step': 's', 'action': 'ADD'}
    >>> decode_attributes(encode_attributes({}))
    {}
    """
    if not attributes:
        return ""
    if not _KEYS.issuperset(attributes):
        raise ValueError(f"not visit attributes: {sorted(set(attributes) - _KEYS)} "
                         f"(expected keys of {S.VISIT_ATTRIBUTES})")
    return _SLOT.join(attributes.get(k, _ABSENT) for k in S.VISIT_ATTRIBUTES)


_KEYS = frozenset(S.VISIT_ATTRIBUTES)


def decode_attributes(encoded: str | None) -> dict:
    """:func:`encode_attributes` undone (None or "" is a visit without attributes)."""
    if not encoded:
        return {}
    slots = encoded.split(_SLOT)
    if len(slots) != len(S.VISIT_ATTRIBUTES):
        raise ValueError(f"not encoded visit attributes: {encoded!r}")
    return {k: v for k, v in zip(S.VISIT_ATTRIBUTES, slots) if v != _ABSENT}


def update_struct():
    """Schema of :func:`object_updates` rows: kind, oid, a, b, freq, support, read_point,
    time_us, source, sequence array<string>, last_us, attributes array<string> (one
    :func:`encode_attributes` string per visit), closed (times in µs since the epoch, UTC). The same as
    ``RelationUpdater.OUTPUT`` in soads/java/RelationUpdater.java."""
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.KIND, T.StringType(), False),
        T.StructField(S.OID, T.StringType(), True),
        T.StructField(S.A, T.StringType(), True),
        T.StructField(S.B, T.StringType(), True),
        T.StructField(S.FREQ, T.LongType(), True),
        T.StructField(S.SUPPORT, T.LongType(), True),
        T.StructField(S.READ_POINT, T.StringType(), True),
        T.StructField(S.TIME_US, T.LongType(), True),
        T.StructField(S.SOURCE, T.StringType(), True),
        T.StructField(S.SEQUENCE, T.ArrayType(T.StringType(), True), True),
        T.StructField(S.LAST_US, T.LongType(), True),
        # one string per visit (encode_attributes): far cheaper than a map per visit to carry
        # through the JVM state, the Arrow hand-over and the score stage
        T.StructField(S.ATTRIBUTES, T.ArrayType(T.StringType(), True), True),
        T.StructField(S.CLOSED, T.BooleanType(), True),
    ])


def _state_struct():
    from pyspark.sql import types as T

    return T.StructType([
        T.StructField(S.READ_POINT, T.StringType(), False),
        T.StructField(S.TIME_US, T.LongType(), False),
        T.StructField(S.SEQUENCE, T.StringType(), False),   # JSON list of visits
        T.StructField(S.SEEN, T.StringType(), False),       # JSON list of [a, b]
        T.StructField(S.ATTRIBUTES, T.StringType(), False),  # JSON list of {key: value}
    ])


def _encode(st: ObjectState) -> tuple:
    return (st.last.read_point, st.last.time_us, json.dumps(list(st.visits)),
            json.dumps(sorted(list(r) for r in st.seen)), json.dumps(list(st.attributes)))


def _decode(row: tuple) -> ObjectState:
    rp, t, visits, seen, attributes = row
    return ObjectState(LastRead(rp, int(t)), tuple(json.loads(visits)),
                       frozenset(tuple(r) for r in json.loads(seen)),
                       tuple(json.loads(attributes)))


def _update_frame(oid: str, st: ObjectState | None, out: StepOut, closed: bool = False):
    """pandas rows of :func:`update_struct` for one object's step; ``closed``: the state
    evicts the object, whose final (closed) object row is written even if the step changed
    nothing.

    Built column by column from plain lists (typed once): this runs once per updated object
    per micro-batch, and a row-dict DataFrame cost ~2 ms here.
    """
    import pandas as pd

    freq: dict = {}
    for rel in out.relations:
        freq[rel] = freq.get(rel, 0) + 1
    support = set(out.new_support)
    rels = sorted(freq.items())
    late = out.late
    obj = 1 if ((out.changed or closed) and st is not None) else 0
    n_rel, n_late = len(rels), len(late)
    pad_rel, pad_late, pad_obj = [None] * n_rel, [None] * n_late, [None] * obj
    return pd.DataFrame({
        S.KIND: [S.KIND_RELATION] * n_rel + [S.KIND_LATE] * n_late + [S.KIND_OBJECT] * obj,
        S.OID: [oid] * (n_rel + n_late + obj),
        S.A: [r[0][0] for r in rels] + pad_late + pad_obj,
        S.B: [r[0][1] for r in rels] + pad_late + pad_obj,
        S.FREQ: pd.array([n for _, n in rels] + pad_late + pad_obj, dtype="Int64"),
        S.SUPPORT: pd.array([int(r in support) for r, _ in rels] + pad_late + pad_obj,
                            dtype="Int64"),
        S.READ_POINT: pad_rel + [r[0] for r in late] + pad_obj,
        S.TIME_US: pd.array(pad_rel + [int(r[1]) for r in late] + pad_obj, dtype="Int64"),
        S.SOURCE: pad_rel + [r[2] for r in late] + pad_obj,
        S.SEQUENCE: pd.Series(pad_rel + pad_late + ([list(st.visits)] if obj else []),
                              dtype=object),
        S.LAST_US: pd.array(pad_rel + pad_late + ([int(st.last.time_us)] if obj else []),
                          dtype="Int64"),
        S.ATTRIBUTES: pd.Series(pad_rel + pad_late + (
            [[encode_attributes(a) for a in st.attributes]] if obj else []), dtype=object),
        S.CLOSED: pd.array(pad_rel + pad_late + ([closed] if obj else []), dtype="boolean"),
    })  # columns in update_struct() order


def _python_updates(reads, dwell_seconds: float, idle_seconds: float, max_visits: int):
    """The state step as a Python state function (``applyInPandasWithState``): the oracle of
    the JVM operator, and the fallback where no JDK is at hand."""
    from pyspark.sql import functions as F
    from pyspark.sql.streaming.state import GroupStateTimeout

    idle_us = int(idle_seconds * 1e6)

    def run(key, frames, state):
        oid = key[0]
        watermark_us = state.getCurrentWatermarkMs() * 1000
        if state.hasTimedOut:
            # the watermark passed last read + idle_seconds: the object is finished; its final
            # row is scored closed (its END step counts); a later read of it is late or
            # starts a new session
            final = _decode(state.get)
            state.remove()
            yield _update_frame(oid, final, StepOut(), closed=True)
            return
        current = _decode(state.get) if state.exists else None
        batch = []
        for pdf in frames:
            batch.extend(zip(pdf[S.READ_POINT].tolist(), pdf[S.TIME_US].tolist(),
                             pdf[S.SOURCE].tolist(),
                             (decode_attributes(a) if isinstance(a, str) else {}
                              for a in pdf[S.ATTRIBUTES].tolist())))
        new, out = step(current, batch, watermark_us, dwell_seconds, idle_seconds, max_visits)
        evicted = new is not None and should_evict(new, watermark_us, idle_seconds)
        if new is None or evicted:
            if state.exists:
                state.remove()
        else:
            state.update(_encode(new))
            state.setTimeoutTimestamp(-(-(new.last.time_us + idle_us) // 1000))
        yield _update_frame(oid, new, out, closed=evicted)

    return reads.groupBy(F.col(S.OID)).applyInPandasWithState(
        run, update_struct(), _state_struct(), "append", GroupStateTimeout.EventTimeTimeout)


def object_updates(events, dwell_seconds: float, idle_seconds: float, watermark_seconds: float,
                   max_visits: int = 1000, operator: str = "jvm"):
    """Relational Dependency Updater with per-oid state (Spark state store).

    Parameters
    ----------
    events : DataFrame (streaming)
        At least ``oid, read_point, event_time, source`` and the string columns of
        ``attributes``, the read's :func:`encode_attributes` string (the parse stage's
        :func:`soads.stream.parse_stage.read_struct`).
    dwell_seconds, idle_seconds, watermark_seconds, max_visits
        The policy of the module docstring.
    operator : {"jvm", "python"}
        ``jvm``: ``RelationUpdater`` (soads/java), flatMapGroupsWithState, microseconds per
        object; the session needs its jar (:func:`soads.stream.job.spark_jars`). ``python``:
        applyInPandasWithState running :func:`step`, ~0.2-1 ms per object and micro-batch.
        Both give the same rows (the tests compare them).

    Returns
    -------
    DataFrame
        :func:`update_struct`: ``relation`` rows: an object's new (a, b) occurrences in this
        micro-batch (``freq``) and 1 in ``support`` when (a, b) is new to its session; ``late``
        rows: oid, read_point, time_us, source of a late event; ``object`` rows: an updated
        object's session sequence, last_us, attributes (per visit, those of its first read)
        and closed = False, or, when the state evicts an object (the watermark passed its
        last read + ``idle_seconds``), its final row with closed = True.
    """
    from pyspark.sql import functions as F

    if idle_seconds < dwell_seconds:
        raise ValueError("idle_seconds must be at least dwell_seconds")
    if operator not in OPERATORS:
        raise ValueError(f"stream.state_operator must be one of {OPERATORS}, not {operator!r}")
    delay_ms = int(watermark_seconds * 1000)
    events = events.withWatermark(S.EVENT_TIME, f"{delay_ms} milliseconds")
    # Spark drops rows below the watermark before an event-time-timeout state function sees
    # them; our policy records them as late instead. So the event time travels as plain
    # microseconds and the operator's watermark column is a constant no row is ever behind (the
    # watermark itself is still computed from event_time above).
    reads = events.select(
        S.OID, S.READ_POINT, F.unix_micros(S.EVENT_TIME).alias(S.TIME_US), S.SOURCE,
        F.lit(_NEVER_LATE).cast("timestamp").alias(
            S.NEVER_LATE, metadata={_WATERMARK_DELAY_KEY: delay_ms}),
        S.ATTRIBUTES,
    )
    # oid, read_point, time_us, source, _never_late, attributes (one row per new flat event)
    if operator == "python":
        return _python_updates(reads, dwell_seconds, idle_seconds, max_visits)
    from pyspark.sql import DataFrame

    spark = events.sparkSession
    try:
        updater = spark._jvm.soads.jvm.RelationUpdater
        jdf = updater.apply(reads._jdf, float(dwell_seconds), float(idle_seconds),
                            int(max_visits), S.ATTRIBUTES)
    except Exception as e:  # py4j: class not on the class path
        if "RelationUpdater" in str(e) or "JavaPackage" in str(e):
            raise RuntimeError(
                "the JVM state operator is not on Spark's class path: build the session with "
                "spark.jars from soads.stream.job.spark_jars(...) (spark-submit: --jars "
                "$(python -m soads.jvm)), or set stream.state_operator=python") from e
        raise
    return DataFrame(jdf, spark)


def _combine_batches(batches):
    """Arrow batches of :func:`update_struct` rows -> the same rows with the relation rows
    summed by (a, b) (oid null); late and object rows pass through unchanged."""
    import pyarrow as pa
    import pyarrow.compute as pc

    sums: dict = {}
    schema = None
    for b in batches:
        schema = b.schema
        is_rel = pc.equal(b.column(S.KIND), S.KIND_RELATION)
        others = b.filter(pc.invert(is_rel))
        if others.num_rows:
            yield others
        rel = b.filter(is_rel)
        for a, bb, f, n in zip(rel.column(S.A).to_pylist(), rel.column(S.B).to_pylist(),
                               rel.column(S.FREQ).to_pylist(), rel.column(S.SUPPORT).to_pylist()):
            acc = sums.setdefault((a, bb), [0, 0])
            acc[0] += f
            acc[1] += n
    if sums:
        keys = sorted(sums)
        k = len(keys)
        cols = {S.KIND: [S.KIND_RELATION] * k, S.A: [a for a, _ in keys],
                S.B: [b for _, b in keys], S.FREQ: [sums[x][0] for x in keys],
                S.SUPPORT: [sums[x][1] for x in keys]}
        yield pa.RecordBatch.from_arrays(
            [pa.array(cols.get(f.name, [None] * k), f.type) for f in schema], schema=schema)


def combine_relations(updates, operator: str = "python"):
    """Sum the relation rows of :func:`object_updates` by (a, b) within each Spark partition, so
    a micro-batch hands the driver about (partitions x distinct relations) relation rows instead
    of one per object and relation, in one Spark job. ``operator``: ``jvm`` runs
    ``RelationUpdater.combineRelations`` (no Python worker round trip), ``python`` a
    ``mapInArrow`` (same rows)."""
    if operator == "jvm":
        from pyspark.sql import DataFrame

        jdf = updates.sparkSession._jvm.soads.jvm.RelationUpdater.combineRelations(updates._jdf)
        return DataFrame(jdf, updates.sparkSession)
    return updates.mapInArrow(_combine_batches, update_struct())
