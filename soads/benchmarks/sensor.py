"""``soads bench sensor``: LSTM-AE training seconds per epoch, SKAB evaluation end to end, batch
inference windows/s for 8 sensors x 10 steps (target >= 100,000/s), and the sensor job's
steady-state reading-to-score latency through the real parts.

Latency (:func:`latency`): a fresh Kafka topic and a throwaway MySQL database (both dropped
afterwards); a model of the ``skab`` preset's architecture (8 sensors, window 10; one epoch on
synthetic history: its speed, not its quality, matters here) promoted in a temporary registry;
the sensor query (:func:`soads.sensor.streaming.start_sensor_query`, what
``jobs/stream_sensors.py`` runs) with a short trigger, warmed up until every machine has a full
window and the first batches are committed. Then readings are published with kafka-python at a
fixed ``rate`` for ``seconds`` (machines in turn; every reading completes a window). Latency of
a reading = the wall time at which the micro-batch holding its Kafka record was committed
(its sensor_anomaly rows are committed in MySQL before Spark writes the batch's commit file:
the file's mtime) minus the wall time the producer was handed the record. p50/p95/max.

Usage::

    soads bench sensor [--readings-per-s 100] [--sensor-seconds 60] [--trigger 0.5] [--latency-only]
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
import uuid

import numpy as np

logger = logging.getLogger(__name__)

QUERY = "sensor_anomaly"  # the sensor query's name = its checkpoint directory


def _commits(ck: str) -> list[tuple[float, int]]:
    """``[(commit wall time, end offset)]`` of the sensor query's committed micro-batches."""
    from soads.stream.checkpoint import committed_batches

    return committed_batches(ck, QUERY)


def _wait_committed(ck: str, end: int, query, timeout: float) -> None:
    """Until the committed batches cover every offset below ``end``."""
    deadline = time.monotonic() + timeout
    while (_commits(ck) or [(0.0, -1)])[-1][1] < end:
        if query.exception() is not None:
            raise RuntimeError(f"sensor query failed: {query.exception()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"offsets below {end} not committed in {timeout:.0f} s")
        time.sleep(0.2)


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))]


def latency(rate: float = 100.0, seconds: float = 60.0, trigger_seconds: float = 0.5,
            machines: int = 20, sensor_conf: str = "conf/sensor.toml", services_conf=None,
            max_offsets_per_trigger: int = 5000) -> dict:
    """Steady-state reading-to-score latency of the sensor job (module docstring).

    Returns
    -------
    dict: rate, seconds, trigger_seconds, machines, readings, publish_seconds, p50, p95, max
    (seconds), batches (measured micro-batches), median_batch_ms (addBatch, triggerExecution),
    readings_per_batch (median)
    """
    import pandas as pd
    import pymysql
    import torch
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from soads import config, jars, schema as S, services, session
    from soads.config import SparkConf
    from soads.sensor.streaming import start_sensor_query
    from soads.sensor.train import train_version
    from soads.storage import sensor_sink

    torch.set_num_threads(1)
    conf = services_conf or config.load([services.DEFAULT_CONF])
    sconf = config.load([sensor_conf]).sensor
    sensors = list(sconf.stream.sensors)
    params = {**sconf.params("skab"), "epochs": 1}
    window = params["window"]
    hexid = uuid.uuid4().hex[:8]
    bootstrap = services.kafka_bootstrap(conf)
    topic = f"soads-bench-sensor-{hexid}"
    m = conf.mariadb
    database = f"{m.database}_bench_sensor_{hexid}"
    workdir = tempfile.mkdtemp(prefix="soads-bench-sensor-")
    ck = os.path.join(workdir, "ck")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    rootdb = pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password)
    with rootdb.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}`")
    producer = query = None
    try:
        db_url = services.mysql_url(conf, database)
        sensor_sink.prepare(db_url)
        # a promoted model of the preset's architecture (synthetic history)
        t0 = dt.datetime(2024, 1, 1)
        rng = np.random.default_rng(0)
        n = 1000
        phase = np.arange(n)[:, None] / 10 + np.arange(len(sensors))[None, :]
        hist = pd.DataFrame(np.sin(phase) + 0.05 * rng.normal(size=phase.shape), columns=sensors)
        hist.insert(0, S.TS, [t0 + dt.timedelta(seconds=i) for i in range(n)])
        hist.insert(0, S.MACHINE_ID, "m0")
        registry_root = os.path.join(workdir, "registry")
        train_version(hist, params, registry_root, sensors=sensors, promote=True)
        stream = dataclasses.replace(
            sconf.stream, source="kafka", kafka_bootstrap=bootstrap, topic=topic,
            starting_offsets="earliest", max_offsets_per_trigger=max_offsets_per_trigger,
            registry=registry_root, checkpoint_root=ck, trigger_seconds=trigger_seconds,
            window=window)
        spark = session.build(
            SparkConf(master="local[2]", shuffle_partitions=2, driver_memory="2g",
                      app_name="soads-bench-sensor"),
            extra={"spark.jars": ",".join(jars.spark_kafka_jars(
                conf.kafka.spark_connector_version, conf.services.jars))})
        query = start_sensor_query(spark, stream, db_url)

        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        counter = [0] * machines  # readings per machine so far: its next ts (1 s apart)

        def reading(i: int) -> bytes:
            k = counter[i]
            counter[i] += 1
            values = {s: float(np.sin(k / 10 + j)) for j, s in enumerate(sensors)}
            return json.dumps({S.MACHINE_ID: f"m{i}", S.TS: (t0 + dt.timedelta(seconds=k))
                               .isoformat() + "Z", S.VALUES: values}).encode()

        # warm-up: every machine gets a full window, then two more rounds; not measured
        for _ in range(window + 2):
            for i in range(machines):
                producer.send(topic, reading(i), partition=0)
        producer.flush()
        warm = (window + 2) * machines
        _wait_committed(ck, warm, query, timeout=600)
        first_measured_batch = len(_commits(ck))

        # steady state: a fixed rate, machines in turn
        total = int(rate * seconds)
        handed, futures = [], []
        start = time.monotonic()
        for j in range(total):
            pause = start + j / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            value = reading(j % machines)
            handed.append(time.time())
            futures.append(producer.send(topic, value, partition=0))
        producer.flush()
        publish_seconds = time.monotonic() - start
        offsets = [f.get(timeout=60).offset for f in futures]
        _wait_committed(ck, max(offsets) + 1, query, timeout=600)
        progress = [json.loads(p.json) for p in query.recentProgress if p.numInputRows]
    finally:
        if query is not None:
            query.stop()
        if producer is not None:
            producer.close()
        with rootdb.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
        rootdb.close()
        admin.delete_topics([topic])
        admin.close()

    try:
        commits = _commits(ck)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lat, k = [], 0
    for off, t_handed in sorted(zip(offsets, handed)):
        while commits[k][1] <= off:  # batch k holds the offsets below its end offset
            k += 1
        lat.append(commits[k][0] - t_handed)
    steady = [p for p in progress if p["batchId"] >= first_measured_batch]
    return {
        "rate": rate, "seconds": seconds, "trigger_seconds": trigger_seconds,
        "machines": machines, "readings": total, "publish_seconds": round(publish_seconds, 1),
        "p50": round(statistics.median(lat), 3), "p95": round(_percentile(lat, 0.95), 3),
        "max": round(max(lat), 3),
        "batches": len(commits) - first_measured_batch,
        "median_batch_ms": {key: statistics.median(p["durationMs"].get(key, 0) for p in steady)
                            for key in ("addBatch", "triggerExecution")} if steady else {},
        "readings_per_batch": statistics.median(p["numInputRows"] for p in steady)
        if steady else 0,
    }


def run(skab_dir: str = "", sensor_conf: str = "conf/sensor.toml",
        repeats: int = 5, rate: float = 100.0, seconds: float = 60.0,
        trigger_seconds: float = 0.5, latency_only: bool = False) -> list[str]:
    """Run the benchmarks; returns printable lines (the latency part's last line is JSON)."""
    import torch

    from soads import config
    from soads.sensor.lstm_ae import throughput
    from soads.sensor.skab import evaluate_skab

    torch.set_num_threads(1)
    conf = config.load([sensor_conf]).sensor
    params = conf.params("skab")
    lines = []
    if not latency_only:
        arch = {k: params[k] for k in ("hidden_size", "latent_size", "batch_size")}
        t = throughput(n_sensors=8, window=10, repeats=repeats, **arch)
        lines.append(f"LSTM-AE (skab preset: hidden {arch['hidden_size']}, latent "
                     f"{arch['latent_size']}), 8 sensors x 10 steps, 1 torch thread:")
        lines.append(f"  training: {t['epoch_seconds']:.2f} s per epoch over 50,000 windows "
                     f"(batch {arch['batch_size']})")
        lines.append(f"  inference, network only: {t['forward_windows_per_s']:,.0f} windows/s "
                     f"({t['forward_windows_per_cpu_s']:,.0f} per CPU-s); target >= 100,000")
        lines.append(f"  inference, score() incl. eq. 2: {t['score_windows_per_s']:,.0f} "
                     f"windows/s ({t['score_windows_per_cpu_s']:,.0f} per CPU-s)")
        if skab_dir and os.path.isdir(skab_dir):
            t0 = time.perf_counter()
            r = evaluate_skab(skab_dir, params=params, **conf.skab.kwargs())
            lines.append(f"SKAB end to end ({r['files']} files, {r['points']:,} test points): "
                         f"{time.perf_counter() - t0:.1f} s, F1 {r['f1']:.2f}, FAR "
                         f"{r['far']:.2f} %, MAR {r['mar']:.2f} %")
        else:
            lines.append("SKAB end to end: skipped, " + (f"no directory {skab_dir}" if skab_dir
                                                          else "no --skab DIR given"))
    r = latency(rate=rate, seconds=seconds, trigger_seconds=trigger_seconds,
                sensor_conf=sensor_conf)
    lines.append(f"Sensor job steady-state latency (Kafka -> Spark -> MySQL sensor_anomaly, "
                 f"{r['machines']} machines x 8 sensors, window 10, trigger "
                 f"{r['trigger_seconds']:g} s): {r['rate']:g} readings/s for "
                 f"{r['seconds']:g} s ({r['readings']:,} readings, {r['batches']} micro-batches, "
                 f"median {r['readings_per_batch']:g} readings and "
                 f"{r['median_batch_ms'].get('triggerExecution', 0):,.0f} ms per batch)")
    lines.append(f"  reading-to-score (producer handed the record -> its micro-batch committed): "
                 f"p50 {r['p50']:.2f} s, p95 {r['p95']:.2f} s, max {r['max']:.2f} s")
    lines.append(json.dumps(r))
    return lines
