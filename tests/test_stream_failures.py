"""The streaming job while its services fail: the Kafka broker and, separately, HBase are
restarted under a running jobs/stream_events.py. The job shows it met the outage: the run that
lived through it logs the lost connection, or ends with a non-zero exit status and the error in
its own log (one log per run); restarted on the same checkpoint it resumes,
and at the end every published flat event is in HBase exactly once and the RELATIONAL
DEPENDENCY TABLE equals the batch recomputation. Then jobs/mine_patterns.py mines that HBase
event log with the table as the streaming job left it (``mining.relations=table``), and the
PATTERN TABLE equals brute force on the sequences plus a marker relation only the table holds.

Needs the real parts (make up, or python -m soads.services up); it bounces
the broker and HBase briefly and leaves them running.
"""
import re
import subprocess
import sys
import time

import pytest

import streamtools as st
from soads import schema as S, services
from soads.mining.brute_force import frequent_patterns, minsup_count
from soads.simulator.generate import iter_documents
from soads.storage import tables

N_OBJECTS, SEED = 200, 13
STEP_TIMEOUT = 150  # seconds for the job to catch up with the topic after a failure
MINSUP = 0.05


# What the job logs when the part is gone (Kafka's client in the Spark Kafka source; the HBase
# Thrift client in the parse stage), looked for in the log of the run that lived through it.
KAFKA_OUTAGE = re.compile(r"Connection to node \S+ \(\S*:{port}\) could not be established")
HBASE_OUTAGE = re.compile(r"TTransportException.*Could not connect to \('[^']+', {port}\)")
OUTAGE_TIMEOUT = 120  # seconds for the job to notice a missing part


@pytest.fixture(scope="module")
def conf():
    return st.services_conf()


class Runs:
    """The job's runs on one checkpoint, each with its own log (job-1.log, job-2.log, ...), so
    what a run logged or how it ended is that run's alone."""

    def __init__(self, cmd, ck, folder):
        self.cmd, self.ck, self.folder = cmd, ck, folder
        self.proc, self.log, self.n = None, None, 0
        self.exits = []  # (run, exit status, what it logged of the outage) of runs that died

    def start(self):
        if self.log is not None:
            self.log.close()
        self.n += 1
        self.log = open(self.folder / f"job-{self.n}.log", "ab")
        self.proc = st.start(self.cmd, self.log)

    def text(self, since=0):
        return (self.folder / f"job-{self.n}.log").read_text(errors="replace")[since:]

    def mark(self):
        """Where the current run's log ends now (what it logs from here on is new)."""
        return len(self.text())

    def wait_saw(self, outage, since):
        """Wait until the current run shows it met ``outage`` (a regex): logged it after
        ``since`` while running, or died of it (non-zero exit, logged in its own log). Returns
        "logged" or "died"."""
        deadline = time.monotonic() + OUTAGE_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                text = self.text()
                assert self.proc.returncode != 0, text[-3000:]
                assert outage.search(text[since:]), text[-3000:]
                self.exits.append((self.n, self.proc.returncode, outage.pattern))
                return "died"
            if outage.search(self.text(since)):
                return "logged"
            assert time.monotonic() < deadline, (
                f"run {self.n} did not notice the outage ({outage.pattern}) within "
                f"{OUTAGE_TIMEOUT} s\n" + self.text()[-3000:])
            time.sleep(0.2)

    def catch_up(self, end, outage=None):
        """Wait until the query committed ``end``; a run that dies meanwhile must have died of
        ``outage`` (non-zero exit, the outage in its own log) and is restarted on the same
        checkpoint. A job that died with nothing to show for it fails the test."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while st.committed(self.ck, "events") < end:
            if self.proc.poll() is not None:
                text = self.text()
                assert self.proc.returncode != 0, text[-3000:]
                assert outage is not None and outage.search(text), text[-3000:]
                self.exits.append((self.n, self.proc.returncode, outage.pattern))
                self.start()
            assert time.monotonic() < deadline, (
                f"the job did not catch up with offset {end}: committed "
                f"{st.committed(self.ck, 'events')}\n" + self.text()[-3000:])
            time.sleep(0.5)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            st.kill(self.proc)
        if self.log is not None:
            self.log.close()


@pytest.mark.integration
def test_broker_and_hbase_restarts_lose_nothing_then_the_miner_reads_the_table(conf, tmp_path):
    place = st.create_place(conf, "fail")
    ck = str(tmp_path / "ck")
    docs = [d for _, d in iter_documents(N_OBJECTS, seed=SEED, events_per_file=25)]
    thirds = [docs[:len(docs) // 3], docs[len(docs) // 3:2 * len(docs) // 3],
              docs[2 * len(docs) // 3:]]
    # idle_seconds beyond any simulated gap: one session per object, so the stream's table and
    # the batch Sequence Extractor see the same sequences (for the miner below)
    cmd = st.job_cmd(st.write_stream_toml(tmp_path / "stream.toml", place, ck,
                                          idle_seconds=1e7, max_offsets_per_trigger=10))
    kafka_outage = re.compile(KAFKA_OUTAGE.pattern.format(port=conf.kafka.port))
    hbase_outage = re.compile(HBASE_OUTAGE.pattern.format(port=conf.hbase.thrift_port))
    runs, published = Runs(cmd, ck, tmp_path), []
    try:
        from soads.storage import sinks

        sinks.prepare(place.db_url, place.location)
        published += st.publish(place.bootstrap, place.topic, thirds[0])
        runs.start()
        runs.catch_up(published[-1][0] + 1)

        # 1. the broker goes away under the running job: the job notices (its Kafka client
        # logs the lost connection, or it dies of it); back, more records arrive
        since = runs.mark()
        services.down(["kafka"], conf)
        saw_kafka = runs.wait_saw(kafka_outage, since)
        services.up(["kafka"], conf)
        if saw_kafka == "died":
            runs.start()
        published += st.publish(place.bootstrap, place.topic, thirds[1])
        runs.catch_up(published[-1][0] + 1, kafka_outage)

        # 2. HBase goes away while records keep coming: the parse stage's puts fail, and the
        # run fails loudly (or logs the failure); back, the job resumes on its checkpoint
        since = runs.mark()
        services.down(["hbase"], conf)
        published += st.publish(place.bootstrap, place.topic, thirds[2][:len(thirds[2]) // 2])
        saw_hbase = runs.wait_saw(hbase_outage, since)
        services.up(["hbase"], conf)
        if saw_hbase == "died":
            runs.start()
        published += st.publish(place.bootstrap, place.topic, thirds[2][len(thirds[2]) // 2:])
        runs.catch_up(published[-1][0] + 1, hbase_outage)
        runs.stop()
        # what happened is part of the result: recovered (logged) or died loudly + restarted
        print(f"broker restart: {saw_kafka}, HBase restart: {saw_hbase}; runs that died "
              f"{runs.exits}", file=sys.stderr)

        sessions = st.assert_exactly_once(published, place.topic, place.location, place.db_url,
                                          idle=1e7)
        assert all(len(ss) == 1 for ss in sessions.values())
        assert len(sessions) == N_OBJECTS

        # the batch miner on the same HBase event log, relations read from the stream's table.
        # A marker relation only the table holds (its read points are in no sequence) shows the
        # table was read: a recomputation from the event log would neither mine it nor keep it.
        marker = {S.A: "urn:test:marker-a", S.B: "urn:test:marker-b", S.FREQ: N_OBJECTS,
                  S.SUPPORT: N_OBJECTS}
        tables.write_rows(place.db_url, "relational_dependency", [marker])
        mined = subprocess.run(
            [sys.executable, "jobs/mine_patterns.py", "--conf", "conf/soads.toml",
             "--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=2",
             "--set", "spark.driver_memory=1g", "--set", f"storage.event_log={place.location}",
             "--set", f"storage.db_url={place.db_url}", "--set", "mining.relations=table",
             "--set", f"mining.minsup={MINSUP}"],
            cwd=st.REPO, env=st.job_env(), capture_output=True, text=True, timeout=300)
        assert mined.returncode == 0, mined.stderr[-3000:]
        run = tables.latest_run(place.db_url)
        rows = tables.read_table(place.db_url, "pattern", {S.RUN_ID: run[S.RUN_ID]})
        seqs = [ss[0] for ss in sessions.values()]
        expected = frequent_patterns(seqs, minsup_count(MINSUP, len(seqs)), 25)
        expected[(marker[S.A], marker[S.B])] = N_OBJECTS
        assert {tuple(r[S.PATTERN]): r[S.SUPPORT] for r in rows} == expected
        assert marker in [{k: r[k] for k in marker}
                          for r in tables.read_table(place.db_url, "relational_dependency")]
    finally:
        runs.stop()
        services.up(["kafka", "hbase"], conf)
        st.drop_place(conf, place)
