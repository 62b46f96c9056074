"""Every job in jobs/ run once as its docstring says, on the embedded default (Parquet event log,
SQLite tables, file sources: no services) and a small input; its tables equal the library's own
computation, so a job that drifts from the library fails.

The batch jobs (ingest, mine, score) run under the venv's ``spark-submit``; the long-running
stream jobs and the training job as ``python jobs/x.py`` (their documented second form), the
stream jobs stopped once their first micro-batch committed.
"""
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import sqlalchemy as sa

import streamtools as st
from soads import epcis, query, schema as S
from soads.config import ScoringConf
from soads.dependencies import relation_counts
from soads.mining.brute_force import frequent_patterns, minsup_count
from soads.scoring import score_batch
from soads.simulator.generate import iter_sequences, simulate
from soads.stream.job import QUERY_NAME
from soads.stream.state import recompute_sequences
from soads.storage import tables
from soads.storage.hbase import to_micros

# max_length 2: every mined pattern is a pair, so a sequence usually contains several patterns
# with the same best score, and which one is stored depends on the patterns' order (the test of
# jobs/score_objects.py needs such ties)
N_OBJECTS, SEED, MINSUP, MAX_LENGTH = 300, 3, 0.05, 2
SPARK = ["--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=2",
         "--set", "spark.driver_memory=1g"]
FIRST_BATCH_TIMEOUT = 300
SENSORS, WINDOW, MACHINES, N_READINGS = ("a", "b"), 3, ("m1", "m2"), 40
T0 = dt.datetime(2024, 3, 4, 8, 0, 0)
TIMINGS = {}


def _timed(name, cmd, timeout=600):
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=st.REPO, env=st.job_env(), capture_output=True, text=True,
                       timeout=timeout)
    TIMINGS[name] = time.monotonic() - t0
    print(f"\n{name}: {TIMINGS[name]:.1f} s", file=sys.stderr)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    return r


def spark_submit(job, *args):
    """``spark-submit jobs/<job> ARGS`` with the venv's spark-submit (the one pyspark installs
    beside the interpreter), as the batch jobs' docstrings run them."""
    submit = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    return _timed(job, [submit, "--master", "local[2]", f"jobs/{job}", *args])


def _wait_first_commit(proc, checkpoint, log_path, name):
    """Wait until the query's first micro-batch committed (its checkpoint's commits/0), then
    stop the job (SIGTERM to its process group)."""
    t0 = time.monotonic()
    deadline = t0 + FIRST_BATCH_TIMEOUT
    try:
        while not os.path.exists(os.path.join(checkpoint, "commits", "0")):
            assert proc.poll() is None, log_path.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-4000:]
            time.sleep(0.5)
        TIMINGS[name] = time.monotonic() - t0
        print(f"\n{name}: first micro-batch committed after {TIMINGS[name]:.1f} s",
              file=sys.stderr)
    finally:
        st.kill(proc)


# -- batch: ingest -> mine -> score ------------------------------------------------------------


@pytest.fixture(scope="module")
def plant(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    simulate(str(root / "epcis"), n_objects=N_OBJECTS, seed=SEED, events_per_file=3000)
    storage = ["--conf", "conf/soads.toml", "--set", f"storage.root={root / 'data'}",
               "--set", f"storage.db_url=sqlite:///{root / 'soads.db'}",
               "--set", f"mining.minsup={MINSUP}", "--set", f"mining.max_length={MAX_LENGTH}",
               *SPARK]
    return root, storage


@pytest.fixture(scope="module")
def ingested(plant):
    root, storage = plant
    r = spark_submit("ingest_events.py", *storage, str(root / "epcis"))
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def mined(plant, ingested):
    root, storage = plant
    spark_submit("mine_patterns.py", *storage)
    return f"sqlite:///{root / 'soads.db'}"


def test_ingest_events_job_stores_what_the_parser_gives(plant, ingested):
    root, _ = plant
    events, reasons = 0, Counter()
    for name in sorted(os.listdir(root / "epcis")):
        if name.startswith("events-"):
            ev, qu = epcis.parse_file(str(root / "epcis" / name))
            events += len(ev)
            reasons.update(q[S.REASON] for q in qu)
    assert events > N_OBJECTS
    assert ingested["counts"]["events_stored"] == events
    assert ingested["quarantine"] == dict(reasons)


def test_mine_patterns_job_equals_brute_force(mined):
    seqs = [s for _, s in iter_sequences(N_OBJECTS, seed=SEED)]
    got = {(r[S.A], r[S.B]): (r[S.FREQ], r[S.SUPPORT])
           for r in tables.read_table(mined, "relational_dependency")}
    assert got == relation_counts(seqs)
    run = tables.latest_run(mined)
    rows = tables.read_table(mined, "pattern", {S.RUN_ID: run[S.RUN_ID]})
    expected = frequent_patterns(seqs, minsup_count(MINSUP, len(seqs)), MAX_LENGTH)
    assert len(expected) > 10
    assert {tuple(r[S.PATTERN]): r[S.SUPPORT] for r in rows} == expected
    # the job also fitted the context detector: a model run over every object
    model_run = query.newest_detector_run(mined)
    assert model_run[S.N_OBJECTS] == N_OBJECTS and model_run[S.N_ROWS] > 0


def test_fit_detector_job_makes_the_same_model_run(plant, mined):
    root, storage = plant
    url = f"sqlite:///{root / 'fit.db'}"
    shutil.copy(root / "soads.db", root / "fit.db")
    first = query.newest_detector_run(url)
    spark_submit("fit_detector.py", *storage, "--set", f"storage.db_url={url}")
    second = query.newest_detector_run(url)
    assert second[S.RUN_ID] != first[S.RUN_ID]
    assert query.detector_model(url, second[S.RUN_ID]).to_rows() == \
        query.detector_model(url, first[S.RUN_ID]).to_rows()


def test_score_objects_job_and_cli_write_the_same_object_scores(plant, mined):
    """jobs/score_objects.py and ``soads score`` on copies of one database whose PATTERN TABLE
    rows are stored in reverse pattern_id order: both score against the patterns in pattern_id
    order (ties between equally good patterns break the same way), and equal the library's
    scoring of the simulator's sequences."""
    root, storage = plant
    run_id = tables.latest_run(mined)[S.RUN_ID]
    rows = tables.read_table(mined, "pattern", {S.RUN_ID: run_id}, order_by=[S.PATTERN_ID])
    # the same rows in a table without the primary key's index, stored in reverse: a query
    # without ORDER BY returns them in storage order, as a database may
    eng = tables.engine(mined)
    with eng.begin() as conn:
        for sql in ("CREATE TABLE pattern_heap AS SELECT * FROM pattern "
                    f"ORDER BY {S.PATTERN_ID} DESC", "DROP TABLE pattern",
                    "ALTER TABLE pattern_heap RENAME TO pattern"):
            conn.execute(sa.text(sql))
    eng.dispose()
    assert [r[S.PATTERN_ID] for r in tables.read_table(mined, "pattern", {S.RUN_ID: run_id})] \
        == [r[S.PATTERN_ID] for r in rows[::-1]]
    urls = {}
    for who in ("job", "cli"):
        shutil.copy(root / "soads.db", root / f"{who}.db")
        urls[who] = f"sqlite:///{root / f'{who}.db'}"
    spark_submit("score_objects.py", *storage, "--set", f"storage.db_url={urls['job']}")
    _timed("soads score", [sys.executable, "-m", "soads.cli", "score", *storage,
                           "--set", f"storage.db_url={urls['cli']}"])

    def scores(url):
        return sorted(tables.read_table(url, "object_score"), key=lambda r: r[S.OID])

    job, cli = scores(urls["job"]), scores(urls["cli"])
    assert len(job) == N_OBJECTS
    assert job == cli
    # both against the context detector's newest model run (the mining job's)
    model_run = query.newest_detector_run(mined)[S.RUN_ID]
    assert {r[S.MODEL_RUN_ID] for r in job} == {model_run}
    assert all(r[S.ANOMALY] is not None and r[S.IS_ANOMALY] is not None for r in job)
    assert query.anomaly_rates(urls["job"]) == query.anomaly_rates(urls["cli"]) != []
    windows = [sorted(tables.read_table(urls[w], "alignment_score"),
                      key=lambda r: (r[S.WINDOW_START], r[S.RUN_ID])) for w in ("job", "cli")]
    assert windows[0] == windows[1] and sum(w[S.N_OBJECTS] for w in windows[0]) == N_OBJECTS
    # the library on the simulator's own sequences, patterns in pattern_id order
    patterns = [list(r[S.PATTERN]) for r in rows]
    seqs = dict(iter_sequences(N_OBJECTS, seed=SEED))
    oids = [r[S.OID] for r in job]
    assert sorted(seqs) == oids
    s, raw, best = score_batch([seqs[o] for o in oids], patterns, ScoringConf())
    assert [(r[S.SCORE], r[S.RAW], r[S.PATTERN]) for r in job] == [
        (si, ri, patterns[bi] if bi >= 0 else None) for si, ri, bi in zip(s, raw, best)]
    # the check has teeth: in the database's row order the stored patterns would differ
    _, _, best_rev = score_batch([seqs[o] for o in oids], patterns[::-1], ScoringConf())
    assert sum(patterns[b] != patterns[::-1][r] for b, r in zip(best, best_rev)) > N_OBJECTS // 2


# -- the event stream --------------------------------------------------------------------------


def test_stream_events_job_first_micro_batch(tmp_path):
    simulate(str(tmp_path / "incoming"), n_objects=100, seed=9, events_per_file=500)
    os.remove(tmp_path / "incoming" / "truth.csv")  # EPCIS documents only in the input folder
    ck = tmp_path / "ck"
    db_url = f"sqlite:///{tmp_path / 'soads.db'}"
    cmd = [sys.executable, "jobs/stream_events.py", "--conf", "conf/soads.toml", *SPARK,
           "--set", f"stream.input_path={tmp_path / 'incoming'}",
           "--set", f"storage.event_log={tmp_path / 'event-log'}",
           "--set", f"storage.db_url={db_url}", "--set", f"stream.checkpoint_root={ck}",
           "--set", "stream.trigger_seconds=1"]
    log_path = tmp_path / "job.log"
    with open(log_path, "ab") as log:
        _wait_first_commit(st.start(cmd, log), str(ck / QUERY_NAME), log_path,
                           "stream_events.py")
    # every file fits the first micro-batch (max_files_per_trigger 20): the relations of its
    # reads, recomputed in batch, equal the table
    reads = []
    for name in sorted(os.listdir(tmp_path / "incoming")):
        ev, qu = epcis.parse_file(str(tmp_path / "incoming" / name))
        assert qu == []
        reads += [(e[S.OID], e[S.READ_POINT], to_micros(e[S.EVENT_TIME]), e[S.SOURCE])
                  for e in ev]
    assert len(os.listdir(tmp_path / "incoming")) <= 20
    assert tables.read_table(db_url, "late_event") == []
    sessions = recompute_sequences(reads, 60.0, 3600.0)
    got = {(r[S.A], r[S.B]): (r[S.FREQ], r[S.SUPPORT])
           for r in tables.read_table(db_url, "relational_dependency")}
    assert got and got == relation_counts([s for ss in sessions.values() for s in ss])


# -- sensors: train -> stream ------------------------------------------------------------------


def _readings(n, phase=0.0):
    t = np.arange(n)
    return {"a": np.sin(t / 5 + phase), "b": np.cos(t / 5 + phase)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """jobs/train_lstm_ae.py on a small history, promoted; and the library's own fit of the
    same history into a second registry."""
    import pandas as pd

    root = tmp_path_factory.mktemp("sensor")
    hist = pd.concat([pd.DataFrame({S.MACHINE_ID: m, S.TS: [T0 + dt.timedelta(seconds=i)
                                                           for i in range(300)],
                                    **_readings(300, k)}) for k, m in enumerate(MACHINES)])
    hist.to_csv(root / "history.csv", index=False)
    conf = root / "sensor.toml"
    conf.write_text('[sensor]\npreset = "tiny"\n[sensor.presets.tiny]\n'
                    f'window = {WINDOW}\nhidden_size = 4\nlatent_size = 2\nepochs = 2\nseed = 0\n')
    _timed("train_lstm_ae.py", [sys.executable, "jobs/train_lstm_ae.py", "--data",
                                str(root / "history.csv"), "--sensor-conf", str(conf),
                                "--set", f"sensor.stream.registry={root / 'reg'}", "--promote"])
    from soads import config
    from soads.sensor import train

    train.train_version(train.read_history(str(root / "history.csv")),
                        config.load([str(conf)]).sensor.params(), str(root / "lib"),
                        promote=True)
    return root, conf


def test_train_lstm_ae_job_registers_the_library_model(trained):
    from soads.sensor import registry

    root, _ = trained
    assert registry.list_versions(root / "reg") == ["v0001"]
    assert registry.current_version(root / "reg") == "v0001"  # --promote
    info = registry.training_info(root / "reg", "v0001")
    assert info["sensors"] == list(SENSORS)
    assert info["data"]["rows"] == 300 * len(MACHINES)
    assert info["data"]["machines"] == list(MACHINES)
    job, lib = registry.load(root / "reg"), registry.load(root / "lib")
    X = np.c_[_readings(100, 0.3)["a"], _readings(100, 0.3)["b"]]
    assert job.threshold_ == pytest.approx(lib.threshold_, rel=1e-6)
    np.testing.assert_allclose(job.score(X), lib.score(X), rtol=1e-6)


def test_stream_sensors_job_first_micro_batch(trained, tmp_path):
    from soads.sensor import registry

    root, conf = trained
    (tmp_path / "incoming").mkdir()
    lines = []
    for s in range(N_READINGS):
        for k, m in enumerate(MACHINES):
            r = _readings(N_READINGS, k)
            lines.append(json.dumps({"machine_id": m, "ts": (T0 + dt.timedelta(seconds=s))
                                     .isoformat() + "Z",
                                     "values": {c: float(r[c][s]) for c in SENSORS}}))
    (tmp_path / "incoming" / "readings.jsonl").write_text("\n".join(lines) + "\n")
    ck = tmp_path / "ck"
    db_url = f"sqlite:///{tmp_path / 'soads.db'}"
    cmd = [sys.executable, "jobs/stream_sensors.py", "--conf", "conf/soads.toml",
           "--sensor-conf", str(conf), "--set", f"storage.db_url={db_url}"] + [a for kv in {
               "source": "files", "input_path": tmp_path / "incoming",
               "registry": root / "reg", "checkpoint_root": ck,
               "trigger_seconds": 1, "window": WINDOW, "sensors": ",".join(SENSORS)}.items()
               for a in ("--set", f"sensor.stream.{kv[0]}={kv[1]}")]
    # the [spark] section of conf/soads.toml, sized for the tests
    cmd += ["--conf", str(_spark_toml(tmp_path))]
    log_path = tmp_path / "job.log"
    with open(log_path, "ab") as log:
        _wait_first_commit(st.start(cmd, log), str(ck / "sensor_anomaly"), log_path,
                           "stream_sensors.py")
    rows = tables.read_table(db_url, "sensor_anomaly")
    assert tables.read_table(db_url, "sensor_quarantine") == []
    model = registry.load(root / "reg")
    expected = {}
    for k, m in enumerate(MACHINES):
        r = _readings(N_READINGS, k)
        for i, score in enumerate(model.score(np.c_[r["a"], r["b"]])):
            expected[(m, T0 + dt.timedelta(seconds=i + WINDOW - 1))] = score
    assert {(r[S.MACHINE_ID], r[S.WINDOW_END]) for r in rows} == set(expected)
    assert len(rows) == len(expected)
    for r in rows:
        assert r[S.MODEL_VERSION] == "v0001"
        assert r[S.SCORE] == pytest.approx(expected[(r[S.MACHINE_ID], r[S.WINDOW_END])],
                                           rel=1e-5)
        assert r[S.IS_ANOMALY] == (r[S.SCORE] > r[S.THRESHOLD])


def _spark_toml(tmp_path):
    path = tmp_path / "spark.toml"
    path.write_text('[spark]\nmaster = "local[2]"\nshuffle_partitions = 2\n'
                    'driver_memory = "1g"\n')
    return path
