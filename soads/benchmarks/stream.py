"""Benchmark of the long-running event job through the real parts: Kafka -> Spark Structured
Streaming (soads.stream) -> HBase EVENT LOG TABLE + MySQL relation and score tables, with
the job's own ``[stream]`` and ``[spark]`` settings.

(b) latency, run first (on quiet services): the query runs on a fresh topic, warmed up for
    WARM_UP_SECONDS at the rate; then documents are published at ``rate`` flat events/s for
    ``seconds``. Latency of a document = the wall time at which the micro-batch holding its
    Kafka record was committed (its events are in HBase and its object_score rows committed in
    MySQL before Spark writes the batch's commit file: the commit file's mtime) minus the wall
    time the producer was handed the record. p50/p95/max over documents.
(a) sustained ingest: ``events`` flat events pre-published to a fresh topic; the query runs
    with scoring on (a mining run from the batch miner is in the PATTERN TABLE). Throughput =
    flat events committed between the end of the first micro-batch (JVM/Python warm-up, the
    stateful operator's first batch) and the end of the last one, divided by that time. Once
    per state operator (JVM port, Python state function).

Each part uses its own topic, MySQL database and HBase table prefix (dropped afterwards).

Usage::

    soads bench stream [--events 1300000] [--rate 2000] [--seconds 60] [--conf TOML ...]
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
import uuid

from soads import schema as S
from soads.stream.checkpoint import committed_batches
from soads.stream.job import QUERY_NAME as QUERY, spark_jars, start_event_queries

logger = logging.getLogger(__name__)

EVENTS_PER_OBJECT = 18.2
WARM_UP_SECONDS = 20.0  # (b): published at the rate before the measured part


def _place(conf, tag: str) -> dict:
    import pymysql
    from kafka.admin import KafkaAdminClient, NewTopic

    from soads import services

    hexid = uuid.uuid4().hex[:8]
    p = {"bootstrap": services.kafka_bootstrap(conf), "topic": f"soads-bench-{tag}-{hexid}",
         "database": f"{conf.mariadb.database}_bench_{tag}_{hexid}",
         "location": f"hbase://127.0.0.1:9090/bench{tag}{hexid}"}
    admin = KafkaAdminClient(bootstrap_servers=p["bootstrap"])
    admin.create_topics([NewTopic(p["topic"], 1, 1)])
    admin.close()
    m = conf.mariadb
    root = pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password)
    with root.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{p['database']}`")
    root.close()
    p["db_url"] = services.mysql_url(conf, p["database"])
    return p


def _drop(conf, p: dict) -> None:
    import pymysql
    from kafka.admin import KafkaAdminClient

    from soads.storage import hbase

    admin = KafkaAdminClient(bootstrap_servers=p["bootstrap"])
    admin.delete_topics([p["topic"]])
    admin.close()
    m = conf.mariadb
    root = pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password)
    with root.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{p['database']}`")
    root.close()
    conn = hbase.connect(p["location"])
    try:
        for name in (hbase.EVENT_TABLE, hbase.QUARANTINE_TABLE):
            if name.encode() in conn.tables():
                conn.delete_table(name, disable=True)
    finally:
        conn.close()


def _mining_run(spark, workdir: str, n_objects: int = 2000) -> tuple[list[dict], dict, tuple]:
    """The batch miner on a simulated log (Parquet + SQLite in ``workdir``): pattern and
    mining_run rows to copy into the benchmark's MySQL, and the context detector's model run
    the batch job fitted beside them (``(detector_run row, detector_count rows)``, or None), so
    the stream judges every object as it does in production."""
    from soads import config, pipeline, query
    from soads.simulator.generate import simulate

    cfg = config.load(overrides=[f"storage.root={workdir}/mine",
                                 f"storage.db_url=sqlite:///{workdir}/mine.db"])
    simulate(os.path.join(workdir, "epcis"), n_objects=n_objects, seed=99, events_per_file=5000)
    report = pipeline.Report()
    pipeline.ingest(spark, [os.path.join(workdir, "epcis")], cfg, report)
    seqs, rel = pipeline.sequences_and_relations(spark, cfg, report)
    pipeline.mine(spark, seqs, rel, cfg, report)
    pipeline.fit_detector(spark, seqs, rel, cfg, report)  # as soads mine does
    run = query.latest_run(cfg.storage.db_url)
    model = query.newest_detector_run(cfg.storage.db_url)
    if model is not None:
        from soads.storage import tables

        model = (model, tables.read_table(cfg.storage.db_url, "detector_count",
                                          {S.RUN_ID: model[S.RUN_ID]}))
    return query.pattern_rows(cfg.storage.db_url, run[S.RUN_ID]), run, model


def _prepare_db(p: dict, patterns: list[dict], run: dict, model: tuple | None = None) -> None:
    from soads.storage import sinks, tables

    sinks.prepare(p["db_url"], p["location"])
    tables.write_rows(p["db_url"], "pattern", patterns)
    tables.write_rows(p["db_url"], "mining_run", [run])
    if model is not None:
        tables.write_rows(p["db_url"], "detector_count", model[1])
        tables.write_rows(p["db_url"], "detector_run", [model[0]])


def _stream_conf(p: dict, ck: str, job, operator: str = "jvm"):
    """The job's ``[stream]`` (``job``) on this part's topic and checkpoint, with the state
    operator under test (its database and HBase prefix: :func:`_start`'s ``[storage]``)."""
    import dataclasses

    return dataclasses.replace(job, source="kafka", state_operator=operator,
                               kafka_bootstrap=p["bootstrap"], topic=p["topic"],
                               quarantine_topic="", starting_offsets="earliest",
                               checkpoint_root=ck)


def _commits(ck: str, name: str) -> list[tuple[float, int]]:
    return committed_batches(ck, name)


def _wait_committed(ck: str, end: int, queries, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for q in queries.all():
            if q.exception() is not None:
                raise RuntimeError(f"query {q.name} failed: {q.exception()}")
        if (_commits(ck, QUERY) or [(0, -1)])[-1][1] >= end:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not all of offset {end} committed in {timeout:.0f} s")
        time.sleep(0.5)


def _start(spark, p, ck, job, maximal_only=False, operator="jvm"):
    from soads.config import Config, ScoringConf, StorageConf

    return start_event_queries(spark, Config(
        stream=_stream_conf(p, ck, job, operator),
        storage=StorageConf(event_log=p["location"], db_url=p["db_url"]),
        scoring=ScoringConf(maximal_only=maximal_only)))


def _docs(n_objects: int, seed: int, events_per_file: int):
    from soads.simulator.generate import iter_documents

    return iter_documents(n_objects, seed=seed, events_per_file=events_per_file)


def _durations(queries) -> dict:
    """Median per-batch ``durationMs`` parts and input records of each query (the profile)."""
    out = {}
    for q in queries.all():
        progress = [json.loads(p.json) for p in q.recentProgress if p.numInputRows]
        parts = sorted({k for p in progress for k in p.get("durationMs", {})})
        out[q.name] = {k: statistics.median(p["durationMs"].get(k, 0) for p in progress)
                       for k in parts if k in ("addBatch", "triggerExecution", "queryPlanning",
                                               "getBatch", "walCommit", "commitOffsets")}
        if progress:
            out[q.name]["records"] = statistics.median(p["numInputRows"] for p in progress)
    return out


def _slowest(queries, first_batch: int, k: int = 3) -> list[dict]:
    """The ``k`` longest micro-batches from ``first_batch`` on: id, records and ``durationMs``
    parts (where a latency tail comes from)."""
    progress = [json.loads(p.json) for q in queries.all() if q.name == QUERY
                for p in q.recentProgress]
    progress = [p for p in progress if p["batchId"] >= first_batch and p["numInputRows"]]
    progress.sort(key=lambda p: -p["durationMs"].get("triggerExecution", 0))
    return [{"batch": p["batchId"], "records": p["numInputRows"], **{
        k: v for k, v in p["durationMs"].items() if v}} for p in progress[:k]]


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))]


def sustained(spark, conf, patterns, run, events: int, workdir: str, job,
              events_per_file: int, maximal_only: bool = False, operator: str = "jvm",
              model: tuple | None = None, alongside=None) -> dict:
    """Part (a). ``alongside(place, checkpoint root)``, a context manager, runs something
    beside the query while it works (``soads bench alerts``: the alert process)."""
    from soads.simulator.publish import publish

    p = _place(conf, "a")
    counts: list[int] = []
    try:
        _prepare_db(p, patterns, run, model)
        stats = publish(_docs(int(events / EVENTS_PER_OBJECT) + 1, 21, events_per_file),
                        p["bootstrap"], p["topic"], 0.0,
                        on_sent=lambda name, n, t: counts.append(n))
        logger.info("pre-published %s", stats)
        cum = [0]
        for n in counts:
            cum.append(cum[-1] + n)  # cum[k] = flat events in offsets < k
        ck = os.path.join(workdir, f"ck-a-{operator}")
        with (alongside(p, ck) if alongside is not None else contextlib.nullcontext()):
            t0 = time.time()
            queries = _start(spark, p, ck, job, maximal_only, operator)
            try:
                _wait_committed(ck, len(counts), queries, timeout=3600)
                profile = _durations(queries)
            finally:
                queries.stop()
        commits = _commits(ck, QUERY)
        # steady part: after the first micro-batch, until the last one
        start_t, start_off = commits[0]
        end_t = commits[-1][0]
        steady_events = cum[len(counts)] - cum[start_off]
        first_batch = round(start_t - t0, 1)
        n_batches = len(commits)
        return {"events": cum[-1], "documents": len(counts), "publish_events_per_s":
                stats["events_per_s"], "steady_events": steady_events,
                "steady_seconds": round(end_t - start_t, 1),
                "events_per_s": round(steady_events / max(end_t - start_t, 1e-9)),
                "total_seconds": round(end_t - t0, 1), "first_batch_seconds": first_batch,
                "batches": n_batches, "max_offsets_per_trigger": job.max_offsets_per_trigger,
                "state_operator": operator,
                "median_batch_ms": profile,
                "events_per_document": round(cum[-1] / len(counts), 1)}
    finally:
        _drop(conf, p)


def latency(spark, conf, patterns, run, rate: float, seconds: float, workdir: str, job,
            events_per_file: int, maximal_only: bool = False, operator: str = "jvm",
            model: tuple | None = None) -> dict:
    from soads.simulator.publish import publish

    p = _place(conf, "b")
    sent: list[tuple[int, float]] = []  # (flat events, wall time) per record, offset order
    try:
        _prepare_db(p, patterns, run, model)
        ck = os.path.join(workdir, "ck-b")
        queries = _start(spark, p, ck, job, maximal_only, operator)
        try:
            # warm-up: the first micro-batches (stateful operator start, the services' JIT
            # compilers) are not measured: WARM_UP_SECONDS at the rate, then a pause until
            # they are committed. They are the head of the same simulated log, so event time
            # runs on: a separate log would start at the same simulated clock and all of it
            # would be late (below the watermark the warm-up moved).
            n_objects = int(rate * (seconds + WARM_UP_SECONDS) / EVENTS_PER_OBJECT * 1.3) + 60
            docs = iter(_docs(n_objects, 31, events_per_file))

            def for_seconds(span):
                stop_at = time.monotonic() + span
                for d in docs:
                    yield d
                    if time.monotonic() >= stop_at:
                        return

            warm = publish(for_seconds(WARM_UP_SECONDS), p["bootstrap"], p["topic"], rate)
            _wait_committed(ck, warm["documents"], queries, timeout=300)
            first_measured = len(_commits(ck, QUERY))
            stats = publish(for_seconds(seconds), p["bootstrap"], p["topic"], rate,
                            on_sent=lambda name, n, t: sent.append((n, t)))
            end = warm["documents"] + len(sent)
            _wait_committed(ck, end, queries, timeout=600)
            profile = _durations(queries)
            slowest = _slowest(queries, first_measured)
        finally:
            queries.stop()
        out = {"publish": {k: stats[k] for k in ("documents", "events", "seconds",
                                                 "events_per_s")}, "median_batch_ms": profile,
               "slowest_batches_ms": slowest}
        commits = _commits(ck, QUERY)
        lat, k = [], 0
        for i, (_, t_pub) in enumerate(sent):
            offset = warm["documents"] + i
            while commits[k][1] <= offset:
                k += 1
            lat.append(commits[k][0] - t_pub)
        out.update({"p50": round(statistics.median(lat), 3),
                    "p95": round(_percentile(lat, 0.95), 3), "max": round(max(lat), 3),
                    "batches": sum(1 for c in commits if c[1] > warm["documents"])})
        return out
    finally:
        _drop(conf, p)


def run(events: int = 1_300_000, rate: float = 2000.0, seconds: float = 60.0,
        services_conf=None, job=None, sustained_events_per_file: int = 500,
        latency_events_per_file: int = 100, spark_conf=None, maximal_only: bool = False,
        operators: tuple[str, ...] = ("jvm", "python")) -> list[str]:
    """Both parts; returns the report lines (the last one is JSON).

    ``job`` (:class:`soads.config.StreamConf`) is the stream job's ``[stream]`` section and
    ``spark_conf`` (:class:`soads.config.SparkConf`; master and app name are set here) its
    ``[spark]``: ``soads bench stream`` passes those of conf/soads.toml +
    conf/services-stream.toml, so the figures are those of the job as configured (records per
    micro-batch, Kafka partitions, trigger interval, JVM options). Part (b) runs first, on
    quiet services: part (a) leaves HBase flushing and compacting hundreds of thousands of rows.
    Part (a) runs once per state operator in ``operators`` (side by side: the JVM port and the
    Python state function); part (b) with the first. ``maximal_only`` scores against the run's
    maximal patterns only (``scoring.maximal_only``)."""
    from soads import config, jars, services, session
    from soads.config import SparkConf, StreamConf

    import dataclasses

    conf = services_conf or config.load([services.DEFAULT_CONF])
    job = job or StreamConf()
    extra = spark_jars(StreamConf(source="kafka", state_operator="jvm"),
                       jars.spark_kafka_jars(conf.kafka.spark_connector_version,
                                             conf.services.jars))
    spark_conf = dataclasses.replace(spark_conf or SparkConf(shuffle_partitions=2),
                                     master="local[*]", app_name="soads-bench-stream")
    shuffle_partitions = spark_conf.shuffle_partitions
    spark = session.build(spark_conf, extra={
        **extra, "spark.ui.showConsoleProgress": "false",
        # every micro-batch of the latency run (~150) for the slowest ones
        "spark.sql.streaming.numRecentProgressUpdates": "1000",
        # and its commit files, which time the latency (_commits): Spark keeps the last 100 by
        # default, and a 0.5 s micro-batch rolled the first measured ones away
        "spark.sql.streaming.minBatchesToRetain": "1000"})
    workdir = tempfile.mkdtemp(prefix="soads-bench-stream-")
    knobs = (job.max_offsets_per_trigger, job.min_partitions, job.max_records_per_partition,
             job.trigger_seconds)
    try:
        patterns, mining_run, model = _mining_run(spark, workdir)
        b = latency(spark, conf, patterns, mining_run, rate, seconds, workdir, job,
                    latency_events_per_file, maximal_only, operators[0], model)
        a = {op: sustained(spark, conf, patterns, mining_run, events, workdir, job,
                           sustained_events_per_file, maximal_only, op, model)
             for op in operators}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    cores = os.cpu_count()
    lines = [
        f"stream benchmark on {cores} cores, Spark local[*], shuffle partitions "
        f"{shuffle_partitions}, JVM options {spark_conf.java_options or 'none'!r}, whole-stage "
        f"codegen {spark_conf.whole_stage_codegen}, codegen factory mode "
        f"{spark_conf.codegen_factory_mode or 'default'}, checkpoint file manager "
        f"{spark_conf.checkpoint_file_manager.rsplit('.', 1)[-1] or 'default'}; [stream] "
        f"max_offsets_per_trigger {knobs[0]}, min_partitions {knobs[1]}, "
        f"max_records_per_partition {knobs[2]}, trigger_seconds {knobs[3]}; mining run "
        f"{mining_run[S.RUN_ID]} ({len(patterns)} patterns, "
        f"{sum(bool(r[S.MAXIMAL]) for r in patterns)} maximal; scoring against "
        f"{'the maximal ones' if maximal_only else 'all'}); context detector model run "
        f"{model[0][S.RUN_ID] + ' (verdicts on)' if model else 'none (verdicts null)'}",
        f"(b) latency at {rate:,.0f} events/s for {seconds:.0f} s, state operator "
        f"{operators[0]} ({b['publish']['events']:,} events, achieved "
        f"{b['publish']['events_per_s']:,.0f}/s): publish -> event log in HBase and "
        f"object_score committed in MySQL p50 {b['p50']} s, p95 {b['p95']} s, max {b['max']} s "
        f"(target p95 <= 2.5 s); {b['batches']} micro-batches, median "
        f"{b['median_batch_ms'].get(QUERY, {}).get('triggerExecution', 0) / 1000:.2f} s, slowest "
        + ", ".join(f"{x['triggerExecution'] / 1000:.2f}" for x in b["slowest_batches_ms"])
        + " s",
    ]
    for op, r in a.items():
        lines.append(
            f"(a) sustained, state operator {op}: {r['events']:,} flat events in "
            f"{r['documents']:,} records pre-published; steady {r['steady_events']:,} events in "
            f"{r['steady_seconds']} s = {r['events_per_s']:,} events/s into HBase + MySQL "
            f"(target 20,000); first micro-batch ended after {r['first_batch_seconds']} s; "
            f"{r['batches']} batches")
    lines.append(json.dumps({"latency": b, "sustained": a, "at": dt.datetime.now(
        dt.timezone.utc).isoformat(timespec="seconds")}))
    return lines
