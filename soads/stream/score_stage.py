"""Anomaly Evaluator of the event job, on the executors: each object the state step updated is
scored against the newest mining run's patterns (Smith-Waterman, :mod:`soads.scoring`; DESIGN.md
"Alignment score") and judged by the context detector of the newest model run
(:mod:`soads.detect.context`; DESIGN.md "Context detector"). It writes nothing: the scores
travel on the object rows to the relational sink (:func:`soads.storage.sinks.write_updates`).

The executors therefore read the PATTERN TABLE and the model runs (``storage.db_url`` must be
reachable from them, as the event log already is).

Context detector: a live object (``closed`` false) is judged with ``closed=False``, so its END
step is not scored (it may still move on); the final row the state writes when it evicts an
object is judged with ``closed=True`` (the closed rule, :func:`soads.stream.state.is_closed`).
Before the first model run the verdict columns are null, as the alignment columns are before
the first mining run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import sqlalchemy as sa

from soads import query, schema as S
from soads import scoring as scorer
from soads.detect import runs
from soads.storage import tables
from soads.stream.state import _ABSENT, _SLOT, decode_attributes, update_struct

logger = logging.getLogger(__name__)


def scored_struct():
    """:func:`soads.stream.state.update_struct` without the visits' attributes (judged here,
    needed no further: they were most of the bytes handed back to the JVM), plus score, raw,
    pattern (array<string>) and run_id (:data:`soads.schema.SCORED_COLUMNS`), then anomaly,
    is_anomaly, explanation (JSON text) and model_run_id (:data:`soads.schema.VERDICT_COLUMNS`):
    set on object rows by :class:`ObjectScorer`, null elsewhere."""
    from pyspark.sql import types as T

    return T.StructType(_passed_fields() + [
        T.StructField(S.SCORE, T.DoubleType(), True),
        T.StructField(S.RAW, T.DoubleType(), True),
        T.StructField(S.PATTERN, T.ArrayType(T.StringType(), True), True),
        T.StructField(S.RUN_ID, T.StringType(), True),
        T.StructField(S.ANOMALY, T.DoubleType(), True),
        T.StructField(S.IS_ANOMALY, T.BooleanType(), True),
        T.StructField(S.EXPLANATION, T.StringType(), True),
        T.StructField(S.MODEL_RUN_ID, T.StringType(), True),
    ])


def _passed_fields() -> list:
    """The update rows' fields the score stage hands on (all but the attributes)."""
    return [f for f in update_struct().fields if f.name != S.ATTRIBUTES]


_WORKER_CACHES: dict = {}  # (db_url, maximal_only) -> PatternCache, per Python worker process
_WORKER_MODELS: dict = {}  # (db_url, DetectorConf) -> ModelCache, per Python worker process


def score_objects(objects: Sequence[tuple], cache: "PatternCache", scoring,
                  refresh: bool = True) -> list[tuple]:
    """``(oid, sequence, last_us)`` -> ``(oid, sequence, last_us, score, raw, pattern, run_id)``
    against the newest mining run (score fields None before the first run). ``refresh=False``
    keeps the run the cache last read."""
    run_id, pats = cache.newest() if refresh else (cache.run_id, cache.patterns)
    if run_id is None or not objects:
        return [(*o, None, None, None, None) for o in objects]
    return [(oid, seq, last, sc, raw, pats[k] if k >= 0 else None, run_id)
            for (oid, seq, last), (sc, raw, k) in zip(objects, cache.score(
                [o[1] for o in objects], scoring))]


def judge_objects(objects: Sequence[tuple], models: "ModelCache", refresh: bool = True
                  ) -> list[tuple]:
    """``(sequence, encoded attributes per visit, closed)`` -> ``(anomaly, is_anomaly,
    explanation JSON text, model_run_id)`` by the newest model run of the context detector (all
    None before the first run). ``refresh=False`` keeps the run the cache last read."""
    run_id, model = models.newest() if refresh else (models.run_id, models.model)
    if run_id is None or not objects:
        return [(None, None, None, None)] * len(objects)
    verdicts = model.score_many(
        [list(o[0]) for o in objects],
        [None if o[1] is None else [decode_attributes(a) for a in o[1]] for o in objects],
        [bool(o[2]) for o in objects])
    return [(*runs.verdict_columns(v), run_id) for v in verdicts]


def judge_arrow(sequences, attributes, closed, models: "ModelCache", sequence_lists=None
                ) -> list[tuple]:
    """:func:`judge_objects` on the Arrow columns of the object rows (``sequence``
    list<string>, ``attributes`` list<string> of :func:`~soads.stream.state.encode_attributes`
    strings, ``closed``) against the run ``models`` last read: the visits' attributes are split
    by Arrow's string kernels and handed to
    :meth:`~soads.detect.context.ContextModel.score_steps` as arrays, without a dict per visit
    (a micro-batch carries ~230,000 visits). Same verdicts as :func:`judge_objects`.
    ``sequence_lists``: ``sequences.to_pylist()`` when the caller has it already."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(sequences)
    run_id, model = models.run_id, models.model
    if run_id is None or not n:
        return [(None, None, None, None)] * n
    lengths = pc.fill_null(pc.list_value_length(sequences), 0).to_numpy().astype(np.int64)
    steps = pc.dictionary_encode(sequences.flatten(), null_encoding="encode")
    names = steps.dictionary.to_pylist()
    ids = steps.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    # the step number of every visit that has an attributes entry (objects with a null list
    # have none; the others one per step, as score_many checks)
    has = pc.is_valid(attributes).to_numpy(zero_copy_only=False)
    n_attr = pc.fill_null(pc.list_value_length(attributes), 0).to_numpy().astype(np.int64)
    bad = has & (n_attr != lengths)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"attributes has {n_attr[i]} entries for a sequence of {lengths[i]} "
                         f"steps (one per step)")
    first = np.cumsum(lengths) - lengths
    m = n_attr[has]
    visit_step = (np.repeat(first[has] - (np.cumsum(m) - m), m) + np.arange(int(m.sum()))
                  ).astype(np.int64)
    visits = attributes.flatten()
    # "" (or null) is a visit without attributes; the others have one slot per key
    keep = pc.fill_null(pc.not_equal(visits, ""), False).to_numpy(zero_copy_only=False)
    if not keep.all():
        visits, visit_step = visits.filter(pa.array(keep)), visit_step[keep]
    slots = pc.split_pattern(visits, _SLOT)
    n_keys = len(S.VISIT_ATTRIBUTES)
    if len(slots) and not (pc.list_value_length(slots).to_numpy(zero_copy_only=False)
                           == n_keys).all():
        i = int(np.argmax(pc.list_value_length(slots).to_numpy(zero_copy_only=False) != n_keys))
        raise ValueError(f"not encoded visit attributes: {visits[i].as_py()!r}")
    values = slots.flatten()
    slot_key = np.tile(np.arange(n_keys), len(slots))
    slot_step = np.repeat(visit_step, n_keys)
    present = pc.not_equal(values, _ABSENT).to_numpy(zero_copy_only=False)
    features = []
    # in order of each key's first appearance over the steps, as score_many meets them
    key_of = slot_key[present]
    uniq, at = np.unique(key_of, return_index=True)
    for k in uniq[np.argsort(at)]:
        on = present & (slot_key == k)
        vals = pc.dictionary_encode(values.filter(pa.array(on)))
        features.append((S.VISIT_ATTRIBUTES[int(k)], slot_step[on],
                         vals.dictionary.to_pylist(),
                         vals.indices.to_numpy(zero_copy_only=False).astype(np.int64)))
    verdicts = model.score_steps(lengths, pc.fill_null(closed, False).to_numpy(
        zero_copy_only=False), names, ids, features,
        sequences.to_pylist() if sequence_lists is None else sequence_lists)
    return [(*runs.verdict_columns(v), run_id) for v in verdicts]


@dataclass(frozen=True)
class ObjectScorer:
    """``mapInArrow`` stage after the state step: the Anomaly Evaluator on the executors.

    Each updated object's sequence is scored against the newest mining run, and judged with its
    attributes by the newest model run of the context detector (both read once per task, so a
    new run is picked up at the next micro-batch without a restart). The scorer, its
    per-sequence cache (:class:`PatternCache`) and the model (:class:`ModelCache`) live in the
    Python worker process and outlive the task (Spark reuses workers), so patterns and counts
    are re-read only when a newer run appears. Scoring here rather than in the driver's
    transaction runs it in parallel over the partitions, and the driver's part of a micro-batch
    (which holds up the next one) shrinks to the writes. Replays are harmless: a batch already
    in the ledger is skipped whatever its scores are.

    Parameters
    ----------
    db_url : str
        Where the PATTERN TABLE and the model runs are (the executors read them).
    scoring : soads.config.ScoringConf
    detector : soads.config.DetectorConf, optional
        The context detector's settings for :func:`soads.query.detector_model` (the counts and
        the attributes left out are the model run's; None: the settings the run was fitted
        with).
    """

    db_url: str
    scoring: object
    detector: object = None

    def __call__(self, batches):
        """Arrow batches of :func:`~soads.stream.state.update_struct` rows -> the same rows
        without the attributes, with :data:`soads.schema.SCORED_COLUMNS` and
        :data:`soads.schema.VERDICT_COLUMNS` (:func:`scored_struct`)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        from pyspark.sql.pandas.types import to_arrow_schema

        key = (self.db_url, self.scoring.maximal_only)
        cache = _WORKER_CACHES.get(key)
        if cache is None:
            cache = _WORKER_CACHES[key] = PatternCache(tables.engine(self.db_url),
                                                       self.scoring.maximal_only)
        key = (self.db_url, self.detector)
        models = _WORKER_MODELS.get(key)
        if models is None:
            models = _WORKER_MODELS[key] = ModelCache(tables.engine(self.db_url), self.detector)
        schema = to_arrow_schema(scored_struct())
        passed = [f.name for f in _passed_fields()]
        added = S.SCORED_COLUMNS + S.VERDICT_COLUMNS
        fresh = True
        for b in batches:
            is_obj = pc.equal(b.column(S.KIND), S.KIND_OBJECT).to_pylist()
            rows = [i for i, x in enumerate(is_obj) if x]
            scores = [None] * b.num_rows
            if rows:
                if fresh:
                    # once per task: this micro-batch's newest runs
                    cache.newest()
                    models.newest()
                    fresh = False
                objs = b.take(pa.array(rows, pa.int64()))
                seqs = objs.column(S.SEQUENCE)
                seq_lists = seqs.to_pylist()
                aligned = score_objects([(oid, seq, None) for oid, seq in zip(
                    objs.column(S.OID).to_pylist(), seq_lists)], cache, self.scoring,
                    refresh=False)
                judged = judge_arrow(seqs, objs.column(S.ATTRIBUTES), objs.column(S.CLOSED),
                                     models, seq_lists)
                for i, got, verdict in zip(rows, aligned, judged):
                    scores[i] = got[3:] + verdict
            extra = [pa.array([x[j] if x else None for x in scores], schema.field(c).type)
                     for j, c in enumerate(added)]
            yield pa.RecordBatch.from_arrays([b.column(c) for c in passed] + extra,
                                             schema=schema)


class ModelCache:
    """The newest model run of the context detector (:func:`soads.query.newest_detector_run`),
    its counts re-read only when a newer run appears (picked up at the next micro-batch,
    without a restart, as :class:`PatternCache` picks up a mining run).

    The model judges a task's objects in one vectorised call and keeps no per-case memory: one
    like :class:`PatternCache`'s, keyed by (path, attributes, closed), gained nothing measurable
    in ``soads bench stream`` (an updated object's path has just changed). The model is
    :func:`soads.query.detector_model`'s, the same the batch scoring reads, so both judge an
    object alike.
    """

    def __init__(self, db_url: str | sa.Engine, conf=None):
        self.db_url, self.conf = db_url, conf
        self.run_id, self.model = None, None

    def newest(self):
        """``(run_id, ContextModel)`` of the newest model run, ``(None, None)`` before any."""
        run = query.newest_detector_run(self.db_url)
        if run is None:
            self.run_id, self.model = None, None
        elif run[S.RUN_ID] != self.run_id:
            self.model = query.detector_model(self.db_url, run[S.RUN_ID], self.conf)
            self.run_id = run[S.RUN_ID]
            logger.info("context detector: model run %s", self.run_id)
        return self.run_id, self.model


class PatternCache:
    """The newest mining run's patterns, re-read only when a newer run appears (a new run is
    picked up at the next micro-batch, without a restart), and the scores of sequences already
    seen against them.

    Scoring is most of a micro-batch's cost (objects x patterns alignments), yet objects of one
    process walk the same few paths: the alignment score is a pure function of (sequence, run),
    so each distinct sequence is aligned once per run and remembered (at most ``max_cached``
    sequences; the memory is dropped when full or when the run changes).
    """

    def __init__(self, db_url: str | sa.Engine, maximal_only: bool, max_cached: int = 200_000):
        self.db_url, self.maximal_only, self.max_cached = db_url, maximal_only, max_cached
        self.run_id, self.patterns = None, []
        self._scores: dict[tuple, tuple[float, float, int]] = {}

    def newest(self) -> tuple[str | None, list[list[str]]]:
        """``(run_id, patterns in use)`` of the newest mining run, ``(None, [])`` before any."""
        run = tables.latest_run(self.db_url)
        if run is None:
            return None, []
        if run[S.RUN_ID] != self.run_id:
            self.run_id = run[S.RUN_ID]
            rows = tables.read_table(self.db_url, "pattern", {S.RUN_ID: self.run_id},
                                     order_by=[S.PATTERN_ID])
            self.patterns = [list(r[S.PATTERN]) for r in rows
                             if r[S.MAXIMAL] or not self.maximal_only]
            self._scores = {}
        return self.run_id, self.patterns

    def score(self, sequences: Sequence[Sequence[str]], scoring) -> list[tuple[float, float, int]]:
        """``(score, raw, best pattern index)`` per sequence against :meth:`newest`'s patterns
        (:func:`soads.scoring.score_batch` on the sequences not seen before)."""
        keys = [tuple(s) for s in sequences]
        todo = list({k: None for k in keys if k not in self._scores})
        new = {}
        if todo:
            scores, raws, best = scorer.score_batch(todo, self.patterns, scoring)
            new = dict(zip(todo, zip(scores.tolist(), raws.tolist(), best.tolist())))
        out = [new[k] if k in new else self._scores[k] for k in keys]
        if len(self._scores) + len(new) > self.max_cached:
            self._scores = {}
        self._scores.update(new)
        return out
