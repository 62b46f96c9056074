"""Exactly-once against the real parts: Kafka -> jobs/stream_events.py -> HBase + MariaDB, with the
job killed (SIGKILL) three times in the middle of a micro-batch and restarted on the same
checkpoint. Each kill waits for the run to commit a micro-batch of its own (progress between
kills) and then for the next one to be in flight (its offsets written, its commit not), so the
restart must replay a batch whose writes may have partly landed. The tables must then equal a
batch recomputation of the event log: relation counts, alignment scores and windows, and the
context detector's verdicts (the core on the same sequences, per-visit attributes and closed
flags, against the model run stored before the job started) and the anomaly_rate counts of the
finished objects (the batch rule over the closed objects: nothing counted twice).

Start the services first: ``make up`` (or ``python -m soads.services up``). Under ``CI=true`` a
missing service fails the test; elsewhere it skips with the reason.
"""
import datetime as dt
import json
import random
import signal
import sys
import time
from collections import Counter

import pytest

from soads import epcis, schema as S
from soads.config import ScoringConf
from soads.dependencies import relation_counts
from soads.scoring import score_batch
from soads.detect.context import ContextModel
from soads.simulator.generate import iter_documents, iter_sequences
from soads.stream.parse_stage import read_attributes
from soads.stream.state import recompute_sequences, recompute_sessions
import streamtools as st
from streamtools import (MAX_BYTES, add_model_run, assert_rates_recompute,
                         assert_verdicts_recompute, assert_windows_recompute, committed,
                         ledger_watermark_us)

N_OBJECTS, SEED = 300, 11
KILLS = 3  # kills that must land mid-micro-batch
MAX_RUNS = 6  # a kill that raced a commit and landed between batches does not count
STEP_TIMEOUT = 240  # start-up to a committed batch of the run's own, on a loaded machine
DONE_TIMEOUT = 300


@pytest.fixture(scope="module")
def conf():
    return st.services_conf()


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
        # cut inside its first event: no complete event of this older document reaches the
        # log, which stays in event-time order (late_event must stay empty)
        "malformed_xml": good[:good.index(b"</epcList>")],
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


def _kill_mid_batch(proc, ck, log_path):
    """Wait until this run of the job committed a micro-batch of its own, then until the next
    one is in flight, and SIGKILL the job there.

    Returns ``(committed end offset, in-flight batch id or None)`` read after the kill: None when
    the batch committed between the check and the kill (the kill landed between batches)."""
    def alive():
        assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]

    deadline = time.monotonic() + STEP_TIMEOUT
    before = max(st.batch_ids(ck, "events", "commits"), default=-1)
    while max(st.batch_ids(ck, "events", "commits"), default=-1) <= before:
        alive()
        time.sleep(0.1)
    while (batch := st.in_flight(ck, "events")) is None:
        alive()
        time.sleep(0.01)
    st.kill(proc, signal.SIGKILL)
    landed = batch if batch not in st.batch_ids(ck, "events", "commits") else None
    return committed(ck, "events"), landed


def _model():
    """The context detector fitted on the simulated log's objects (their sessions, with the
    attributes of each visit's first read), all finished."""
    from soads.storage import hbase

    events = []
    for i, (_, data) in enumerate(iter_documents(N_OBJECTS, seed=SEED, events_per_file=25)):
        events += epcis.parse_document(data, f"fit/0/{i}", MAX_BYTES)[0]
    sessions = recompute_sessions(
        [(e[S.OID], e[S.READ_POINT], hbase.to_micros(e[S.EVENT_TIME]), e[S.SOURCE],
          read_attributes(e)) for e in events], 60.0, 3600.0)
    return ContextModel.fit((s.sequence, s.attributes) for ss in sessions.values() for s in ss)


def test_offsets_match_with_a_delimiter():
    assert st.from_offset("t/0/1", "t", 1) and st.from_offset("t/0/1:5", "t", 1)
    assert st.from_offset("t/0/1#0", "t", 1)
    assert not st.from_offset("t/0/10", "t", 1) and not st.from_offset("t/0/12:5", "t", 1)
    assert not st.from_offset("t/0/1:5", "t2", 1) and not st.from_offset("tt/0/1", "t", 1)


@pytest.mark.integration
def test_killed_and_restarted_job_ends_exactly_as_the_batch_recomputation(conf, tmp_path):
    import happybase
    from kafka import KafkaConsumer

    from soads.storage import hbase, tables

    place = st.create_place(conf, "eo")
    topic, qtopic, db_url, location = place.topic, place.qtopic, place.db_url, place.location
    bootstrap = place.bootstrap
    ck = str(tmp_path / "ck")
    log_path = tmp_path / "job.log"
    proc = None
    try:
        # the PATTERN TABLE: the five most common simulated paths
        from soads.storage import sinks

        sinks.prepare(db_url, location)
        common = Counter(tuple(s) for _, s in iter_sequences(N_OBJECTS, seed=SEED))
        patterns = [list(p) for p, _ in common.most_common(5)]
        tables.write_rows(db_url, "pattern", [
            {S.RUN_ID: "run-1", S.PATTERN_ID: k, S.PATTERN: p, S.SUPPORT: n, S.LENGTH: len(p),
             S.MAXIMAL: True} for k, (p, n) in enumerate(zip(patterns, common.values()))])
        tables.write_rows(db_url, "mining_run", [{S.RUN_ID: "run-1", S.ALGORITHM: "test",
                                                  S.CREATED_AT: dt.datetime(2024, 1, 1)}])
        # a context detector model run, fitted on the same simulated log (finished objects)
        model = _model()
        add_model_run(db_url, "ctx-1", model, dt.datetime(2024, 1, 1))
        published, bad_offsets = _publish(bootstrap, topic)
        end = published[-1][0] + 1

        # 8 records per micro-batch in tasks of at most 3: Kafka ranges split and replayed
        # across the kills
        cmd = st.job_cmd(st.write_stream_toml(tmp_path / "stream.toml", place, ck,
                                              min_partitions=2, max_records_per_partition=3))
        kills = []  # (committed end offset, in-flight batch id | None) at each kill
        with open(log_path, "ab") as log:
            while sum(b is not None for _, b in kills) < KILLS:
                assert len(kills) < MAX_RUNS, f"kills did not land mid-batch: {kills}"
                proc = st.start(cmd, log)
                kills.append(_kill_mid_batch(proc, ck, log_path))
            proc = st.start(cmd, log)
            deadline = time.monotonic() + DONE_TIMEOUT
            while committed(ck, "events") < end:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, f"not done: {kills}"
                time.sleep(1)
            # then the micro-batch Spark runs without new data once the watermark moved (it may
            # have committed already): at the log's final watermark it evicts the objects idle
            # since (their final rows, closed)
            final_ms = max(hbase.to_micros(e[S.EVENT_TIME]) for _, data in published
                           for e in epcis.parse_document(data, "", MAX_BYTES)[0]) // 1000 \
                - 600_000
            while st.committed_watermark_ms(ck, "events") < final_ms:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, f"watermark not final: {kills}"
                time.sleep(0.5)
            st.kill(proc, signal.SIGTERM)
        # every run committed progress of its own before its kill, and every kill hit a job
        # that had not yet finished the topic
        offsets = [o for o, _ in kills]
        assert offsets == sorted(set(offsets)) and offsets[-1] < end, (kills, end)
        print(f"\nkills (committed end offset, batch in flight): {kills}; topic end {end}",
              file=sys.stderr)

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
            assert any(st.from_offset(s, topic, offset) and r == reason
                       for s, r in quarantined), (offset, reason)

        # quarantine topic: the same records (at-least-once: compared as a set)
        consumer = KafkaConsumer(qtopic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=10_000)
        on_topic = {(json.loads(msg.value)[S.SOURCE], json.loads(msg.value)[S.REASON])
                    for msg in consumer}
        consumer.close()
        assert on_topic == quarantined

        # an in-order log: the replays after the kills must not make any event late
        assert tables.read_table(db_url, "late_event") == []
        # RELATIONAL DEPENDENCY TABLE == batch recomputation of the event log
        kept = [(e[S.OID], e[S.READ_POINT], hbase.to_micros(e[S.EVENT_TIME]), e[S.SOURCE])
                for e in stored.values()]
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

        # verdicts == the core on the same sessions and attributes, closed by the closed rule
        # at the stream's last watermark (the log spans hours: by the batch after the end most
        # objects were evicted and their final rows written closed; the rest are live)
        with_attributes = recompute_sessions(
            [k + (read_attributes(e),) for k, e in zip(kept, stored.values())], 60.0, 3600.0)
        closed = assert_verdicts_recompute(scores, with_attributes, {"ctx-1": model},
                                           ledger_watermark_us(ck, "events", db_url))
        n_closed = sum(closed.values())
        assert 0 < n_closed < len(closed), n_closed
        assert {r[S.MODEL_RUN_ID] for r in scores.values()} == {"ctx-1"}
        # anomaly_rate, incremented as objects finished across the kills and replays, equals
        # the batch rule over the closed objects: none counted twice, none lost
        assert assert_rates_recompute(db_url, scores, with_attributes, {"ctx-1": model},
                                      closed) > 0
    finally:
        if proc is not None and proc.poll() is None:
            st.kill(proc, signal.SIGKILL)
        st.drop_place(conf, place)
