"""soads.query, the read side: what it returns, in which order, and that it stays free of
pyspark and torch. The HBase quarantine read needs the real HBase Thrift server."""
import datetime as dt
import os
import subprocess
import sys
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from soads import query, schema as S
from soads.storage import tables
from streamtools import require  # fail under CI=true, skip elsewhere

T0 = dt.datetime(2024, 3, 4, 8, 0, 0)


def test_import_loads_neither_pyspark_nor_torch():
    # the read module, and the alert process that reads through it (no JVM, starts in a second)
    code = ("import sys, soads.query, soads.alerts.process; "
            "print(sorted(m for m in ('pyspark', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             [os.path.join(os.path.dirname(__file__), "..")]
                             + [p for p in [os.environ.get("PYTHONPATH")] if p])})
    assert out.stdout.strip() == "[]"


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.integration)])
def db(request, tmp_path):
    """A fresh database with the SOADS tables: SQLite, and a private MariaDB database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/q.db"
        drop = None
    else:
        import pymysql

        from soads import config, services

        conf = config.load([services.DEFAULT_CONF])
        require("mariadb", lambda: services.check("mariadb", conf))
        m = conf.mariadb
        name = f"{m.database}_q{uuid.uuid4().hex[:10]}"
        admin = pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password)
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        url = services.mysql_url(conf, name)

        def drop():
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE `{name}`")
            admin.close()
    eng = tables.engine(url)
    tables.create_tables(eng)
    eng.dispose()
    yield url
    if drop is not None:
        drop()


def _run(run_id, created):
    return {S.RUN_ID: run_id, S.ALGORITHM: "soads", S.MINSUP: 2, S.MAX_LENGTH: 25,
            S.N_SEQUENCES: 10, S.N_PATTERNS: 3, S.SECONDS: 1.0, S.CREATED_AT: created}


def test_latest_run_and_patterns_in_use(db):
    assert query.latest_run(db) is None
    assert query.latest_run(f"sqlite:///{os.devnull}-none/x.db") is None  # nothing there yet
    assert query.patterns_in_use(db) == (None, [])
    # written newest first: the database's row order must not decide
    tables.write_rows(db, "mining_run", [_run("new", T0 + dt.timedelta(hours=1)),
                                         _run("old", T0)])
    pats = [(2, ["A", "B", "C"], 5, True), (0, ["B", "C"], 9, False), (1, ["A", "B"], 7, False)]
    tables.write_rows(db, "pattern", [
        {S.RUN_ID: run, S.PATTERN_ID: i, S.PATTERN: p, S.SUPPORT: sup, S.LENGTH: len(p),
         S.MAXIMAL: m} for run in ("old", "new") for i, p, sup, m in pats])
    assert query.latest_run(db)[S.RUN_ID] == "new"
    run, got = query.patterns_in_use(db)
    assert run[S.RUN_ID] == "new" and got == [["B", "C"], ["A", "B"], ["A", "B", "C"]]
    assert query.patterns_in_use(db, maximal_only=True)[1] == [["A", "B", "C"]]
    assert query.patterns_in_use(db, run_id="old")[0][S.RUN_ID] == "old"
    assert query.patterns_in_use(db, run_id="nope") == (None, [])
    assert [r[S.PATTERN_ID] for r in query.pattern_rows(db, "old")] == [0, 1, 2]


def test_scores_windows_late_events_sensor_rows_in_stated_order(db):
    tables.write_rows(db, "object_score", [
        {S.OID: o, S.SCORE: sc, S.RAW: 1.0, S.PATTERN: ["A"], S.LAST_TIME: T0, S.RUN_ID: "r"}
        for o, sc in (("o3", 0.9), ("o1", 0.2), ("o2", 0.2), ("o4", None))])
    assert [r[S.OID] for r in query.object_scores(db)] == ["o1", "o2", "o3", "o4"]
    assert [r[S.OID] for r in query.object_scores(db, limit=1)] == ["o1"]
    assert query.object_scores(db)[0][S.PATTERN] == ["A"]  # JSON decoded
    assert query.object_scores(db, run_id="other") == []
    tables.write_rows(db, "alignment_score", [
        {S.WINDOW_START: T0 + dt.timedelta(hours=h), S.WINDOW_END: T0 + dt.timedelta(hours=h + 1),
         S.MEAN_SCORE: 0.5, S.N_OBJECTS: 3, S.RUN_ID: "r"} for h in (2, 0, 1)])
    assert [r[S.WINDOW_START].hour for r in query.alignment_windows(db)] == [8, 9, 10]
    tables.write_rows(db, "late_event", [
        {S.OID: "o1", S.SOURCE: f"t/0/{i}", S.READ_POINT: "rp",
         S.EVENT_TIME: T0 + dt.timedelta(minutes=i)} for i in (1, 3, 2)])
    assert [r[S.SOURCE] for r in query.late_events(db)] == ["t/0/3", "t/0/2", "t/0/1"]
    tables.write_rows(db, "sensor_anomaly", [
        {S.MACHINE_ID: m, S.WINDOW_END: T0 + dt.timedelta(seconds=s), S.SCORE: 1.0,
         S.THRESHOLD: 2.0, S.IS_ANOMALY: a, S.MODEL_VERSION: "v1"}
        for m, s, a in (("m2", 1, False), ("m1", 1, True), ("m1", 2, False))])
    assert [(r[S.MACHINE_ID], r[S.WINDOW_END].second) for r in query.sensor_anomalies(db)] == \
        [("m1", 2), ("m1", 1), ("m2", 1)]
    assert [r[S.MACHINE_ID] for r in query.sensor_anomalies(db, anomalies_only=True)] == ["m1"]
    assert len(query.sensor_anomalies(db, machine_id="m2")) == 1
    tables.write_rows(db, "sensor_quarantine", [
        {S.SOURCE: src, S.MACHINE_ID: "m1", S.TS: ts, S.REASON: "late", S.DETAIL: ""}
        for src, ts in (("t/0/1", T0), ("t/0/0", None), ("t/0/2", T0 + dt.timedelta(1)))])
    assert [r[S.SOURCE] for r in query.sensor_quarantine(db)] == ["t/0/2", "t/0/1", "t/0/0"]
    assert [r[S.SOURCE] for r in query.sensor_quarantine(db, limit=2)] == ["t/0/2", "t/0/1"]


def test_model_run_round_trip(db):
    from soads import pipeline
    from soads.config import DetectorConf
    from soads.detect import context as C
    from soads.detect.spark import Fit

    assert query.newest_detector_run(db) is None
    conf = DetectorConf(max_context=2)
    log = [(["a", "b", "c"], [{"d": "x", "id": f"{i}a"}, {"d": "y", "id": f"{i}b"},
                              {"d": "zé 😀", "id": f"{i}c"}]) for i in range(20)]
    log += [(["a", "c"], None), ([], None)]
    model = C.ContextModel.fit(log, conf, missed_read_rate=0.05)
    assert model.skipped_ == ("id",)
    horizon = int(dt.datetime(2024, 3, 4, 9).timestamp()) * 1_000_000
    for run_id in ("context-1", "context-2"):  # written one after the other: the second is newer
        n = pipeline.write_model_run(db, run_id, Fit(model, model.skipped_, horizon, len(log)),
                                     conf, 1.5)
        assert n == len(model.to_rows())
    pipeline.write_model_run(db, "context-2", Fit(model, model.skipped_, horizon, len(log)),
                             conf, 1.5)  # rewriting a run replaces its rows
    # newest by created_at (MySQL keeps whole seconds: a tie goes to the greater run id)
    run = query.newest_detector_run(db)
    assert run[S.RUN_ID] == "context-2"
    assert (run[S.N_OBJECTS], run[S.N_ROWS], run[S.SKIPPED], run[S.SECONDS]) == \
        (22, n, ["id"], 1.5)
    assert run[S.CONF]["max_context"] == 2 and run[S.HORIZON] == dt.datetime(2024, 3, 4, 9)
    assert query.detector_run(db, "nope") is None
    for r_id in ("context-1", "context-2"):
        back = query.detector_model(db, r_id)  # the run's own settings
        assert back.to_rows() == model.to_rows() and back.skipped_ == ("id",)
        assert (back.conf, back.missed_read_rate) == (conf, 0.05)
        probe = [(["a", "c", "b"], [{"d": "x"}, {"d": "q"}, {"d": "y"}]), (["a"], None)]
        assert C.score_cases(back, probe) == C.score_cases(model, probe)
    other = query.detector_model(db, "context-2", DetectorConf(threshold=1.0), 0.0)
    assert (other.threshold_, other.missed_read_rate) == (1.0, 0.0)
    with pytest.raises(LookupError, match="no detector model run"):
        query.detector_model(db, "nope")


def test_verdict_columns_and_anomaly_rates(db):
    expl = {"step": 1, "read_point": "b", "kind": "control", "attribute": None, "value": None,
            "probability": 0.001, "expected": "c", "context": ["a", "<start>"]}
    tables.write_rows(db, "object_score", [
        {S.OID: "o1", S.SCORE: 0.5, S.LAST_TIME: T0, S.RUN_ID: "r", S.ANOMALY: 6.5,
         S.IS_ANOMALY: True, S.EXPLANATION: expl, S.MODEL_RUN_ID: "context-1"},
        {S.OID: "o2", S.SCORE: 0.9, S.LAST_TIME: T0, S.RUN_ID: "r", S.ANOMALY: 0.0,
         S.IS_ANOMALY: False, S.EXPLANATION: None, S.MODEL_RUN_ID: "context-1"}])
    got = {r[S.OID]: r for r in query.object_scores(db)}
    assert (got["o1"][S.ANOMALY], got["o1"][S.IS_ANOMALY], got["o1"][S.EXPLANATION],
            got["o1"][S.MODEL_RUN_ID]) == (6.5, True, expl, "context-1")
    assert (got["o2"][S.IS_ANOMALY], got["o2"][S.EXPLANATION]) == (False, None)
    tables.write_rows(db, "anomaly_rate", [
        {S.WINDOW_START: T0 + dt.timedelta(hours=h), S.WINDOW_END: T0 + dt.timedelta(hours=h + 1),
         S.READ_POINT: rp, S.N_OBJECTS: 4, S.FLAGGED: 1, S.RATE: 0.25, S.MODEL_RUN_ID: "m",
         S.WRITER: w}
        for h, rp, w in ((1, "a", "batch"), (0, "b", "batch"), (0, "a", "batch"),
                         (0, "a", "stream"))])
    assert [(r[S.WINDOW_START].hour, r[S.READ_POINT], r[S.WRITER])
            for r in query.anomaly_rates(db)] == \
        [(8, "a", "batch"), (8, "a", "stream"), (8, "b", "batch"), (9, "a", "batch")]
    assert [(r[S.WINDOW_START].hour, r[S.READ_POINT])
            for r in query.anomaly_rates(db, "m", writer=S.WRITER_STREAM)] == [(8, "a")]
    assert query.anomaly_rates(db, "other") == []


def test_sensor_quarantine_before_the_sensor_job_ran(tmp_path):
    assert query.sensor_quarantine(f"sqlite:///{tmp_path}/none.db") == []


def _write_quarantine(directory, name, rows, mtime):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    pq.write_table(pa.table({c: pa.array([r[i] for r in rows], pa.string())
                             for i, c in enumerate(S.QUARANTINE_COLUMNS)}), path)
    os.utime(path, (mtime, mtime))


def test_parquet_quarantine_newest_file_first_and_limited(tmp_path):
    assert query.event_quarantine(str(tmp_path)) == []
    qdir = tmp_path / "quarantine"
    now = time.time()
    _write_quarantine(qdir, "batch-1-00000.parquet",
                      [("a.xml:3", "missing_epc", "d1"), ("a.xml:9", "bad_time", "d2")], now - 60)
    _write_quarantine(qdir, "batch-2-00000.parquet", [("k/0/7", "malformed_xml", "d3")], now)
    (qdir / "_SUCCESS").write_text("")
    (qdir / ".batch-3-00000.parquet.123.tmp").write_text("half")  # a writer's temporary file
    got = query.event_quarantine(str(tmp_path), limit=None)
    assert [(r[S.SOURCE], r[S.REASON], r[S.DETAIL]) for r in got] == [
        ("k/0/7", "malformed_xml", "d3"), ("a.xml:9", "bad_time", "d2"),
        ("a.xml:3", "missing_epc", "d1")]
    assert got[0][query.STORED_AT] > got[1][query.STORED_AT]
    assert abs((got[0][query.STORED_AT] - dt.datetime.utcfromtimestamp(now)).total_seconds()) < 1
    assert [r[S.SOURCE] for r in query.event_quarantine(str(tmp_path), limit=2)] == \
        ["k/0/7", "a.xml:9"]


@pytest.mark.integration
def test_hbase_quarantine_newest_cell_first(tmp_path):
    from soads import config, services
    from soads.storage import hbase

    conf = config.load([services.DEFAULT_CONF])
    require("hbase", lambda: services.check("hbase", conf))
    # the development server's Thrift port (hbase.DEFAULT_PORT), a private table prefix
    location = f"hbase://127.0.0.1:{hbase.DEFAULT_PORT}/tq{uuid.uuid4().hex[:8]}"
    try:
        assert query.event_quarantine(location) == []  # no table yet
        hbase.ensure_table(location, hbase.QUARANTINE_TABLE)
        for i in range(3):  # one put each, at least a millisecond apart: distinct cell times
            hbase.put_records(location, hbase.QUARANTINE_TABLE,
                              [{S.SOURCE: f"k/0/{i}", S.REASON: "malformed_xml",
                                S.DETAIL: f"line {i}"}])
            time.sleep(0.01)
        got = query.event_quarantine(location, limit=2)
        assert [(r[S.SOURCE], r[S.DETAIL]) for r in got] == [("k/0/2", "line 2"),
                                                             ("k/0/1", "line 1")]
        assert got[0][query.STORED_AT] >= got[1][query.STORED_AT]
        assert abs((got[0][query.STORED_AT] - dt.datetime.utcnow()).total_seconds()) < 120
        assert len(query.event_quarantine(location, limit=None)) == 3
    finally:
        conn = hbase.connect(location)
        try:
            if hbase.QUARANTINE_TABLE.encode() in conn.tables():
                conn.delete_table(hbase.QUARANTINE_TABLE, disable=True)
        finally:
            conn.close()


@pytest.mark.integration
def test_topic_quarantine_newest_records_first(tmp_path, capsys):
    import json

    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from soads import config, services
    from soads.cli import main

    conf = config.load([services.DEFAULT_CONF])
    require("kafka", lambda: services.check("kafka", conf))
    bootstrap = services.kafka_bootstrap(conf)
    topic = f"soads-quarantine-{uuid.uuid4().hex[:10]}"
    assert query.topic_quarantine(bootstrap, topic) == []  # not there yet
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        for i in range(5):  # as the event job's parse stage publishes them (key = source)
            record = {S.SOURCE: f"soads-events/0/{i}", S.REASON: "malformed_xml",
                      S.DETAIL: f"line {i}"}
            producer.send(topic, key=record[S.SOURCE].encode(), value=json.dumps(record).encode(),
                          partition=i % 2, timestamp_ms=1_700_000_000_000 + i).get(timeout=30)
        producer.close()
        got = query.topic_quarantine(bootstrap, topic, limit=3)
        assert [r[S.SOURCE] for r in got] == [f"soads-events/0/{i}" for i in (4, 3, 2)]
        assert got[0][query.STORED_AT] == dt.datetime(2023, 11, 14, 22, 13, 20, 4000)
        toml = tmp_path / "t.toml"
        toml.write_text(f'[stream]\nkafka_bootstrap = "{bootstrap}"\n'
                        f'quarantine_topic = "{topic}"\n')
        assert main(["quarantine", "--topic", "--conf", str(toml), "--limit", "2"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 2 and "soads-events/0/4" in lines[0] and "line 3" in lines[1]
    finally:
        admin.delete_topics([topic])
        admin.close()
