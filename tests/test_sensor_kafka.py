"""Sensor job against the real parts: Kafka -> jobs/stream_sensors.py -> MariaDB, with v2
promoted mid-stream (no restart): every window scored exactly once, v1 before the switch batch
and v2 after it. Also measures reading-to-score latency (printed; ``soads bench sensor`` figure).

Start the services first: ``python -m soads.services up``. Under ``CI=true`` a missing service
fails the test; elsewhere it skips with the reason. Producer sends are retried, so a short
broker restart (another test may do one) does not fail it.
"""
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from soads import config, schema as S, services
from soads.sensor import registry
from streamtools import require  # fail under CI=true, skip elsewhere

REPO = os.path.join(os.path.dirname(__file__), "..")
T0 = dt.datetime(2024, 3, 4, 8, 0, 0)
MACHINES = ("m1", "m2", "m3")
N_SECONDS = 120
WINDOW = 3
PARAMS = dict(window=WINDOW, hidden_size=4, latent_size=2, epochs=1, seed=0)
DONE_TIMEOUT = 400


@pytest.fixture(scope="module")
def conf():
    c = config.load([services.DEFAULT_CONF])
    require("kafka", lambda: services.check("kafka", c))
    require("mariadb", lambda: services.check("mariadb", c))
    return c


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


def _start(cmd, env, log):
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.mark.integration
def test_promote_mid_stream_scores_every_window_once(conf, tmp_path):
    import pandas as pd
    import pymysql
    from kafka.admin import KafkaAdminClient, NewTopic

    from soads.sensor.train import train_version
    from soads.storage import sensor_sink, tables

    # two model versions; v1 serves
    root = str(tmp_path / "reg")
    t = np.arange(300)
    hist = pd.DataFrame({S.MACHINE_ID: "m1", S.TS: [T0 + dt.timedelta(seconds=int(i)) for i in t],
                         "a": np.sin(t / 5), "b": np.cos(t / 5)})
    train_version(hist, PARAMS, root, sensors=["a", "b"], promote=True)
    train_version(hist.assign(a=hist["a"] * 1.1), PARAMS, root, sensors=["a", "b"])

    hexid = uuid.uuid4().hex[:10]
    topic = f"soads-sensor-{hexid}"
    bootstrap = services.kafka_bootstrap(conf)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    m = conf.mariadb
    database = f"{m.database}_s{hexid}"
    rootdb = pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password)
    with rootdb.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}`")
    db_url = services.mysql_url(conf, database)
    sensor_sink.prepare(db_url)
    spark_toml = tmp_path / "spark.toml"
    spark_toml.write_text('[spark]\nmaster = "local[2]"\nshuffle_partitions = 2\n'
                          'driver_memory = "1g"\n')
    cmd = [sys.executable, "jobs/stream_sensors.py", "--conf", str(spark_toml),
           "--sensor-conf", "conf/sensor.toml"] + [a for kv in {
               "sensor.stream.source": "kafka", "sensor.stream.kafka_bootstrap": bootstrap,
               "sensor.stream.topic": topic, "sensor.stream.max_offsets_per_trigger": 30,
               "sensor.stream.registry": root, "sensor.stream.db_url": db_url,
               "sensor.stream.checkpoint_root": str(tmp_path / "ck"),
               "sensor.stream.trigger_seconds": 1.0,
               "sensor.stream.window": WINDOW, "sensor.stream.sensors": "a,b"}.items()
               for a in ("--set", f"{kv[0]}={kv[1]}")]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
           # this checkout's soads, not an installed one (the job runs from jobs/)
           "PYTHONPATH": os.pathsep.join([os.path.abspath(REPO)]
                                         + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    # offset 0: not JSON; the last offset: m1's first reading again (out of order by then)
    records = [(("bad", 0), b"{not json")] + \
        [((mm, s), _reading(mm, s)) for s in range(N_SECONDS) for mm in MACHINES] + \
        [(("again", 0), _reading("m1", 0))]
    expected = {(mm, T0 + dt.timedelta(seconds=s)) for mm in MACHINES
                for s in range(WINDOW - 1, N_SECONDS)}
    sent_at, seen_at = {}, {}
    log = open(tmp_path / "job.log", "ab")
    proc = _start(cmd, env, log)
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
        time.sleep(3)  # a double-scored window would show up as an extra ledger batch / change
        rows2 = tables.read_table(db_url, "sensor_anomaly")
        quarantine = tables.read_table(db_url, "sensor_quarantine", order_by=[S.REASON])
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
        log.close()
        with rootdb.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
        rootdb.close()
        admin.delete_topics([topic])
        admin.close()

    assert rows2 == rows
    # nothing dropped silently: both bad records quarantined with their Kafka identity
    assert [(r[S.SOURCE], r[S.MACHINE_ID], r[S.REASON]) for r in quarantine] == [
        (f"{topic}/0/0", None, "malformed_json"),
        (f"{topic}/0/{len(records) - 1}", "m1", "out_of_order")]
    assert {(r[S.MACHINE_ID], r[S.WINDOW_END]) for r in rows} == expected
    assert len(rows) == len(expected)  # every window exactly once
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
