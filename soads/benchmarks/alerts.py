"""Benchmark of alerting through the real parts: Kafka -> the event job (Spark) -> MySQL
object_score -> the alert process (``jobs/alerts.py``, its own process) -> the alerts and
actions topics, the alert table and Prometheus Alertmanager.

(b) latency and quality, run first: a simulated battery plant with labelled process and
    attribute anomalies is published at ``rate`` flat events/s (after WARM_UP_SECONDS of warm-up
    at the same rate, not measured). For every ObjectAnomaly alert in the alerts topic: the
    latency from the moment the document holding the read its explanation names (the step that
    made the verdict) was handed to the producer, to the moment the alert was read from the
    topic (the alert's table row is committed before it is sent, so it is then in both);
    ``action_p95_s``: alert message -> its action message. Precision and recall of the alerted
    objects against the simulator's labels (recall over the anomalous objects whose reads were
    all published in the measured part).
(a) sustained: ``events`` flat events pre-published; the event job's throughput (as ``soads
    bench stream`` measures it) while the alert process evaluates its rules beside it.

Usage::

    soads bench alerts [--rate 2000] [--seconds 60] [--events 1300000]

The last line printed is one JSON object with ``events_per_s``, ``alerts``,
``objects_flagged``, ``precision``, ``recall``, ``p50_s``, ``p95_s``, ``action_p95_s``.
"""
from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from soads.alerts import topics
from soads.benchmarks import stream as sb

logger = logging.getLogger(__name__)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ANOMALY_RATE = 0.04
ATTRIBUTE_ANOMALY_RATE = 0.04
EVALUATION_SECONDS = 0.5


def _toml_str(s: str) -> str:
    return json.dumps(s)


def _conf_file(workdir: str, p: dict, ck: str, alerts_topic: str, actions_topic: str,
               am_url: str, conf) -> str:
    """The alert process's conf: the place's database (no password: the process reads it from
    the environment, like every job), topics, checkpoint (for the consumer lag)."""
    m = conf.mariadb
    db_url = f"mysql+pymysql://{m.user}@{m.host}:{m.port}/{p['database']}"
    path = os.path.join(workdir, f"alerts-{uuid.uuid4().hex[:6]}.toml")
    with open(path, "w") as fh:
        fh.write(f"""[storage]
db_url = {_toml_str(db_url)}
[stream]
source = "kafka"
kafka_bootstrap = {_toml_str(p['bootstrap'])}
topic = {_toml_str(p['topic'])}
quarantine_topic = ""
checkpoint_root = {_toml_str(ck)}
[alerts]
evaluation_seconds = {EVALUATION_SECONDS}
alerts_topic = {_toml_str(alerts_topic)}
actions_topic = {_toml_str(actions_topic)}
alertmanager_url = {_toml_str(am_url)}
""")
    return path


@contextlib.contextmanager
def alert_process(conf_path: str, log_path: str):
    """``jobs/alerts.py`` as a subprocess for the duration of the block (stopped with SIGTERM,
    then SIGKILL)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO] + [x for x in [env.get("PYTHONPATH")] if x])
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, os.path.join(REPO, "jobs", "alerts.py"),
                                 "--conf", os.path.join(REPO, "conf", "alerts.toml"),
                                 "--conf", os.path.join(REPO, "conf", "actions.toml"),
                                 "--conf", conf_path], stdout=log, stderr=log, env=env,
                                cwd=REPO)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Reader(threading.Thread):
    """Reads a topic from its start in the background: ``[(wall time, message dict)]``."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                      auto_offset_reset="earliest", enable_auto_commit=False,
                                      consumer_timeout_ms=500, fetch_max_wait_ms=50)
        self.got: list[tuple[float, dict, str]] = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for msg in self.consumer:
                self.got.append((time.time(), json.loads(msg.value),
                                 msg.key.decode() if msg.key else ""))
                if self.stop.is_set():
                    break
        self.consumer.close()


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.delete_topics(names)
        admin.close()
    except Exception:  # noqa: BLE001 - cleanup only
        pass


def latency(spark, conf, patterns, run, rate: float, seconds: float, workdir: str, job,
            model, am_url: str, events_per_file: int = 100) -> dict:
    from soads.simulator.generate import _visits, iter_documents
    from soads.simulator.publish import publish

    p = sb._place(conf, "al")
    hexid = uuid.uuid4().hex[:8]
    alerts_topic, actions_topic = f"soads-bench-alerts-{hexid}", f"soads-bench-actions-{hexid}"
    topics.ensure_topics(p["bootstrap"], [alerts_topic, actions_topic])
    truth: dict[str, object] = {}
    doc_last_ms: list[int] = []   # per published document (offset order): its last event time
    sent: list[float] = []        # per document: wall time handed to the producer
    try:
        sb._prepare_db(p, patterns, run, model)
        ck = os.path.join(workdir, "ck-al")
        conf_path = _conf_file(workdir, p, ck, alerts_topic, actions_topic, am_url, conf)
        readers = [_Reader(p["bootstrap"], alerts_topic), _Reader(p["bootstrap"], actions_topic)]
        for r in readers:
            r.start()
        queries = sb._start(spark, p, ck, job)
        log_path = os.path.join(workdir, "alerts.log")
        try:
            with alert_process(conf_path, log_path):
                n_objects = int(rate * (seconds + sb.WARM_UP_SECONDS) / sb.EVENTS_PER_OBJECT
                                * 1.3) + 60
                docs = iter(iter_documents(
                    n_objects, seed=41, anomaly_rate=ANOMALY_RATE,
                    attribute_anomaly_rate=ATTRIBUTE_ANOMALY_RATE,
                    events_per_file=events_per_file, timed=True,
                    on_object=lambda o: truth.__setitem__(o.oid, o)))

                def for_seconds(span):
                    stop_at = time.monotonic() + span
                    for name, data, last_ms in docs:
                        doc_last_ms.append(last_ms)
                        yield name, data
                        if time.monotonic() >= stop_at:
                            return

                warm = publish(for_seconds(sb.WARM_UP_SECONDS), p["bootstrap"], p["topic"], rate,
                               on_sent=lambda name, n, t: sent.append(t))
                sb._wait_committed(ck, warm["documents"], queries, timeout=300)
                measured_from = len(sent)
                stats = publish(for_seconds(seconds), p["bootstrap"], p["topic"], rate,
                                on_sent=lambda name, n, t: sent.append(t))
                sb._wait_committed(ck, len(sent), queries, timeout=600)
                time.sleep(3 * EVALUATION_SECONDS + 2.0)  # the last evaluations and deliveries
        finally:
            queries.stop()
            for r in readers:
                r.stop.set()
            for r in readers:
                r.join(timeout=10)
        out = _measure(readers[0].got, readers[1].got, truth, doc_last_ms, sent, measured_from,
                       _visits)
        out["publish"] = {k: stats[k] for k in ("documents", "events", "seconds",
                                                "events_per_s")}
        with open(log_path, errors="replace") as fh:
            out["alert_process_errors"] = sum(" ERROR " in line for line in fh)
        return out
    finally:
        _delete_topics(p["bootstrap"], [alerts_topic, actions_topic])
        sb._drop(conf, p)


def _measure(alerts, actions, truth, doc_last_ms, sent, measured_from, visits_of) -> dict:
    """Latencies and quality from the messages read (see the module docstring)."""
    first_ms = doc_last_ms[measured_from - 1] if measured_from else -1
    keys = [m[2] for m in alerts]
    duplicates = len(keys) - len(set(keys))
    fired: dict[str, tuple[float, dict]] = {}  # alertId -> (receipt time, message)
    for t, m, _ in alerts:
        if m.get("status") == "firing":
            fired.setdefault(m["alertId"], (t, m))
    lat, flagged = [], set()
    for t, m in fired.values():
        labels = m["labels"]
        if labels.get("alertname") != "ObjectAnomaly":
            continue
        oid = labels.get("oid")
        flagged.add(oid)
        obj = truth.get(oid)
        try:
            step = json.loads(m["annotations"].get("explanation") or "null")["step"]
        except (TypeError, KeyError, ValueError):
            continue
        if obj is None:
            continue
        visits = visits_of(obj, 60_000.0)
        if step >= len(visits):
            continue  # the END step: judged when the object is evicted, not by a read
        t_ms = visits[step][0]
        k = bisect.bisect_left(doc_last_ms, t_ms)  # the document holding that read
        if k < measured_from or k >= len(sent):
            continue  # published during the warm-up (or not at all)
        lat.append(t - sent[k])
    act = []
    for t, m, _ in actions:
        a = fired.get(m.get("alertId"))
        if a is not None:
            act.append(t - a[0])
    # quality over the objects whose reads were all published in the measured part
    last_ms = doc_last_ms[len(sent) - 1] if sent else -1
    done = [o for o in truth.values() if o.reads and o.reads[0][0] > first_ms
            and o.reads[-1][0] <= last_ms]
    anomalous = {o.oid for o in done if o.label == 1}
    judged = flagged & {o.oid for o in done}
    tp = len(judged & anomalous)
    pct = sb._percentile
    return {
        "alerts": len(fired), "object_alerts": sum(1 for _, m in fired.values()
                                                   if m["labels"].get("alertname") ==
                                                   "ObjectAnomaly"),
        "alert_names": sorted({m["labels"].get("alertname") for _, m in fired.values()}),
        "objects_flagged": len(flagged), "objects_judged": len(done),
        "precision": round(tp / len(judged), 4) if judged else None,
        "recall": round(tp / len(anomalous), 4) if anomalous else None,
        "p50_s": round(statistics.median(lat), 3) if lat else None,
        "p95_s": round(pct(lat, 0.95), 3) if lat else None,
        "max_s": round(max(lat), 3) if lat else None, "latencies": len(lat),
        "actions": len(actions), "action_p50_s": round(statistics.median(act), 3) if act else None,
        "action_p95_s": round(pct(act, 0.95), 3) if act else None,
        "duplicate_alert_messages": duplicates,
        "duplicate_action_messages": len(actions) - len({m[2] for m in actions}),
    }


def sustained(spark, conf, patterns, run, events: int, workdir: str, job, model,
              am_url: str) -> dict:
    """``soads bench stream``'s sustained part with the alert process beside the event job."""
    hexid = uuid.uuid4().hex[:8]
    alerts_topic, actions_topic = f"soads-bench-alerts-{hexid}", f"soads-bench-actions-{hexid}"
    bootstrap = None

    @contextlib.contextmanager
    def alongside(p: dict, ck: str):
        nonlocal bootstrap
        bootstrap = p["bootstrap"]
        topics.ensure_topics(bootstrap, [alerts_topic, actions_topic])
        conf_path = _conf_file(workdir, p, ck, alerts_topic, actions_topic, am_url, conf)
        with alert_process(conf_path, os.path.join(workdir, "alerts-sustained.log")):
            yield

    try:
        return sb.sustained(spark, conf, patterns, run, events, workdir, job, 500,
                            operator="jvm", model=model, alongside=alongside)
    finally:
        if bootstrap:
            _delete_topics(bootstrap, [alerts_topic, actions_topic])


def run(rate: float = 2000.0, seconds: float = 60.0, events: int = 1_300_000,
        services_conf=None, job=None, spark_conf=None) -> list[str]:
    """Both parts; returns the report lines (the last one is JSON)."""
    import dataclasses

    from soads import config, jars, services, session
    from soads.config import SparkConf, StreamConf
    from soads.stream.job import spark_jars

    conf = services_conf or config.load([services.DEFAULT_CONF])
    am_url = services.alertmanager_url(conf)
    job = job or StreamConf()
    extra = spark_jars(StreamConf(source="kafka", state_operator="jvm"),
                       jars.spark_kafka_jars(conf.kafka.spark_connector_version,
                                             conf.services.jars))
    spark_conf = dataclasses.replace(spark_conf or SparkConf(shuffle_partitions=2),
                                     master="local[*]", app_name="soads-bench-alerts")
    spark = session.build(spark_conf, extra={
        **extra, "spark.ui.showConsoleProgress": "false",
        "spark.sql.streaming.numRecentProgressUpdates": "1000",
        "spark.sql.streaming.minBatchesToRetain": "1000"})
    workdir = tempfile.mkdtemp(prefix="soads-bench-alerts-")
    try:
        patterns, mining_run, model = sb._mining_run(spark, workdir)
        b = latency(spark, conf, patterns, mining_run, rate, seconds, workdir, job, model,
                    am_url)
        a = sustained(spark, conf, patterns, mining_run, events, workdir, job, model, am_url)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {"events_per_s": a["events_per_s"], "alerts": b["alerts"],
               "objects_flagged": b["objects_flagged"], "precision": b["precision"],
               "recall": b["recall"], "p50_s": b["p50_s"], "p95_s": b["p95_s"],
               "action_p95_s": b["action_p95_s"]}
    lines = [
        f"alerts benchmark on {os.cpu_count()} cores: event job (Spark local[*], state operator "
        f"jvm, [stream] max_offsets_per_trigger {job.max_offsets_per_trigger}) + alert process "
        f"(evaluation every {EVALUATION_SECONDS} s) + Kafka + MariaDB + Alertmanager {am_url}; "
        f"simulated plant with {ANOMALY_RATE:.0%} process and {ATTRIBUTE_ANOMALY_RATE:.0%} "
        f"attribute anomalies; context detector model run "
        f"{model[0]['run_id'] if model else 'none'}",
        f"(b) at {rate:,.0f} events/s for {seconds:.0f} s ({b['publish']['events']:,} events, "
        f"achieved {b['publish']['events_per_s']:,.0f}/s): {b['alerts']} alerts "
        f"({', '.join(b['alert_names'])}), {b['objects_flagged']} objects flagged; precision "
        f"{b['precision']}, recall {b['recall']} over {b['objects_judged']} finished objects; "
        f"event published -> alert in the topic and the table p50 {b['p50_s']} s, p95 "
        f"{b['p95_s']} s, max {b['max_s']} s over {b['latencies']} alerts (target p95 <= 2.5 s); "
        f"alert -> action p50 {b['action_p50_s']} s, p95 {b['action_p95_s']} s over "
        f"{b['actions']} actions (target <= 1 s); duplicate messages: alerts "
        f"{b['duplicate_alert_messages']}, actions {b['duplicate_action_messages']}",
        f"(a) sustained with the alert process beside it: {a['events']:,} flat events "
        f"pre-published; steady {a['steady_events']:,} events in {a['steady_seconds']} s = "
        f"{a['events_per_s']:,} events/s into HBase + MySQL (target 20,000)",
        json.dumps({**summary, "latency": b, "sustained": a,
                    "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}),
    ]
    return lines
