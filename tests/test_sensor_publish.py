"""``soads sensor publish`` (soads.sensor.publish): readings in the sensor job's own format, and
the sensor job started before its topic exists (it creates it), seen by ``soads jobs``.

The integration tests need the real Kafka broker (python -m soads.services up); under CI=true a
missing broker fails them, elsewhere they skip with the reason.
"""
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from soads import config, schema as S, services
from soads.cli import main
from soads.sensor.publish import csv_readings, synthetic_readings
from soads.sensor.streaming import parse_reading
from streamtools import require  # fail under CI=true, skip elsewhere

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
T0 = dt.datetime(2024, 3, 4, 8, 0, 0, tzinfo=dt.timezone.utc)


def test_synthetic_readings_are_the_same_for_a_seed_and_step_in_event_time():
    def take(seed, n=12):
        it = synthetic_readings(3, ["a", "b"], seed, T0)
        return [next(it) for _ in range(n)]

    first = take(5)
    assert first == take(5)
    assert [v for *_, v in first] != [v for *_, v in take(6)]
    assert [m for m, _, _ in first[:4]] == ["m1", "m2", "m3", "m1"]
    assert [(ts - T0).total_seconds() for _, ts, _ in first[::3]] == [0, 1, 2, 3]
    # a sine plus a little noise: every value finite, machines and sensors differ
    values = np.array([[v["a"], v["b"]] for *_, v in take(5, 300)])
    assert np.isfinite(values).all() and values.std(axis=0).min() > 0.05


def test_csv_readings_take_iso_or_skab_rows_and_name_a_bad_line(tmp_path):
    plain = tmp_path / "plant.csv"
    plain.write_text("ts,machine_id,a,b\n2024-03-04T08:00:00Z,m7,1.5,\n"
                     "2024-03-04T08:00:01,m7,2,3\n")
    assert list(csv_readings(str(plain))) == [
        ("m7", T0, {"a": 1.5, "b": None}),
        ("m7", T0 + dt.timedelta(seconds=1), {"a": 2.0, "b": 3.0})]
    skab = tmp_path / "valve1.csv"
    skab.write_text("datetime;Current;Voltage;anomaly;changepoint\n"
                    "2024-03-04 08:00:00;0.5;230.1;0.0;0.0\n")
    assert list(csv_readings(str(skab))) == [("valve1", T0, {"Current": 0.5, "Voltage": 230.1})]
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,a\n2024-03-04T08:00:00Z,1\n2024-03-04T08:00:01Z,high\n")
    with pytest.raises(ValueError, match=r"bad.csv:3"):
        list(csv_readings(str(bad)))


@pytest.fixture(scope="module")
def bootstrap():
    conf = config.load([services.DEFAULT_CONF])
    require("kafka", lambda: services.check("kafka", conf))
    return services.kafka_bootstrap(conf)


def _sensor_toml(path, topic, bootstrap, **stream):
    lines = ["[sensor]", 'preset = "skab"', "[sensor.stream]", 'source = "kafka"',
             f'kafka_bootstrap = "{bootstrap}"', f'topic = "{topic}"', 'sensors = ["a", "b"]']
    lines += [f"{k} = {json.dumps(v)}" for k, v in stream.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _consume(bootstrap, topic, n, timeout=30.0):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5_000)
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += [(m.key, m.value) for m in consumer]
    consumer.close()
    return got


def _delete(bootstrap, topics):
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([t for t in topics if t in set(admin.list_topics())])
    finally:
        admin.close()


@pytest.mark.integration
def test_publish_sends_what_the_sensor_job_parses(bootstrap, tmp_path, capsys):
    topic = f"soads-readings-{uuid.uuid4().hex[:10]}"
    conf = _sensor_toml(tmp_path / "sensor.toml", topic, bootstrap)
    try:
        assert main(["sensor", "publish", "--sensor-conf", conf, "--machines", "2", "--count",
                     "8", "--seed", "3", "--rate", "0", "--start", "2024-03-04T08:00:00Z"]) == 0
        out, err = capsys.readouterr()
        stats = json.loads(out.splitlines()[-1])
        assert (stats["topic"], stats["readings"], stats["machines"]) == (topic, 8, 2)
        assert (stats["first_ts"], stats["last_ts"]) == ("2024-03-04T08:00:00.000Z",
                                                         "2024-03-04T08:00:03.000Z")
        got = _consume(bootstrap, topic, 8)
        want = [next(it) for it in [synthetic_readings(2, ["a", "b"], 3, T0)] for _ in range(8)]
        assert len(got) == 8
        for (key, value), (m, ts, values) in zip(got, want):
            machine, ts_us, parsed = parse_reading(value.decode(), ["a", "b"])
            assert key.decode() == machine == m
            assert ts_us == int(ts.timestamp() * 1_000_000)
            assert parsed == [values["a"], values["b"]]
        # the rows of a CSV file, in file order; a missing value is null, read as NaN
        data = tmp_path / "m9.csv"
        data.write_text("ts,a,b\n2024-03-04T09:00:00Z,1.0,2.0\n2024-03-04T09:00:01Z,,4.0\n")
        assert main(["sensor", "publish", "--sensor-conf", conf, "--csv", str(data)]) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[-1])["readings"] == 2
        tail = [parse_reading(v.decode(), ["a", "b"]) for _, v in _consume(bootstrap, topic, 10)]
        assert tail[8][:2] == ("m9", int(T0.timestamp() * 1e6) + 3600 * 1_000_000)
        assert tail[8][2] == [1.0, 2.0] and np.isnan(tail[9][2][0]) and tail[9][2][1] == 4.0
    finally:
        _delete(bootstrap, [topic])


@pytest.mark.integration
def test_sensor_job_started_first_creates_its_topic_and_shows_in_soads_jobs(bootstrap, tmp_path,
                                                                            capsys):
    import pandas as pd
    from kafka.admin import KafkaAdminClient

    from soads import query
    from soads.sensor.train import train_version

    root = str(tmp_path / "registry")
    t = np.arange(300)
    history = pd.DataFrame({S.MACHINE_ID: "m1",
                            S.TS: [T0.replace(tzinfo=None) + dt.timedelta(seconds=int(i))
                                   for i in t],
                            "a": np.sin(t / 5), "b": np.cos(t / 5)})
    train_version(history, dict(window=3, hidden_size=4, latent_size=2, epochs=1, seed=0), root,
                  sensors=["a", "b"], promote=True)
    topic = f"soads-readings-{uuid.uuid4().hex[:10]}"
    db = f"sqlite:///{tmp_path}/sensor.db"
    conf = _sensor_toml(tmp_path / "sensor.toml", topic, bootstrap, registry=root,
                        checkpoint_root=str(tmp_path / "ck"), trigger_seconds=1.0, window=3,
                        max_offsets_per_trigger=20)
    spark_toml = tmp_path / "spark.toml"  # and the job's tables: [storage] db_url
    spark_toml.write_text('[spark]\nmaster = "local[2]"\nshuffle_partitions = 2\n'
                          f'driver_memory = "1g"\n[storage]\ndb_url = "{db}"\n')
    cache = tmp_path / "cache"
    env = {**os.environ, "SOADS_CACHE": str(cache), "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join([REPO] + [p for p in [os.environ.get("PYTHONPATH")]
                                                   if p])}
    log_path = tmp_path / "job.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "jobs/stream_sensors.py", "--conf", str(spark_toml),
                             "--sensor-conf", conf], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        # nothing is published yet: the job must create its topic, not die on it
        deadline = time.monotonic() + 180
        while topic not in set(admin.list_topics()):
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the job did not create its topic"
            time.sleep(1)
        code = main(["jobs", "--dir", str(cache / "jobs")])
        out = capsys.readouterr().out
        assert code == 0 and "stream_sensors" in out and f"pid {proc.pid}" in out
        assert "running" in out and "sensor.toml" in out
        assert main(["sensor", "publish", "--sensor-conf", conf, "--machines", "2", "--count",
                     "30", "--rate", "0", "--start", "2024-03-04T08:00:00Z"]) == 0
        capsys.readouterr()
        expected = 2 * (15 - 2)  # 15 readings a machine, windows of 3
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                rows = query.sensor_anomalies(db)
            except Exception:  # noqa: BLE001 - the job has not created its tables yet
                rows = []
            if len(rows) >= expected:
                break
            assert time.monotonic() < deadline, (len(rows), log_path.read_text()[-3000:])
            time.sleep(2)
        assert len(rows) == expected
        assert {r[S.MACHINE_ID] for r in rows} == {"m1", "m2"}
        text = log_path.read_text()
        # the job's own line per micro-batch, no Spark INFO start-up lines
        assert re.search(r"batch 0: \d+ windows scored with model v0001, 0 readings "
                         r"quarantined", text), text[-3000:]
        assert " INFO SparkContext" not in text and "[Stage " not in text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
        admin.close()
        _delete(bootstrap, [topic])
    # killed: its pid file is stale, shown as dead once and removed
    assert main(["jobs", "--dir", str(cache / "jobs")]) == 0
    out = capsys.readouterr().out
    assert "stream_sensors" in out and "dead" in out
    assert os.listdir(cache / "jobs") == []
