"""The streaming event job (soads.stream, soads.storage.sinks, soads.ingest) without services:
a file source, Parquet event log, SQLite tables."""
import datetime as dt
import json
import os
import random
import time

import pytest

from soads import schema as S
from soads.config import Config, PreprocessConf, ScoringConf, StorageConf, StreamConf
from soads.dependencies import LastRead, relation_counts
from soads.scoring import score_batch
from soads.stream import checkpoint
from soads.stream.job import start_event_queries
from soads.detect import runs
from soads.detect.context import ContextModel
from soads.stream.score_stage import (ModelCache, ObjectScorer, PatternCache, judge_arrow,
                                      judge_objects, score_objects, scored_struct)
from soads.stream.state import (ObjectState, combine_relations, encode_attributes,
                                recompute_sequences, recompute_sessions, should_evict, step,
                                update_struct)
from streamtools import (add_model_run, assert_rates_recompute, assert_verdicts_recompute,
                         assert_windows_recompute, ledger_watermark_us)

MIN = 60_000_000  # µs


# -- the pure state step ---------------------------------------------------------------------


def test_step_orders_a_batch_by_event_time_then_arrival():
    st, out = step(None, [("C", 2 * MIN, "f:3"), ("A", 0, "f:1"), ("B", 2 * MIN, "f:2")],
                   0, 60, 3600)
    assert st.visits == ("A", "B", "C")
    assert out.relations == (("A", "B"), ("B", "C")) and out.changed and out.late == ()
    assert st.last == LastRead("C", 2 * MIN)


def test_step_dwell_repeat_is_one_visit():
    st, out = step(None, [("A", 0, "f:1"), ("A", 30_000_000, "f:2"), ("B", MIN, "f:3")],
                   0, 60, 3600)
    assert st.visits == ("A", "B") and out.relations == (("A", "B"),)


def test_step_support_counts_once_per_object():
    st, out = step(None, [("A", 0, "f:1"), ("B", MIN, "f:2"), ("A", 2 * MIN, "f:3"),
                          ("B", 3 * MIN, "f:4")], 0, 60, 3600)
    assert out.relations == (("A", "B"), ("B", "A"), ("A", "B"))
    assert out.new_support == (("A", "B"), ("B", "A"))
    st, out = step(st, [("A", 4 * MIN, "f:5"), ("B", 5 * MIN, "f:6")], 0, 60, 3600)
    assert out.relations == (("B", "A"), ("A", "B")) and out.new_support == ()


def test_step_late_events():
    st, _ = step(None, [("A", 10 * MIN, "f:1")], 0, 60, 3600)
    # older than the last read of an earlier batch, equal to it, or below the watermark: late
    st2, out = step(st, [("B", 5 * MIN, "f:2"), ("C", 10 * MIN, "f:3"), ("D", 11 * MIN, "f:4"),
                         ("E", 12 * MIN, "f:5")], 11 * MIN + 1, 60, 3600)
    assert [r[0] for r in out.late] == ["B", "C", "D"]
    assert out.relations == (("A", "E"),) and st2.visits == ("A", "E")
    # only late reads: the state does not change and nothing is scored
    st3, out = step(st2, [("F", 0, "f:6")], 0, 60, 3600)
    assert st3 == st2 and not out.changed and len(out.late) == 1


def test_step_gap_longer_than_idle_starts_a_new_session():
    st, _ = step(None, [("A", 0, "f:1"), ("B", MIN, "f:2")], 0, 60, 3600)
    st, out = step(st, [("B", 62 * MIN, "f:3"), ("C", 63 * MIN, "f:4")], 0, 60, 3600)
    assert st.visits == ("B", "C") and out.relations == (("B", "C"),)
    assert out.new_support == (("B", "C"),)


def test_step_keeps_the_attributes_of_each_visits_first_read():
    bs = {S.BIZ_STEP: "packing"}
    st, _ = step(None, [("A", 0, "f:1", bs), ("A", 30_000_000, "f:2", {S.BIZ_STEP: "other"}),
                        ("B", MIN, "f:3", {}), ("C", 2 * MIN, "f:4")], 0, 60, 3600)
    # the dwell repeat of A keeps A's first attributes; a read without attributes has none
    assert st.visits == ("A", "B", "C") and st.attributes == (bs, {}, {})
    # bounded like the visits: the newest max_visits
    st, _ = step(st, [("D", 3 * MIN, "f:5", {S.ACTION: "ADD"})], 0, 60, 3600, max_visits=2)
    assert st.visits == ("C", "D") and st.attributes == ({}, {S.ACTION: "ADD"})
    # a new session starts with its first read's attributes
    st, _ = step(st, [("E", 70 * MIN, "f:6", {S.DISPOSITION: "damaged"})], 0, 60, 3600)
    assert st.visits == ("E",) and st.attributes == ({S.DISPOSITION: "damaged"},)


def test_read_attributes_follow_the_batch_rule():
    from soads.stream.parse_stage import read_attributes

    event = {S.BIZ_STEP: "s", S.DISPOSITION: None, S.BIZ_LOCATION: "loc", S.ACTION: "OBSERVE",
             S.SENSOR_REPORTS: '[{"sensorMetadata":{},"sensorReport":[{"exception":'
                               '"ERROR_CONDITION"},{"exception":"ALARM_CONDITION"},'
                               '{"exception":"ERROR_CONDITION"}]}]'}
    assert read_attributes(event) == {
        S.BIZ_STEP: "s", S.BIZ_LOCATION: "loc", S.ACTION: "OBSERVE",
        S.SENSOR_ALERT: "ALARM_CONDITION,ERROR_CONDITION"}
    assert list(read_attributes(event)) == [k for k in S.VISIT_ATTRIBUTES if k != S.DISPOSITION]
    assert read_attributes({S.SENSOR_REPORTS: '[{"sensorReport":[{"type":"T"}]}]'}) == {}
    # the parse stage builds the same values a column at a time
    from soads.stream.parse_stage import _attribute_column

    events = [event, {S.SENSOR_REPORTS: '[{"sensorReport":[{"type":"T"}]}]'}, {S.ACTION: "ADD"},
              {S.SENSOR_REPORTS: ""}]
    assert [dict((k, v) for k, v in zip(S.VISIT_ATTRIBUTES, vs) if v is not None)
            for vs in zip(*(_attribute_column(events, k) for k in S.VISIT_ATTRIBUTES))
            ] == [read_attributes(e) for e in events]


def test_stream_visit_attributes_equal_the_batch_sequences(spark, epcis_examples):
    """The stream's rule (parse stage + state step, as the recomputation applies them) and the
    batch Sequence Extractor give every visit the same attributes, sensor alerts included."""
    from pyspark.sql import functions as F

    from soads import preprocess
    from soads.sequences import extract_sequences
    from soads.stream.parse_stage import read_attributes

    events, _ = preprocess.split_parsed(preprocess.parse_documents(
        preprocess.read_documents(spark, [epcis_examples])))
    events = events.cache()
    batch = {r[S.OID]: (list(r[S.SEQUENCE]), [dict(m) for m in r[S.ATTRIBUTES]])
             for r in extract_sequences(events, dwell_seconds=60).collect()}
    rows = events.withColumn("us", F.unix_micros(S.EVENT_TIME)).collect()
    stream = recompute_sessions([(r[S.OID], r[S.READ_POINT], r["us"], r[S.SOURCE],
                                  read_attributes(r.asDict())) for r in rows], 60, 1e9)
    assert {oid: (s.sequence, s.attributes) for oid, (s,) in stream.items()} == batch
    assert any(S.SENSOR_ALERT in a for _, attrs in batch.values() for a in attrs)


def test_should_evict_and_recompute_apply_the_same_policy():
    st = ObjectState(LastRead("A", 0), ("A",), frozenset())
    assert not should_evict(st, 3600 * 10**6, 3600)
    assert should_evict(st, 3600 * 10**6 + 1, 3600)
    reads = [("o", "A", 0, "f:1"), ("o", "A", 10**6, "f:2"), ("o", "B", MIN, "f:3"),
             ("o", "C", 70 * MIN, "f:4"), ("p", "X", 0, "f:5")]
    assert recompute_sequences(reads, 60, 3600) == {"o": [["A", "B"], ["C"]], "p": [["X"]]}


def test_step_equals_recomputation_on_random_batches():
    import random

    rnd = random.Random(5)
    for _ in range(200):
        reads = [(rnd.choice("ABCD"), rnd.randrange(0, 200) * 20_000_000, f"f:{i}",
                  _random_attributes(rnd)) for i in range(rnd.randrange(1, 25))]
        cuts = sorted(rnd.sample(range(len(reads) + 1), 2))
        batches = [reads[:cuts[0]], reads[cuts[0]:cuts[1]], reads[cuts[1]:]]
        st, freq, support, late = None, [], [], set()
        for b in batches:
            st, out = step(st, b, 0, 60, 1800)
            freq += out.relations
            support += out.new_support
            late |= {src for _, _, src in out.late}
        kept = [("o", rp, t, src, a) for rp, t, src, a in reads if src not in late]
        seqs = recompute_sequences(kept, 60, 1800).get("o", [])
        expected = relation_counts(seqs)
        got = {k: (freq.count(k), support.count(k)) for k in set(freq)}
        assert got == expected
        if seqs:
            last = recompute_sessions(kept, 60, 1800)["o"][-1]
            assert list(st.visits) == seqs[-1] == last.sequence
            assert list(st.attributes) == last.attributes
            assert st.last.time_us == last.last_us


def _join_attributes(attrs):
    return "\1".join(x for kv in attrs.items() for x in kv)


def _split_attributes(joined):
    parts = joined.split("\1") if joined else []
    return dict(zip(parts[::2], parts[1::2]))


def _java_step(spark, state, reads, watermark_us, dwell, idle, max_visits):
    """RelationUpdater.step through py4j (and its stored form), in the Python step's terms."""
    gw = spark.sparkContext._gateway

    def arr(kind, values):
        a = gw.new_array(kind, len(values))
        for i, v in enumerate(values):
            a[i] = v
        return a

    jstr, jlong = gw.jvm.java.lang.String, gw.jvm.long
    if state is None:
        args = [None, 0, arr(jstr, []), arr(jstr, []), arr(jstr, []), arr(jstr, [])]
    else:
        seen = sorted(state.seen)
        args = [state.last.read_point, state.last.time_us, arr(jstr, list(state.visits)),
                arr(jstr, [_join_attributes(a) for a in state.attributes]),
                arr(jstr, [a for a, _ in seen]), arr(jstr, [b for _, b in seen])]
    res = spark._jvm.soads.jvm.RelationUpdater.stepForTest(
        *args, arr(jstr, [r[0] for r in reads]), arr(jlong, [r[1] for r in reads]),
        arr(jstr, [r[2] for r in reads]), arr(jstr, [_join_attributes(r[3]) for r in reads]),
        watermark_us, int(dwell * 1e6), int(idle * 1e6), max_visits)
    nxt, rel, sup, late, changed = res
    pair = lambda s: tuple(s.split("\0"))  # noqa: E731
    nxt = None if nxt is None else (nxt[0], int(nxt[1]), tuple(nxt[2].split("\0")),
                                    tuple(_split_attributes(a) for a in nxt[3].split("\0")))
    return nxt, [pair(r) for r in rel], [pair(r) for r in sup], list(late), bool(changed)


def _random_attributes(rnd):
    keys = [k for k in S.VISIT_ATTRIBUTES if rnd.random() < 0.4]
    return {k: rnd.choice(["x", "y", "ü,z"]) for k in keys}


def test_java_step_equals_python_step_on_random_batches(spark):
    import random

    rnd = random.Random(11)
    for case in range(300):
        st = None
        wm = 0
        for _ in range(3):
            reads = [(rnd.choice("ABCD"), rnd.randrange(0, 120) * 20_000_000,
                      rnd.choice(["f", "t/0", "t/1"]) + f":{rnd.randrange(0, 12)}",
                      _random_attributes(rnd))
                     for _ in range(rnd.randrange(0, 12))]
            max_visits = rnd.choice([2, 1000])
            java = _java_step(spark, st, reads, wm, 60, 1800, max_visits)
            st, out = step(st, reads, wm, 60, 1800, max_visits)
            py_state = None if st is None else (st.last.read_point, st.last.time_us, st.visits,
                                                st.attributes)
            assert java == (py_state, list(out.relations), list(out.new_support),
                            [r[2] for r in out.late], out.changed), (case, reads)
            wm = max(wm, rnd.randrange(0, 120) * 20_000_000 - 600_000_000)


# -- Spark: file source, Parquet, SQLite -----------------------------------------------------

T0 = dt.datetime(2024, 3, 4, 8, 0, 0)


def _event(oid, rp, when, biz_step=None):
    step = f"<bizStep>{biz_step}</bizStep>" if biz_step else ""
    return (f"<ObjectEvent><eventTime>{when.strftime('%Y-%m-%dT%H:%M:%S.000Z')}</eventTime>"
            f"<eventTimeZoneOffset>+00:00</eventTimeZoneOffset><epcList><epc>{oid}</epc>"
            f"</epcList><action>OBSERVE</action>{step}<readPoint><id>{rp}</id></readPoint>"
            f"</ObjectEvent>")


def _document(events):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<epcis:EPCISDocument '
            'xmlns:epcis="urn:epcglobal:epcis:xsd:2" schemaVersion="2.0" '
            'creationDate="2024-03-04T08:00:00Z">\n<EPCISBody>\n<EventList>\n'
            + "\n".join(events) + "\n</EventList>\n</EPCISBody>\n</epcis:EPCISDocument>\n"
            ).encode()


def _oid(i):
    return f"urn:epc:id:sgtin:0614141.107346.{i}"


def _rp(x):
    return f"urn:epc:id:sgln:0614141.00777.{x}"


PATHS = {1: "ABCDE", 2: "ABCDE", 3: "ABXDE", 4: "ACBDE", 5: "ABCDEBCDE", 6: "AB"}


def _biz_step(x):
    return f"urn:epcglobal:cbv:bizstep:step_{x}"


WRONG_STEP = "urn:epcglobal:cbv:bizstep:shipping"  # object 2 at D: a wrong bizStep


def _docs():
    """Documents in arrival order: objects walk PATHS (one read every 5 min, each with its read
    point's bizStep; object 2 has a wrong one at D) over three documents, then a document of
    late reads, then a clock read ten hours later."""
    reads = [(i, _rp(x), T0 + dt.timedelta(minutes=5 * k + i),
              WRONG_STEP if (i, x) == (2, "D") else _biz_step(x))
             for i, path in PATHS.items() for k, x in enumerate(path)]
    reads.sort(key=lambda r: r[2])
    n = len(reads)
    parts = [reads[: n // 3], reads[n // 3: 2 * n // 3], reads[2 * n // 3:]]
    docs = [_document([_event(_oid(i), rp, t, b) for i, rp, t, b in p]) for p in parts]
    # object 1 again, long before its last read (below the watermark: late)
    docs.append(_document([_event(_oid(1), _rp("Z"), T0 + dt.timedelta(minutes=1))]))
    docs.append(b"<epcis:EPCISDocument xmlns:epcis='urn:epcglobal:epcis:xsd:2'><EventList>")
    docs.append(_document([_event(_oid(99), _rp("A"), T0 + dt.timedelta(hours=10))]))
    return docs


def _put(directory, index, data):
    path = os.path.join(directory, f"doc-{index:03d}.xml")
    with open(path, "wb") as fh:
        fh.write(data)
    os.utime(path, (1_700_000_000 + index, 1_700_000_000 + index))  # file source order


def _stream_conf(tmp_path, operator="jvm") -> Config:
    """The event job on files, its event log and tables in ``[storage]`` (where every job
    writes and reads them)."""
    return Config(
        stream=StreamConf(
            source="files", input_path=str(tmp_path / "in"), max_files_per_trigger=1,
            checkpoint_root=str(tmp_path / "ck"), watermark_seconds=600, idle_seconds=3600,
            quarantine_topic="", state_operator=operator),
        storage=StorageConf(event_log=str(tmp_path / "log"),
                            db_url=f"sqlite:///{tmp_path}/soads.db"),
        preprocess=PreprocessConf(max_document_bytes=1 << 20))


def _start(spark, conf):
    return start_event_queries(spark, conf, trigger=False)


OPERATORS = pytest.mark.parametrize("operator", ["jvm", "python"])


def _add_run(url, run_id, patterns, when):
    from soads.storage import tables

    tables.write_rows(url, "pattern", [
        {S.RUN_ID: run_id, S.PATTERN_ID: k, S.PATTERN: p, S.SUPPORT: 1, S.LENGTH: len(p),
         S.MAXIMAL: True} for k, p in enumerate(patterns)])
    tables.write_rows(url, "mining_run", [{S.RUN_ID: run_id, S.ALGORITHM: "test",
                                           S.N_PATTERNS: len(patterns), S.CREATED_AT: when}])


def _model(paths, n=200):
    """A context detector fitted on ``n`` finished objects per path (letters), each read with
    its read point's bizStep and action OBSERVE (as the documents carry them)."""
    cases = [([_rp(x) for x in path],
              [{S.BIZ_STEP: _biz_step(x), S.ACTION: "OBSERVE"} for x in path])
             for path in paths for _ in range(n)]
    return ContextModel.fit(cases)


def _snapshot(url):
    from soads.storage import sinks, tables

    return {name: sorted(map(repr, tables.read_table(url, name)))
            for name in ("relational_dependency", "object_score", "alignment_score",
                         "anomaly_rate")} | {
        "late": sorted(map(repr, sinks.read_late(url)))}


def _recompute(spark, conf):
    """Batch recomputation from the Parquet event log minus late events: the events, late
    events, sequences, last read times and sessions (with attributes) per oid."""
    from pyspark.sql import functions as F

    from soads.storage import sinks
    from soads.stream.parse_stage import read_attributes

    events = spark.read.parquet(os.path.join(conf.storage.event_log, "event_log")).select(
        S.OID, S.READ_POINT, F.unix_micros(S.EVENT_TIME).alias("us"), S.SOURCE,
        S.BIZ_STEP, S.DISPOSITION, S.BIZ_LOCATION, S.ACTION, S.SENSOR_REPORTS).collect()
    late = {(r[S.OID], r[S.SOURCE]) for r in sinks.read_late(conf.storage.db_url)}
    kept = [(r[S.OID], r[S.READ_POINT], r["us"], r[S.SOURCE], read_attributes(r.asDict()))
            for r in events if (r[S.OID], r[S.SOURCE]) not in late]
    sessions = recompute_sequences(kept, 60.0, 3600.0)
    last_time = {}
    for oid, _, us, _, _ in kept:
        last_time[oid] = max(last_time.get(oid, 0), us)
    return events, late, sessions, last_time, recompute_sessions(kept, 60.0, 3600.0)


@OPERATORS
def test_stream_equals_batch_recomputation_and_restart_is_idempotent(spark, tmp_path, operator):
    from soads.storage import sinks, tables

    conf = _stream_conf(tmp_path, operator)
    os.makedirs(conf.stream.input_path)
    sinks.prepare(conf.storage.db_url, conf.storage.event_log)
    run1 = [[_rp(x) for x in "ABCDE"], [_rp(x) for x in "BCD"]]
    _add_run(conf.storage.db_url, "run-1", run1, dt.datetime(2024, 1, 1))
    models = {"ctx-1": _model(["ABCDE"]), "ctx-2": _model(["ABCDE", "ABXDE"])}
    add_model_run(conf.storage.db_url, "ctx-1", models["ctx-1"], dt.datetime(2024, 1, 1))
    docs = _docs()
    for i, d in enumerate(docs[:4]):
        _put(conf.stream.input_path, i, d)
    q = _start(spark, conf)
    q.process_all_available()
    q.stop()
    first = _snapshot(conf.storage.db_url)
    assert len(first["late"]) == 1  # object 1 at T0+1 min arrived after the watermark passed
    # verdicts of the live objects (none evicted yet: all open) == the core for ctx-1
    *_, sessions = _recompute(spark, conf)
    live = {r[S.OID]: r for r in tables.read_table(conf.storage.db_url, "object_score")}
    assert {r[S.MODEL_RUN_ID] for r in live.values()} == {"ctx-1"}
    closed = assert_verdicts_recompute(live, sessions, models, ledger_watermark_us(
        conf.stream.checkpoint_root, "events", conf.storage.db_url))
    assert set(closed.values()) == {False}
    # no object finished yet: nothing in anomaly_rate (live verdicts may still change)
    assert tables.read_table(conf.storage.db_url, "anomaly_rate") == []
    # the wrong bizStep already shows; object 3's unknown read point X does too
    assert live[_oid(2)][S.IS_ANOMALY] and live[_oid(2)][S.EXPLANATION]["value"] == WRONG_STEP
    assert live[_oid(3)][S.EXPLANATION]["read_point"] == _rp("X")
    assert not live[_oid(1)][S.IS_ANOMALY]

    # restart on the same checkpoint: nothing is replayed twice
    q = _start(spark, conf)
    q.process_all_available()
    assert _snapshot(conf.storage.db_url) == first
    # a new mining run and a new model run are picked up without a restart
    run2 = [[_rp(x) for x in "ABCDE"]]
    _add_run(conf.storage.db_url, "run-2", run2, dt.datetime(2024, 1, 2))
    add_model_run(conf.storage.db_url, "ctx-2", models["ctx-2"], dt.datetime(2024, 1, 2))
    for i, d in enumerate(docs[4:], start=4):
        _put(conf.stream.input_path, i, d)
    q.process_all_available()
    # the eviction happens in the no-data micro-batch Spark runs after the watermark moved,
    # which may still be under way when processAllAvailable returns
    deadline = time.monotonic() + 60
    while True:
        state_rows = q.events.lastProgress["stateOperators"][0]["numRowsTotal"]
        if state_rows == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    q.stop()
    # the clock read ten hours later moved the watermark: every other object was evicted
    assert state_rows == 1

    events, late, sessions, last_time, with_attributes = _recompute(spark, conf)
    assert len(events) == sum(len(p) for p in PATHS.values()) + 2
    got = {(r[S.A], r[S.B]): (r[S.FREQ], r[S.SUPPORT])
           for r in tables.read_table(conf.storage.db_url, "relational_dependency")}
    assert got == relation_counts([s for ss in sessions.values() for s in ss])
    assert got[(_rp("A"), _rp("B"))] == (5, 5)
    assert got[(_rp("B"), _rp("C"))] == (4, 3)  # object 5 walks B, C twice: support once

    scores = {r[S.OID]: r for r in tables.read_table(conf.storage.db_url, "object_score")}
    assert set(scores) == set(sessions)
    assert scores[_oid(99)][S.RUN_ID] == "run-2" and scores[_oid(1)][S.RUN_ID] == "run-1"
    runs = {"run-1": run1, "run-2": run2}
    for oid, row in scores.items():
        s, raw, best = score_batch([sessions[oid][-1]], runs[row[S.RUN_ID]], ScoringConf())
        assert (row[S.SCORE], row[S.RAW]) == (s[0], raw[0])
        assert row[S.PATTERN] == runs[row[S.RUN_ID]][best[0]]
        assert row[S.LAST_TIME] == dt.datetime(1970, 1, 1) + dt.timedelta(
            microseconds=last_time[oid])
    windows = tables.read_table(conf.storage.db_url, "alignment_score")
    assert sum(w[S.N_OBJECTS] for w in windows) == len(scores)
    # maintained incrementally, the windows equal a recomputation from object_score
    assert_windows_recompute(windows, scores, rel=1e-12)

    # the verdicts: every object evicted by the clock read got its final row, closed (its END
    # step scored) against the model run of that moment; all equal the core on the same
    # sequences, attributes and closed flags (the closed rule at the stream's last watermark)
    assert {r[S.MODEL_RUN_ID] for r in scores.values()} == {"ctx-2"}
    closed = assert_verdicts_recompute(scores, with_attributes, models, ledger_watermark_us(
        conf.stream.checkpoint_root, "events", conf.storage.db_url))
    assert closed == {oid: oid != _oid(99) for oid in scores}
    # object 6 stopped after B: only its END step, scored once closed, gives it away
    assert scores[_oid(6)][S.IS_ANOMALY] and scores[_oid(6)][S.EXPLANATION]["kind"] == "end"
    assert not live[_oid(6)][S.IS_ANOMALY]
    assert not scores[_oid(1)][S.IS_ANOMALY] and scores[_oid(2)][S.IS_ANOMALY]
    # anomaly_rate: each finished object added once, by the batch rule over the closed objects
    # (the live object 99 not yet); object 6 is charged to B, where it stopped
    assert_rates_recompute(conf.storage.db_url, scores, with_attributes, models, closed)
    rates = {}
    for r in tables.read_table(conf.storage.db_url, "anomaly_rate"):
        n, k = rates.get(r[S.READ_POINT], (0, 0))
        rates[r[S.READ_POINT]] = (n + r[S.N_OBJECTS], k + r[S.FLAGGED])
    assert rates[_rp("A")][0] == len(PATHS) and rates[_rp("B")][1] >= 1

    quarantine = spark.read.parquet(os.path.join(conf.storage.event_log, "quarantine")).collect()
    assert [r[S.REASON] for r in quarantine] == ["malformed_xml"]


def test_ledger_replay_changes_nothing(tmp_path):
    from soads.storage import sinks, tables

    url = f"sqlite:///{tmp_path}/ledger.db"
    sinks.prepare(url, str(tmp_path / "log"))
    _add_run(url, "run-1", [["A", "B", "C"]], dt.datetime(2024, 1, 1))
    t = (dt.datetime(2024, 3, 4, 10, 30) - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
    objects = score_objects([("o1", ["A", "B"], t)], PatternCache(url, maximal_only=False),
                            ScoringConf())
    assert objects[0][6] == "run-1"
    objects = [o + (None, None, None, None, False) for o in objects]  # no model run yet
    batch = sinks.BatchUpdates(relations=[("A", "B", 3, 2)], late=[("o1", "f:9", "Z", t)],
                               objects=objects)
    assert sinks.write_updates(batch, 7, url, 3600)
    once = _snapshot(url)
    assert not sinks.write_updates(batch, 7, url, 3600)
    assert _snapshot(url) == once
    assert tables.read_table(url, "relational_dependency") == [
        {S.A: "A", S.B: "B", S.FREQ: 3, S.SUPPORT: 2}]
    assert [r[S.READ_POINT] for r in sinks.read_late(url)] == ["Z"]
    # a new batch id increments
    assert sinks.write_updates(batch, 8, url, 3600)
    assert tables.read_table(url, "relational_dependency")[0][S.FREQ] == 6
    (w,) = tables.read_table(url, "alignment_score")
    assert (w[S.WINDOW_START], w[S.N_OBJECTS]) == (dt.datetime(2024, 3, 4, 10), 1)


def test_final_rows_replace_only_the_verdict(tmp_path):
    from soads.storage import sinks, tables

    url = f"sqlite:///{tmp_path}/final.db"
    sinks.prepare(url, str(tmp_path / "log"))
    t = (dt.datetime(2024, 3, 4, 10, 30) - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
    live = [("o1", ["A", "B"], t, 0.5, 2.0, ["A", "B", "C"], "run-1", 1.0, False, None, "ctx-1",
             False),
            # a model run but no mining run yet: a verdict, no alignment score, no window
            ("o2", ["A"], t, None, None, None, None, 0.0, False, None, "ctx-1", False)]
    assert sinks.write_updates(sinks.BatchUpdates([], [], live), 1, url, 3600)
    expl = '{"step": 2, "kind": "end"}'
    final = [("o1", ["A", "B"], t, 0.25, 1.0, ["A", "B"], "run-2", 6.0, True, expl, "ctx-2",
              True),
             # an object that had no row: its verdict alone
             ("o3", ["C"], t, 0.0, 0.0, None, "run-2", 7.0, True, expl, "ctx-2", True),
             # no model run: a final row changes nothing
             ("o2", ["A"], t, None, None, None, None, None, None, None, None, True)]
    windows = tables.read_table(url, "alignment_score")
    assert sinks.write_updates(sinks.BatchUpdates([], [], final), 2, url, 3600)
    got = {r[S.OID]: r for r in tables.read_table(url, "object_score")}
    # the alignment score stays with its mining run (and window); the verdict is the final one
    assert {k: got["o1"][k] for k in (S.SCORE, S.RAW, S.PATTERN, S.RUN_ID)} == {
        S.SCORE: 0.5, S.RAW: 2.0, S.PATTERN: ["A", "B", "C"], S.RUN_ID: "run-1"}
    assert {k: got["o1"][k] for k in S.VERDICT_COLUMNS} == {
        S.ANOMALY: 6.0, S.IS_ANOMALY: True, S.EXPLANATION: json.loads(expl),
        S.MODEL_RUN_ID: "ctx-2"}
    assert (got["o3"][S.SCORE], got["o3"][S.RUN_ID], got["o3"][S.MODEL_RUN_ID]) == \
        (None, None, "ctx-2")
    assert (got["o2"][S.SCORE], got["o2"][S.ANOMALY], got["o2"][S.MODEL_RUN_ID]) == \
        (None, 0.0, "ctx-1")
    assert tables.read_table(url, "alignment_score") == windows
    assert [(w[S.RUN_ID], w[S.N_OBJECTS]) for w in windows] == [("run-1", 1)]


def test_finished_objects_add_to_anomaly_rate_once(tmp_path):
    from soads.storage import sinks, tables

    url = f"sqlite:///{tmp_path}/rates.db"
    sinks.prepare(url, str(tmp_path / "log"))
    hour = 3600 * 10**6
    t = (dt.datetime(2024, 3, 4, 10, 30) - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
    at_b = '{"step": 1, "read_point": "B", "kind": "control"}'
    at_end = '{"step": 2, "read_point": null, "kind": "end"}'

    def row(oid, seq, last, flagged, expl, mrid, closed):
        return (oid, seq, last, None, None, None, None, 1.0 if mrid else None,
                flagged if mrid else None, expl, mrid, closed)

    one = [row("o1", ["A", "B", "B"], t, True, at_b, "ctx-1", True),
           row("o2", ["A", "B"], t, True, at_end, "ctx-1", True),
           row("o3", ["A"], t + hour, False, None, "ctx-1", True),
           # live rows and final rows without a model run count nowhere
           row("o4", ["A", "C"], t, True, at_b, "ctx-1", False),
           row("o5", ["A", "C"], t, None, None, None, True)]
    two = [row("o6", ["A", "C"], t, True, at_end, "ctx-1", True),
           row("o7", ["C"], t, False, None, "ctx-2", True)]
    assert sinks.write_updates(sinks.BatchUpdates([], [], one), 1, url, 3600)
    assert not sinks.write_updates(sinks.BatchUpdates([], [], one), 1, url, 3600)  # a replay
    assert sinks.write_updates(sinks.BatchUpdates([], [], two), 2, url, 3600)
    got = {(r[S.WINDOW_START], r[S.READ_POINT], r[S.MODEL_RUN_ID]):
           (r[S.N_OBJECTS], r[S.FLAGGED], r[S.RATE], r[S.WINDOW_END] - r[S.WINDOW_START])
           for r in tables.read_table(url, "anomaly_rate")}
    ten, eleven = dt.datetime(2024, 3, 4, 10), dt.datetime(2024, 3, 4, 11)
    h = dt.timedelta(hours=1)
    assert got == {(ten, "A", "ctx-1"): (3, 0, 0.0, h), (ten, "B", "ctx-1"): (2, 2, 1.0, h),
                   (ten, "C", "ctx-1"): (1, 1, 1.0, h), (eleven, "A", "ctx-1"): (1, 0, 0.0, h),
                   (ten, "C", "ctx-2"): (1, 0, 0.0, h)}
    # the batch rule, the same function, over the finished objects with a verdict
    expected = {}
    for o in one[:3] + two:
        for (w, rp), nk in runs.anomaly_rate(
                [(o[1], o[2], o[8], json.loads(o[9]) if o[9] else None)], 3600).items():
            key = (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=w), rp, o[10])
            expected[key] = tuple(a + b for a, b in zip(expected.get(key, (0, 0)), nk))
    assert {k: v[:2] for k, v in got.items()} == expected


def test_scorer_and_collect_updates_on_the_executors(spark, tmp_path):
    from soads.storage import sinks

    url = f"sqlite:///{tmp_path}/scorer.db"
    sinks.prepare(url, str(tmp_path / "log"))
    o1_attrs = [{S.BIZ_STEP: "s"}, {}]
    rows = [
        (S.KIND_RELATION, "o1", "A", "B", 2, 1, None, None, None, None, None, None, None),
        (S.KIND_RELATION, "o2", "A", "B", 1, 1, None, None, None, None, None, None, None),
        (S.KIND_LATE, "o1", None, None, None, None, "Z", 5, "f:9", None, None, None, None),
        (S.KIND_OBJECT, "o1", None, None, None, None, None, None, None, ["A", "B"], 7,
         [encode_attributes(a) for a in o1_attrs], False),
        (S.KIND_OBJECT, "o2", None, None, None, None, None, None, None, ["C", "X"], 9,
         ["", ""], True),
    ]
    df = spark.createDataFrame(rows, update_struct())

    def collect():
        return sinks.collect_updates(
            df.mapInArrow(ObjectScorer(url, ScoringConf()), scored_struct()))

    # before any mining run and any model run: collected, not scored, no verdict
    assert collect() == sinks.BatchUpdates(
        [("A", "B", 3, 2)], [("o1", "f:9", "Z", 5)],
        [("o1", ["A", "B"], 7, None, None, None, None, None, None, None, None, False),
         ("o2", ["C", "X"], 9, None, None, None, None, None, None, None, None, True)])
    patterns = [["A", "B", "C"], ["C", "X"]]
    _add_run(url, "run-1", patterns, dt.datetime(2024, 1, 1))
    model = ContextModel.fit([(["A", "B", "C"], [{S.BIZ_STEP: "s"}, {}, {}])] * 200)
    add_model_run(url, "ctx-1", model, dt.datetime(2024, 1, 1))
    scores, raws, best = score_batch([["A", "B"], ["C", "X"]], patterns, ScoringConf())
    verdicts = [runs.verdict_columns(v) for v in model.score_many(
        [["A", "B"], ["C", "X"]], [o1_attrs, [{}, {}]], [False, True])]
    # new runs are picked up by the same (reused) workers; o2 is judged closed
    assert sorted(collect().objects) == [
        (oid, seq, last, scores[i], raws[i], patterns[best[i]], "run-1", *verdicts[i], "ctx-1",
         closed)
        for i, (oid, seq, last, closed) in enumerate([("o1", ["A", "B"], 7, False),
                                                      ("o2", ["C", "X"], 9, True)])]
    assert verdicts[0][:2] == (0.0, False) and verdicts[1][1]


def test_model_cache_follows_the_newest_model_run(tmp_path):
    from soads.storage import sinks

    url = f"sqlite:///{tmp_path}/models.db"
    sinks.prepare(url, str(tmp_path / "log"))
    models = ModelCache(url)
    # no model run yet: no verdicts (null columns), not an error
    assert models.newest() == (None, None)
    assert judge_objects([(["A"], None, True)], models) == [(None, None, None, None)]
    add_model_run(url, "ctx-1", ContextModel.fit([(["A", "B"], None)] * 200),
                  dt.datetime(2024, 1, 1))
    assert judge_objects([(["A", "B"], None, True)], models) == [(0.0, False, None, "ctx-1")]
    add_model_run(url, "ctx-2", ContextModel.fit([(["A", "C"], None)] * 200),
                  dt.datetime(2024, 1, 2))
    (anomaly, flagged, explanation, run_id), = judge_objects([(["A", "B"], None, True)], models)
    assert (flagged, run_id) == (True, "ctx-2")
    assert json.loads(explanation)["read_point"] == "B"
    # encoded attributes are judged as the core judges them
    model = ContextModel.fit([(["A", "C"], [{S.BIZ_STEP: "s"}, {}])] * 200)
    add_model_run(url, "ctx-3", model, dt.datetime(2024, 1, 3))
    cases = [(["A", "C"], [encode_attributes({S.BIZ_STEP: "x"}), ""], False),
             (["A", "C"], [encode_attributes({S.BIZ_STEP: "s"}), ""], True)]
    got = judge_objects(cases + cases[:1], models)
    want = [runs.verdict_columns(v) + ("ctx-3",) for v in model.score_many(
        [["A", "C"]] * 2, [[{S.BIZ_STEP: "x"}, {}], [{S.BIZ_STEP: "s"}, {}]], [False, True])]
    assert got == want + want[:1] and got[0][1] is True and got[1][1] is False


@pytest.mark.parametrize("seed", range(4))
def test_judge_arrow_equals_judge_objects_on_random_objects(seed):
    """The score stage's Arrow path (attributes split by Arrow, no dict per visit) gives the
    verdicts of the plain one, unknown read points and values, revisits, visits without
    attributes, objects without an attributes list and empty paths included."""
    import pyarrow as pa

    rng = random.Random(seed)
    rps = ["A", "B", "C", "D"]
    keys = [S.BIZ_STEP, S.DISPOSITION, S.ACTION]

    def case(n_rp, n_val):
        seq = [rng.choice(rps[:n_rp]) for _ in range(rng.randint(0 if n_rp > 4 else 1, 7))]
        attrs = [{k: f"v{(rps.index(r) if r in rps else 0) + (rng.random() < 0.1 * n_val)}"
                  for k in rng.sample(keys, rng.randint(0, 3))} for r in seq]
        return seq, attrs, rng.random() < 0.3

    model = ContextModel.fit([case(4, 0)[:2] for _ in range(300)], missed_read_rate=0.01)
    rps += ["X", "Y"]  # never seen when fitting
    probe = [case(6, 1) for _ in range(60)]
    probe = [(seq, None if rng.random() < 0.15 else [encode_attributes(a) for a in attrs], c)
             for seq, attrs, c in probe]
    models = ModelCache(None)
    models.run_id, models.model = "ctx-1", model
    want = judge_objects(probe, models, refresh=False)
    got = judge_arrow(pa.array([p[0] for p in probe], pa.list_(pa.string())),
                      pa.array([p[1] for p in probe], pa.list_(pa.string())),
                      pa.array([p[2] for p in probe]), models)
    assert got == want and any(w[1] for w in want)
    with pytest.raises(ValueError, match="entries for a sequence"):
        judge_arrow(pa.array([["A", "B"]]), pa.array([[""]]), pa.array([False]), models)
    with pytest.raises(ValueError, match="not encoded"):
        judge_arrow(pa.array([["A"]]), pa.array([["biz_step"]]), pa.array([False]), models)


def test_checkpoint_refuses_the_other_state_operator(tmp_path):
    checkpoint.check_operator(str(tmp_path / "ck"), "jvm")
    checkpoint.check_operator(str(tmp_path / "ck"), "jvm")
    with pytest.raises(ValueError, match="state_operator=jvm"):
        checkpoint.check_operator(str(tmp_path / "ck"), "python")


@pytest.mark.parametrize("made", [
    "jvm",                   # the state was a bean before it was bytes: the mark says only "jvm"
    "jvm state-format-1",    # keyed by the bare oid before the (hash, oid) key
    "jvm state-format-2",    # before the visits' attributes
    "jvm state-format-3",    # each visit's attributes as key, value strings
    "python",                # the Python state before the visits' attributes
])
def test_checkpoint_refuses_an_older_state_format(tmp_path, made):
    os.makedirs(tmp_path / "ck")
    (tmp_path / "ck" / checkpoint.OPERATOR_MARK).write_text(made + "\n")
    operator = made.split()[0]
    with pytest.raises(ValueError, match=f"format '{made}'"):
        checkpoint.check_operator(str(tmp_path / "ck"), operator)


def test_error_in_a_sink_surfaces_as_streaming_query_exception(spark, tmp_path):
    from pyspark.errors import StreamingQueryException

    from soads.storage import tables

    conf = _stream_conf(tmp_path)
    os.makedirs(conf.stream.input_path)
    q = _start(spark, conf).events  # creates the tables; no input yet, so no micro-batch
    # the ledger table goes away under the running query: the relations sink fails inside
    # foreachBatch at the next micro-batch
    eng = tables.engine(conf.storage.db_url)
    with eng.begin() as conn:
        tables.TABLE["sink_batch"].drop(conn)
    eng.dispose()
    _put(conf.stream.input_path, 0, _docs()[0])
    try:
        with pytest.raises(StreamingQueryException, match="no such table"):
            q.processAllAvailable()
    finally:
        q.stop()
    assert q.exception() is not None


def test_pattern_cache_scores_equal_score_batch_and_follow_the_newest_run(tmp_path):
    import random

    from soads.storage import sinks

    url = f"sqlite:///{tmp_path}/cache.db"
    sinks.prepare(url, str(tmp_path / "log"))
    run1 = [["A", "B", "C"], ["B", "D"]]
    _add_run(url, "run-1", run1, dt.datetime(2024, 1, 1))
    cache = PatternCache(url, maximal_only=False, max_cached=5)
    assert cache.newest() == ("run-1", run1)
    rnd = random.Random(3)
    for _ in range(4):  # repeats, new sequences, and the cache overflowing (max 5)
        seqs = [[rnd.choice("ABCD") for _ in range(rnd.randrange(0, 5))] for _ in range(6)]
        scores, raws, best = score_batch(seqs, run1, ScoringConf())
        assert cache.score(seqs, ScoringConf()) == list(zip(scores.tolist(), raws.tolist(),
                                                            best.tolist()))
    run2 = [["D", "C"]]
    _add_run(url, "run-2", run2, dt.datetime(2024, 1, 2))
    assert cache.newest() == ("run-2", run2)
    s, r, b = score_batch([["D", "C"]], run2, ScoringConf())
    assert cache.score([["D", "C"]], ScoringConf()) == [(s[0], r[0], b[0])]


@OPERATORS
def test_combine_relations_sums_per_partition_and_keeps_the_rest(spark, operator):
    rows = [
        (S.KIND_RELATION, "o1", "A", "B", 2, 1, None, None, None, None, None, None, None),
        (S.KIND_RELATION, "o2", "A", "B", 1, 1, None, None, None, None, None, None, None),
        (S.KIND_RELATION, "o2", "B", "C", 1, 0, None, None, None, None, None, None, None),
        (S.KIND_LATE, "o1", None, None, None, None, "Z", 5, "f:9", None, None, None, None),
        (S.KIND_OBJECT, "o1", None, None, None, None, None, None, None, ["A", "B"], 7,
         [encode_attributes({S.ACTION: "ADD"}), ""], False),
    ]
    df = spark.createDataFrame(rows, update_struct()).coalesce(1)

    def key(r):
        return repr(tuple(tuple(v) if isinstance(v, list) else v for v in r))

    got = sorted(map(key, combine_relations(df, operator).collect()))
    assert got == sorted(map(key, [
        (S.KIND_RELATION, None, "A", "B", 3, 2, None, None, None, None, None, None, None),
        (S.KIND_RELATION, None, "B", "C", 1, 0, None, None, None, None, None, None, None),
        rows[3], rows[4]]))
