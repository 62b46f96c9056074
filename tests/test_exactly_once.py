"""Exactly-once against the real parts: Kafka -> jobs/stream_events.py -> HBase + MariaDB, with the
job killed (SIGKILL) three times at random moments and restarted on the same checkpoint.

Start the services first: ``make up`` (or ``python -m soads.services up``). Under ``CI=true`` a
missing service fails the test; elsewhere it skips with the reason.
"""
import datetime as dt
import json
import os
import random
import signal
import time
import uuid
from collections import Counter

import pytest

from soads import config, epcis, schema as S, services
from soads.config import ScoringConf
from soads.dependencies import relation_counts
from soads.scoring import score_batch
from soads.simulator.generate import iter_documents, iter_sequences
from soads.stream.state import recompute_sequences
import streamtools as st
from streamtools import MAX_BYTES, assert_windows_recompute, committed, require  # require: fail under CI=true, skip elsewhere

REPO = os.path.join(os.path.dirname(__file__), "..")
N_OBJECTS, SEED = 300, 11
KILLS = 3
DONE_TIMEOUT = 300


@pytest.fixture(scope="module")
def conf():
    c = config.load([services.DEFAULT_CONF])
    require("kafka", lambda: services.check("kafka", c))
    require("mariadb", lambda: services.check("mariadb", c))
    require("hbase", lambda: services.check("hbase", c))
    return c


def _bad_records():
    good = next(iter_documents(20, seed=1, events_per_file=25))[1]
    ev = (b"<ObjectEvent><eventTime>2024-03-04T08:00:00.000+09:00</eventTime><epcList><epc>"
          b"urn:epc:id:sgtin:1.2.3</epc></epcList><action>OBSERVE</action><readPoint><id>"
          b"urn:epc:id:sgln:1.2.3</id></readPoint></ObjectEvent>")

    def doc(body):
        return (b'<?xml version="1.0" encoding="UTF-8"?>\n<epcis:EPCISDocument '
                b'xmlns:epcis="urn:epcglobal:epcis:xsd:2" schemaVersion="2.0"><EPCISBody>'
                b"<EventList>" + body + b"</EventList></EPCISBody></epcis:EPCISDocument>")

    rnd = random.Random(3)
    return {
        "malformed_xml": good[:3000],
        "wrong_namespace": good.replace(b"urn:epcglobal:epcis:xsd:2", b"urn:example:not-epcis"),
        "binary": bytes(rnd.randrange(256) for _ in range(2000)),
        "binary ": doc(ev.replace(b"OBSERVE", b"OBS\xff\xfeRVE")),  # invalid UTF-8
        "missing_event_time": doc(ev.replace(
            b"<eventTime>2024-03-04T08:00:00.000+09:00</eventTime>", b"")),
        "unsupported_event": doc(ev.replace(b"ObjectEvent", b"WidgetEvent")),
        "too_large": doc(ev * (10 * 1024 * 1024 // len(ev) + 1)),  # a 10 MB document
    }


def _publish(bootstrap, topic):
    """Simulated documents with the bad records spread among them.

    Returns ``[(offset, bytes)]`` and ``{offset: intended reason}`` of the bad records.
    """
    from kafka import KafkaProducer

    docs = [(None, d) for _, d in iter_documents(N_OBJECTS, seed=SEED, events_per_file=25)]
    bad = [(reason.strip(), d) for reason, d in _bad_records().items()]
    step = len(docs) // (len(bad) + 1)
    records = []
    for i, d in enumerate(docs):
        records.append(d)
        if i % step == step - 1 and bad:
            records.append(bad.pop(0))
    records.extend(bad)
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 * 1024 * 1024,
                             acks="all")
    futures = [producer.send(topic, value=r, partition=0) for _, r in records]
    producer.flush()
    out = [(f.get(timeout=60).offset, r) for f, (_, r) in zip(futures, records)]
    producer.close()
    reasons = {o: reason for (o, _), (reason, _) in zip(out, records) if reason}
    return out, reasons


@pytest.mark.integration
def test_killed_and_restarted_job_ends_exactly_as_the_batch_recomputation(conf, tmp_path):
    import happybase
    import pymysql
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient, NewTopic

    from soads.storage import hbase, sinks, tables

    hexid = uuid.uuid4().hex[:10]
    topic, qtopic = f"soads-eo-{hexid}", f"soads-eo-q-{hexid}"
    bootstrap = services.kafka_bootstrap(conf)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1), NewTopic(qtopic, 1, 1)])
    m = conf.mariadb
    database = f"{m.database}_{hexid}"
    root = pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password)
    with root.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}`")
    db_url = services.mysql_url(conf, database)
    location = f"hbase://127.0.0.1:9090/eo{hexid}"
    ck = str(tmp_path / "ck")
    try:
        # the PATTERN TABLE: the five most common simulated paths
        sinks.prepare(db_url, location)
        common = Counter(tuple(s) for _, s in iter_sequences(N_OBJECTS, seed=SEED))
        patterns = [list(p) for p, _ in common.most_common(5)]
        tables.write_rows(db_url, "pattern", [
            {S.RUN_ID: "run-1", S.PATTERN_ID: k, S.PATTERN: p, S.SUPPORT: n, S.LENGTH: len(p),
             S.MAXIMAL: True} for k, (p, n) in enumerate(zip(patterns, common.values()))])
        tables.write_rows(db_url, "mining_run", [{S.RUN_ID: "run-1", S.ALGORITHM: "test",
                                                  S.CREATED_AT: dt.datetime(2024, 1, 1)}])
        published, bad_offsets = _publish(bootstrap, topic)
        end = published[-1][0] + 1

        # 8 records per micro-batch in tasks of at most 3: Kafka ranges split and replayed
        # across the kills
        place = st.Place(bootstrap, topic, qtopic, database, db_url, location)
        cmd = st.job_cmd(st.write_stream_toml(tmp_path / "stream.toml", place, ck,
                                              min_partitions=2, max_records_per_partition=3))
        rnd = random.Random(SEED)
        with open(tmp_path / "job.log", "ab") as log:
            kills = []
            for k in range(KILLS):
                proc = st.start(cmd, log)
                time.sleep(rnd.uniform(20, 40))
                assert proc.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
                kills.append(committed(ck, "events"))
                st.kill(proc, signal.SIGKILL)
            proc = st.start(cmd, log)
            deadline = time.monotonic() + DONE_TIMEOUT
            while committed(ck, "events") < end:
                assert proc.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
                assert time.monotonic() < deadline, f"not done: {kills}"
                time.sleep(2)
            st.kill(proc, signal.SIGTERM)
        # the kills hit a running job that had not yet finished the topic
        assert kills[0] < end, kills

        # expected: every published record parsed locally with its Kafka identity
        expected_events, expected_quarantine = [], []
        for offset, data in published:
            ev, qu = epcis.parse_document(data, f"{topic}/0/{offset}", MAX_BYTES)
            expected_events += ev
            expected_quarantine += qu

        # EVENT LOG TABLE: every flat event exactly once, by row key
        host, port, prefix = hbase.parse_location(location)
        conn = happybase.Connection(host, port, table_prefix=prefix, table_prefix_separator=b"_")
        stored = {key: hbase.decode(cells) for key, cells in conn.table("event_log").scan()}
        assert set(stored) == {hbase.row_key(e) for e in expected_events}
        assert len(stored) == len(expected_events)
        quarantined = {(c[b"e:source"].decode(), c[b"e:reason"].decode())
                       for _, c in conn.table("quarantine").scan()}
        conn.close()
        assert quarantined == {(q[S.SOURCE], q[S.REASON]) for q in expected_quarantine}
        assert len(bad_offsets) == len(_bad_records())
        for offset, reason in bad_offsets.items():
            assert any(s.startswith(f"{topic}/0/{offset}") and r == reason
                       for s, r in quarantined), (offset, reason)

        # quarantine topic: the same records (at-least-once: compared as a set)
        consumer = KafkaConsumer(qtopic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=10_000)
        on_topic = {(json.loads(msg.value)[S.SOURCE], json.loads(msg.value)[S.REASON])
                    for msg in consumer}
        consumer.close()
        assert on_topic == quarantined

        # RELATIONAL DEPENDENCY TABLE == batch recomputation of the event log (minus late events)
        late = {(r[S.OID], r[S.SOURCE]) for r in sinks.read_late(db_url)}
        kept = [(e[S.OID], e[S.READ_POINT], hbase.to_micros(e[S.EVENT_TIME]), e[S.SOURCE])
                for e in stored.values() if (e[S.OID], e[S.SOURCE]) not in late]
        sessions = recompute_sequences(kept, 60.0, 3600.0)
        got = {(r[S.A], r[S.B]): (r[S.FREQ], r[S.SUPPORT])
               for r in tables.read_table(db_url, "relational_dependency")}
        assert got == relation_counts([s for ss in sessions.values() for s in ss])
        assert len({oid for oid in sessions if oid.startswith("urn:epc:id:sgtin")}) >= N_OBJECTS

        # object scores == batch scoring of the same sequences
        scores = {r[S.OID]: r for r in tables.read_table(db_url, "object_score")}
        assert set(scores) == set(sessions)
        oids = sorted(scores)
        s, raw, best = score_batch([sessions[o][-1] for o in oids], patterns, ScoringConf())
        for o, si, ri, bi in zip(oids, s, raw, best):
            assert (scores[o][S.SCORE], scores[o][S.RAW]) == (si, ri), o
            assert scores[o][S.PATTERN] == (patterns[bi] if bi >= 0 else None), o
        windows = tables.read_table(db_url, "alignment_score")
        assert sum(w[S.N_OBJECTS] for w in windows) == len(scores)
        # the windows, maintained incrementally across the kills, equal a recomputation
        assert_windows_recompute(windows, scores, rel=1e-9)
    finally:
        admin.delete_topics([topic, qtopic])
        admin.close()
        with root.cursor() as cur:
            cur.execute(f"DROP DATABASE `{database}`")
        root.close()
        try:
            host, port, prefix = hbase.parse_location(location)
            conn = happybase.Connection(host, port, table_prefix=prefix,
                                        table_prefix_separator=b"_")
            for name in ("event_log", "quarantine"):
                if name.encode() in conn.tables():
                    conn.delete_table(name, disable=True)
            conn.close()
        except Exception:  # noqa: BLE001 - cleanup only; the assertions above decide the test
            pass
