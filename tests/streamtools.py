"""The one set of helpers of the tests that use real parts (Kafka, HBase, MariaDB) or run jobs:
the CI fail-or-skip rule (:func:`require`: every test needing a service goes through it), a
private topic, database and HBase prefix per test (:func:`create_place` / :func:`drop_place`),
a job as a subprocess (:func:`job_env`, :func:`start`, :func:`kill`), its checkpoint progress,
and the exactly-once checks (tables == batch recomputation).

Not a test module; imported by the tests (tests/ is on sys.path under pytest's rootdir import
mode). PYTHONPATH is set by conftest.py alone.
"""
import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass

import pytest

from soads import config, epcis, schema as S, services
from soads.stream.state import recompute_sequences

IN_CI = os.environ.get("CI") == "true"
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MAX_BYTES = 4 * 1024 * 1024


def require(what, check, module_level=False):
    """Run ``check`` and return its result; a failure fails the test under CI=true and skips
    it elsewhere, with the reason. ``module_level``: called while a test module is imported
    (skips the whole module)."""
    try:
        return check()
    except Exception as e:  # noqa: BLE001 - turned into a failure (CI) or a skip with the reason
        fail_or_skip(f"{what} is not reachable ({e!r}); start it (make up, or python -m "
                     f"soads.services up with SOADS_DB_PASSWORD_FILE set)", module_level)


def fail_or_skip(msg, module_level=False):
    """The suite's one rule for a missing part: under CI=true the test fails, elsewhere it skips,
    with the reason."""
    if IN_CI:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg, allow_module_level=module_level)


def require_module(name):
    """An optional dependency (torch): imported, or the CI rule of :func:`require` applies."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as e:
        fail_or_skip(f"{name} is not installed ({e}); pip install it (setup.cfg extras)", True)


def services_conf(*parts: str):
    """The services configuration, after :func:`require` of each real part the test needs
    (default: kafka, mariadb and hbase)."""
    c = config.load([services.DEFAULT_CONF])
    for part in parts or ("kafka", "mariadb", "hbase"):
        require(part, lambda part=part: services.check(part, c))
    return c


@dataclass
class Place:
    """A private topic, database and HBase table prefix."""

    bootstrap: str
    topic: str
    qtopic: str
    database: str
    db_url: str
    location: str


def create_place(conf, tag: str, quarantine_topic: bool = True) -> Place:
    """A new :class:`Place`: topics (one partition each) and database created; the HBase
    tables are created by whoever writes first under the prefix. Without ``quarantine_topic``
    only the input topic is created (``qtopic`` is empty)."""
    import pymysql
    from kafka.admin import KafkaAdminClient, NewTopic

    hexid = uuid.uuid4().hex[:10]
    bootstrap = services.kafka_bootstrap(conf)
    p = Place(bootstrap, f"soads-{tag}-{hexid}",
              f"soads-{tag}-q-{hexid}" if quarantine_topic else "",
              f"{conf.mariadb.database}_{hexid}", "", f"hbase://127.0.0.1:9090/{tag}{hexid}")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(t, 1, 1) for t in (p.topic, p.qtopic) if t])
    admin.close()
    m = conf.mariadb
    root = pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password)
    with root.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{p.database}`")
    root.close()
    p.db_url = services.mysql_url(conf, p.database)
    return p


def drop_place(conf, p: Place) -> None:
    """Best-effort cleanup of a :class:`Place` (the assertions decide the test)."""
    import happybase
    import pymysql
    from kafka.admin import KafkaAdminClient

    from soads.storage import hbase

    try:
        admin = KafkaAdminClient(bootstrap_servers=p.bootstrap)
        admin.delete_topics([t for t in (p.topic, p.qtopic) if t])
        admin.close()
    except Exception:  # noqa: BLE001 - cleanup only
        pass
    try:
        m = conf.mariadb
        root = pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password)
        with root.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{p.database}`")
        root.close()
    except Exception:  # noqa: BLE001 - cleanup only
        pass
    try:
        host, port, prefix = hbase.parse_location(p.location)
        conn = happybase.Connection(host, port, table_prefix=prefix, table_prefix_separator=b"_")
        for name in ("event_log", "quarantine"):
            if name.encode() in conn.tables():
                conn.delete_table(name, disable=True)
        conn.close()
    except Exception:  # noqa: BLE001 - cleanup only
        pass


def publish(bootstrap, topic, documents):
    """``[(offset, bytes)]`` of the documents, one record each, acknowledged."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 * 1024 * 1024,
                             acks="all")
    futures = [producer.send(topic, value=d, partition=0) for d in documents]
    producer.flush()
    out = [(f.get(timeout=60).offset, d) for f, d in zip(futures, documents)]
    producer.close()
    return out


def job_spark_section() -> str:
    """The ``[spark]`` section of conf/services-stream.toml: the tests run the job with the
    Spark settings it ships with (checkpoint file manager, codegen mode, JVM options)."""
    import tomllib

    with open(os.path.join(REPO, "conf", "services-stream.toml"), "rb") as fh:
        spark = tomllib.load(fh)["spark"]
    return "[spark]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in spark.items())


def write_stream_toml(path, p: Place, checkpoint_root: str, **over) -> str:
    """A ``[stream]`` section on this test's topic and checkpoint (``over`` replaces keys), a
    ``[storage]`` section on its HBase prefix and database (where every job writes and reads the
    event log and the tables), and the job's own ``[spark]`` (:func:`job_spark_section`)."""
    values = {"source": "kafka", "kafka_bootstrap": p.bootstrap, "topic": p.topic,
              "quarantine_topic": p.qtopic, "max_offsets_per_trigger": 8,
              "checkpoint_root": checkpoint_root,
              "trigger_seconds": 1.0, "watermark_seconds": 600.0, "idle_seconds": 3600.0}
    values.update(over)
    path.write_text("[stream]\n" + "\n".join(f"{k} = {json.dumps(v)}"
                                             for k, v in values.items()) + "\n"
                    + storage_section(p) + job_spark_section())
    return str(path)


def storage_section(p: Place) -> str:
    """The ``[storage]`` section of this test's event log (HBase prefix) and database."""
    return (f"[storage]\nevent_log = {json.dumps(p.location)}\n"
            f"db_url = {json.dumps(p.db_url)}\n")


def job_cmd(stream_toml: str, *sets: str) -> list[str]:
    cmd = [sys.executable, "jobs/stream_events.py", "--conf", "conf/soads.toml",
           "--stream-conf", stream_toml, "--set", "spark.master=local[2]",
           "--set", "spark.shuffle_partitions=2", "--set", "spark.driver_memory=1g",
           "--set", f"preprocess.max_document_bytes={MAX_BYTES}"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def job_env() -> dict:
    """The environment of a job or CLI subprocess: this venv's Python for Spark's workers,
    loopback Spark. PYTHONPATH (this clone's soads first) is set once, by conftest.py."""
    return {**os.environ, "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}


def start(cmd, log):
    """The job as a subprocess in its own process group (:func:`kill` stops the driver and its
    JVM together), output to the open file ``log``."""
    return subprocess.Popen(cmd, cwd=REPO, env=job_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill(proc, sig=signal.SIGTERM):
    try:
        os.killpg(proc.pid, sig)  # the job's own process group: python driver + its JVM
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def committed(ck, name):
    """Last committed Kafka end offset of a query (from its checkpoint), or -1."""
    from soads.stream.checkpoint import committed_batches

    done = committed_batches(ck, name)
    return done[-1][1] if done else -1


def batch_watermark_ms(ck, name, batch_id):
    """The event-time watermark (ms) a query's micro-batch ran with (its offsets file)."""
    with open(os.path.join(ck, name, "offsets", str(batch_id))) as fh:
        return int(json.loads(fh.read().splitlines()[1])["batchWatermarkMs"])


def committed_watermark_ms(ck, name):
    """The event-time watermark (ms) of a query's newest committed micro-batch, or -1."""
    done = batch_ids(ck, name, "commits")
    return batch_watermark_ms(ck, name, max(done)) if done else -1


def batch_ids(ck, name, kind):
    """Ids of a query's micro-batches in its checkpoint: ``kind`` "offsets" (planned: written
    when a batch starts) or "commits" (written once its sink finished)."""
    d = os.path.join(ck, name, kind)
    return {int(f) for f in os.listdir(d) if f.isdigit()} if os.path.isdir(d) else set()


def in_flight(ck, name):
    """The id of the micro-batch the query is running (offsets written, not committed), or
    None between batches."""
    planned, done = batch_ids(ck, name, "offsets"), batch_ids(ck, name, "commits")
    newest = max(planned, default=-1)
    return newest if newest >= 0 and newest not in done else None


def from_offset(source, topic, offset, partition=0) -> bool:
    """Whether a quarantine/event ``source`` comes from Kafka record ``offset``: the exact
    ``topic/partition/offset``, alone or followed by ``:line`` (XML) or ``#index`` (JSON);
    offset 1 does not match 10-19."""
    import re

    return re.fullmatch(rf"{re.escape(topic)}/{partition}/{offset}(?:[:#]\d+)?", source) \
        is not None


def stored_events(location):
    """``{row key: event}`` of the HBase EVENT LOG TABLE."""
    import happybase

    from soads.storage import hbase

    host, port, prefix = hbase.parse_location(location)
    conn = happybase.Connection(host, port, table_prefix=prefix, table_prefix_separator=b"_")
    try:
        return {key: hbase.decode(cells) for key, cells in conn.table("event_log").scan()}
    finally:
        conn.close()


def assert_exactly_once(published, topic, location, db_url, dwell=60.0, idle=3600.0):
    """Every published flat event is in HBase exactly once, and the RELATIONAL DEPENDENCY
    TABLE equals the batch recomputation of the event log (minus late events).

    Returns the recomputed ``{oid: [session sequence, ...]}``.
    """
    from soads.dependencies import relation_counts
    from soads.storage import hbase, sinks, tables

    expected = []
    for offset, data in published:
        ev, _ = epcis.parse_document(data, f"{topic}/0/{offset}", MAX_BYTES)
        expected += ev
    stored = stored_events(location)
    assert len(expected) == len({hbase.row_key(e) for e in expected})
    missing = {hbase.row_key(e) for e in expected} - set(stored)
    extra = set(stored) - {hbase.row_key(e) for e in expected}
    assert not missing and not extra, (len(missing), len(extra))

    late = {(r[S.OID], r[S.SOURCE]) for r in sinks.read_late(db_url)}
    kept = [(e[S.OID], e[S.READ_POINT], hbase.to_micros(e[S.EVENT_TIME]), e[S.SOURCE])
            for e in stored.values() if (e[S.OID], e[S.SOURCE]) not in late]
    sessions = recompute_sequences(kept, dwell, idle)
    got = {(r[S.A], r[S.B]): (r[S.FREQ], r[S.SUPPORT])
           for r in tables.read_table(db_url, "relational_dependency")}
    assert got == relation_counts([s for ss in sessions.values() for s in ss])
    return sessions


def ledger_watermark_us(ck, name, db_url):
    """The event-time watermark (µs) of the newest micro-batch in the sink's ledger (a batch
    whose sink ran may lack its commit file): the horizon at which the stream last evicted
    objects, so the closed rule at it gives the stream's ``closed`` flags."""
    from soads.storage import tables

    newest = max(r[S.BATCH_ID] for r in tables.read_table(db_url, "sink_batch"))
    return batch_watermark_ms(ck, name, newest) * 1000


def add_model_run(db_url, run_id, model, when):
    """Store a fitted context detector as a model run (detector_count rows, then the
    detector_run row, as the batch job stores one)."""
    from soads.detect import runs
    from soads.storage import tables

    rows = runs.model_run_rows(run_id, model.to_rows())
    tables.write_rows(db_url, "detector_count", rows)
    tables.write_rows(db_url, "detector_run", [{
        S.RUN_ID: run_id, S.CREATED_AT: when, S.N_ROWS: len(rows),
        S.SKIPPED: list(model.skipped_),
        S.CONF: runs.run_conf(model.conf, model.missed_read_rate)}])


def assert_verdicts_recompute(scores, sessions, models, horizon_us, idle=3600.0):
    """object_score's verdict columns (``scores``: {oid: row}) equal the context detector's core
    on the same objects: each object's last session (sequence, per-visit attributes) from the
    batch recomputation ``sessions`` (:func:`soads.stream.state.recompute_sessions`), closed by
    the closed rule at ``horizon_us``, against the row's model run (``models``: {run id:
    ContextModel}). Returns ``{oid: closed}``."""
    from soads.detect import runs
    from soads.stream.state import is_closed

    closed = {}
    for oid, row in scores.items():
        last = sessions[oid][-1]
        closed[oid] = is_closed(last.last_us, horizon_us, idle)
        verdict = models[row[S.MODEL_RUN_ID]].score(last.sequence, last.attributes, closed[oid])
        anomaly, flagged, explanation = runs.verdict_columns(verdict)
        assert (row[S.ANOMALY], row[S.IS_ANOMALY]) == (anomaly, flagged), oid
        assert row[S.EXPLANATION] == (None if explanation is None else json.loads(explanation)), \
            oid
    return closed


def assert_windows_recompute(windows, scores, window_seconds=3600, rel=1e-9):
    """alignment_score rows (maintained incrementally by the stream) equal a recomputation from
    the object_score rows ``scores`` ({oid: row}): the same windows, counts and mean scores."""
    from soads.storage.sinks import window_start

    expected = {}
    for row in scores.values():
        key = (window_start(row[S.LAST_TIME], window_seconds), row[S.RUN_ID])
        expected.setdefault(key, []).append(row[S.SCORE])
    assert {(w[S.WINDOW_START], w[S.RUN_ID]): w[S.N_OBJECTS] for w in windows} == {
        k: len(v) for k, v in expected.items()}
    for w in windows:
        got = expected[(w[S.WINDOW_START], w[S.RUN_ID])]
        assert w[S.MEAN_SCORE] == pytest.approx(sum(got) / len(got), rel=rel)


def assert_rates_recompute(db_url, scores, sessions, models, closed, window_seconds=3600):
    """The anomaly_rate rows (incremented by the stream as objects finish) equal the batch rule
    (:func:`soads.detect.runs.anomaly_rate`) over the *closed* objects of the batch
    recomputation: each one's last session judged closed by the core against its object_score
    row's model run (``scores``: {oid: row}; ``sessions``: :func:`recompute_sessions`;
    ``models``: {run id: ContextModel}; ``closed``: {oid: closed} from
    :func:`assert_verdicts_recompute`). Returns the number of anomaly_rate rows."""
    import datetime as dt

    from soads.detect import runs
    from soads.storage import tables

    per_run = {}
    for oid, row in scores.items():
        if not closed[oid] or row[S.MODEL_RUN_ID] is None:
            continue
        last = sessions[oid][-1]
        v = models[row[S.MODEL_RUN_ID]].score(last.sequence, last.attributes, True)
        per_run.setdefault(row[S.MODEL_RUN_ID], []).append(
            (last.sequence, last.last_us, v.is_anomaly, v.explanation))
    epoch, width = dt.datetime(1970, 1, 1), dt.timedelta(seconds=window_seconds)
    expected = {(epoch + dt.timedelta(microseconds=w), rp, rid): nk
                for rid, objects in per_run.items()
                for (w, rp), nk in runs.anomaly_rate(objects, window_seconds).items()}
    got = [r for r in tables.read_table(db_url, "anomaly_rate")
           if r[S.WRITER] == S.WRITER_STREAM]
    assert {(r[S.WINDOW_START], r[S.READ_POINT], r[S.MODEL_RUN_ID]): (r[S.N_OBJECTS], r[S.FLAGGED])
            for r in got} == expected
    for r in got:
        assert r[S.WINDOW_END] - r[S.WINDOW_START] == width
        assert r[S.RATE] == pytest.approx(r[S.FLAGGED] / r[S.N_OBJECTS], rel=1e-12)
    assert len(got) == len(expected)  # one row per key
    return len(got)
