"""Sensor job against the real parts: Kafka -> jobs/stream_sensors.py -> MariaDB, with v2
promoted mid-stream (no restart): every window scored exactly once (counted in the writes the
database received, not in the table whose primary key would hide a second write), v1 before the
switch batch and v2 after it. Also measures reading-to-score latency (printed; the
``soads bench sensor`` figure).

Start the services first: ``python -m soads.services up``. Under ``CI=true`` a missing service
fails the test; elsewhere it skips with the reason. Producer sends are retried, so a short
broker restart (another test may do one) does not fail it.
"""
import datetime as dt
import json
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest

import streamtools as st
from soads import schema as S
from soads.sensor import registry

T0 = dt.datetime(2024, 3, 4, 8, 0, 0)
MACHINES = ("m1", "m2", "m3")
N_SECONDS = 120
WINDOW = 3
PARAMS = dict(window=WINDOW, hidden_size=4, latent_size=2, epochs=1, seed=0)
DONE_TIMEOUT = 400


@pytest.fixture(scope="module")
def conf():
    return st.services_conf("kafka", "mariadb")


def _reading(m, s):
    return json.dumps({"machine_id": m, "ts": (T0 + dt.timedelta(seconds=s)).isoformat() + "Z",
                       "values": {"a": float(np.sin(s / 5)), "b": float(np.cos(s / 5))}}).encode()


def _send_all(bootstrap, topic, records, sent_at, pause=0.0):
    """Send ``[(key, value)]`` in order, each acknowledged; a failed send (broker restarting)
    is retried with a new producer for up to two minutes."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    deadline = time.monotonic() + 120
    producer = None
    i = 0
    while i < len(records):
        try:
            if producer is None:
                producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=5)
            key, value = records[i]
            producer.send(topic, value=value, partition=0).get(timeout=30)
            sent_at[key] = time.time()
            i += 1
            if pause:
                time.sleep(pause)
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            if producer is not None:
                producer.close(timeout=1)
            producer = None
            time.sleep(2)
    if producer is not None:
        producer.close()


def _count_writes(db_url):
    """Triggers that record every insert and every update of a sensor_anomaly row in
    ``sensor_write`` (the table's primary key makes a second write of a window invisible in
    the table itself)."""
    import sqlalchemy as sa

    from soads.storage import tables

    eng = tables.engine(db_url)
    try:
        with eng.begin() as conn:
            conn.execute(sa.text(
                "CREATE TABLE sensor_write (machine_id VARCHAR(255), window_end DATETIME(6), "
                "model_version VARCHAR(255), op CHAR(1))"))
            for op, when in (("i", "INSERT"), ("u", "UPDATE")):
                conn.execute(sa.text(
                    f"CREATE TRIGGER sensor_write_{op} AFTER {when} ON sensor_anomaly "
                    f"FOR EACH ROW INSERT INTO sensor_write VALUES "
                    f"(NEW.machine_id, NEW.window_end, NEW.model_version, '{op}')"))
    finally:
        eng.dispose()


def _writes(db_url):
    import sqlalchemy as sa

    from soads.storage import tables

    eng = tables.engine(db_url)
    try:
        with eng.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT machine_id, window_end, model_version, op FROM sensor_write"))]
    finally:
        eng.dispose()


@pytest.mark.integration
def test_promote_mid_stream_scores_every_window_once(conf, tmp_path):
    import pandas as pd

    from soads.sensor.train import train_version
    from soads.storage import sensor_sink, tables

    # two model versions; v1 serves
    root = str(tmp_path / "reg")
    t = np.arange(300)
    hist = pd.DataFrame({S.MACHINE_ID: "m1", S.TS: [T0 + dt.timedelta(seconds=int(i)) for i in t],
                         "a": np.sin(t / 5), "b": np.cos(t / 5)})
    train_version(hist, PARAMS, root, sensors=["a", "b"], promote=True)
    train_version(hist.assign(a=hist["a"] * 1.1), PARAMS, root, sensors=["a", "b"])

    place = st.create_place(conf, "sensor", quarantine_topic=False)
    topic, bootstrap, db_url = place.topic, place.bootstrap, place.db_url
    sensor_sink.prepare(db_url)
    _count_writes(db_url)
    spark_toml = tmp_path / "spark.toml"
    spark_toml.write_text('[spark]\nmaster = "local[2]"\nshuffle_partitions = 2\n'
                          'driver_memory = "1g"\n')
    cmd = [sys.executable, "jobs/stream_sensors.py", "--conf", str(spark_toml),
           "--sensor-conf", "conf/sensor.toml"] + [a for kv in {
               "sensor.stream.source": "kafka", "sensor.stream.kafka_bootstrap": bootstrap,
               "sensor.stream.topic": topic, "sensor.stream.max_offsets_per_trigger": 30,
               "sensor.stream.registry": root, "storage.db_url": db_url,
               "sensor.stream.checkpoint_root": str(tmp_path / "ck"),
               "sensor.stream.trigger_seconds": 1.0,
               "sensor.stream.window": WINDOW, "sensor.stream.sensors": "a,b"}.items()
               for a in ("--set", f"{kv[0]}={kv[1]}")]
    # offset 0: not JSON; the last offset: m1's first reading again (out of order by then)
    records = [(("bad", 0), b"{not json")] + \
        [((mm, s), _reading(mm, s)) for s in range(N_SECONDS) for mm in MACHINES] + \
        [(("again", 0), _reading("m1", 0))]
    expected = {(mm, T0 + dt.timedelta(seconds=s)) for mm in MACHINES
                for s in range(WINDOW - 1, N_SECONDS)}
    sent_at, seen_at = {}, {}
    log = open(tmp_path / "job.log", "ab")
    proc = st.start(cmd, log)
    try:
        half = len(records) // 2
        _send_all(bootstrap, topic, records[:half], sent_at)
        # the rest trickles in while the job runs; v2 is promoted once v1 scores appear
        sender = threading.Thread(target=_send_all, args=(bootstrap, topic, records[half:],
                                                          sent_at, 0.02))
        promoted = False
        deadline = time.monotonic() + DONE_TIMEOUT
        while True:
            assert proc.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"{len(seen_at)} of {len(expected)} windows"
            rows = tables.read_table(db_url, "sensor_anomaly")
            now = time.time()
            for r in rows:
                seen_at.setdefault((r[S.MACHINE_ID], r[S.WINDOW_END]), now)
            if rows and not promoted:
                registry.promote(root, "v0002")  # mid-stream: no restart
                promoted = True
                sender.start()
            if len(rows) >= len(expected) and len(
                    tables.read_table(db_url, "sensor_quarantine")) >= 2:
                break
            time.sleep(0.25)
        sender.join(timeout=180)
        # every record read and its batch committed: a window scored twice would be written by now
        while st.committed(str(tmp_path / "ck"), "sensor_anomaly") < len(records):
            assert proc.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the job did not commit the last record"
            time.sleep(0.25)
        rows2 = tables.read_table(db_url, "sensor_anomaly")
        quarantine = tables.read_table(db_url, "sensor_quarantine", order_by=[S.REASON])
        writes = _writes(db_url)
    finally:
        st.kill(proc)
        log.close()
        st.drop_place(conf, place)

    assert rows2 == rows
    # nothing dropped silently: both bad records quarantined with their Kafka identity
    assert [(r[S.SOURCE], r[S.MACHINE_ID], r[S.REASON]) for r in quarantine] == [
        (f"{topic}/0/0", None, "malformed_json"),
        (f"{topic}/0/{len(records) - 1}", "m1", "out_of_order")]
    assert {(r[S.MACHINE_ID], r[S.WINDOW_END]) for r in rows} == expected
    # every window written exactly once: one insert each, no second write (an update)
    assert Counter(op for *_, op in writes) == {"i": len(expected)}
    assert Counter((m, w) for m, w, _, _ in writes) == Counter(expected)
    assert {(m, w, v) for m, w, v, _ in writes} == {
        (r[S.MACHINE_ID], r[S.WINDOW_END], r[S.MODEL_VERSION]) for r in rows}
    # arrival order = (ts, machine): the version switches exactly once, v1 -> v2
    versions = [r[S.MODEL_VERSION] for r in sorted(rows, key=lambda r: (r[S.WINDOW_END],
                                                                        MACHINES.index(r[S.MACHINE_ID])))]
    switch = versions.index("v0002")
    assert switch > 0 and set(versions[:switch]) == {"v0001"} and set(versions[switch:]) == {"v0002"}
    # latency of the trickled half: window seen in MySQL - its last reading acknowledged by Kafka
    lat = [seen_at[(mm, T0 + dt.timedelta(seconds=s))] - sent_at[(mm, s)]
           for s in range(N_SECONDS // 2 + 1, N_SECONDS) for mm in MACHINES]
    print(f"\nsensor reading-to-score latency (Kafka -> MySQL, trigger 1 s, poll 0.25 s): "
          f"p50 {np.percentile(lat, 50):.2f} s, p95 {np.percentile(lat, 95):.2f} s, "
          f"max {max(lat):.2f} s over {len(lat)} windows; switch after {switch} windows")
