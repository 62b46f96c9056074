"""The streaming job while its services fail: the Kafka broker and, separately, HBase are
restarted under a running jobs/stream_events.py. The job either recovers by itself or ends with
a non-zero exit status and the error in its log; restarted on the same checkpoint it resumes,
and at the end every published flat event is in HBase exactly once and the RELATIONAL
DEPENDENCY TABLE equals the batch recomputation. Then jobs/mine_patterns.py mines that HBase
event log with the table as the streaming job left it (``mining.relations=table``), and the
PATTERN TABLE equals brute force on the sequences.

Needs the real parts (make up, or python -m soads.services up); it bounces
the broker and HBase briefly and leaves them running.
"""
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


@pytest.fixture(scope="module")
def conf():
    return st.services_conf()


def _catch_up(proc, cmd, ck, end, log_path, log, exits):
    """Wait until the query committed ``end``; a job that died is checked (non-zero exit,
    the error in its log) and restarted on the same checkpoint. Returns the running process."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while st.committed(ck, "events") < end:
        if proc.poll() is not None:
            text = log_path.read_text(errors="replace")
            assert proc.returncode != 0, text[-3000:]
            assert "Exception" in text[-20000:] or "Error" in text[-20000:], text[-3000:]
            exits.append(proc.returncode)
            proc = st.start(cmd, log)
        assert time.monotonic() < deadline, (
            f"the job did not catch up with offset {end}: committed "
            f"{st.committed(ck, 'events')}\n"
            + log_path.read_text(errors="replace")[-3000:])
        time.sleep(1)
    return proc


@pytest.mark.integration
def test_broker_and_hbase_restarts_lose_nothing_then_the_miner_reads_the_table(conf, tmp_path):
    place = st.create_place(conf, "fail")
    ck = str(tmp_path / "ck")
    docs = [d for _, d in iter_documents(N_OBJECTS, seed=SEED, events_per_file=25)]
    thirds = [docs[:len(docs) // 3], docs[len(docs) // 3:2 * len(docs) // 3],
              docs[2 * len(docs) // 3:]]
    log_path = tmp_path / "job.log"
    # idle_seconds beyond any simulated gap: one session per object, so the stream's table and
    # the batch Sequence Extractor see the same sequences (for the miner below)
    cmd = st.job_cmd(st.write_stream_toml(tmp_path / "stream.toml", place, ck,
                                          idle_seconds=1e7, max_offsets_per_trigger=10))
    exits, published, proc = [], [], None
    try:
        from soads.storage import sinks

        sinks.prepare(place.db_url, place.location)
        with open(log_path, "ab") as log:
            published += st.publish(place.bootstrap, place.topic, thirds[0])
            proc = st.start(cmd, log)
            proc = _catch_up(proc, cmd, ck, published[-1][0] + 1, log_path, log, exits)

            # 1. the broker goes away under the running job, comes back, more records arrive
            services.down(["kafka"], conf)
            time.sleep(5)
            services.up(["kafka"], conf)
            published += st.publish(place.bootstrap, place.topic, thirds[1])
            proc = _catch_up(proc, cmd, ck, published[-1][0] + 1, log_path, log, exits)
            after_kafka = len(exits)

            # 2. HBase goes away while records keep coming: the parse stage's puts must fail
            published += st.publish(place.bootstrap, place.topic, thirds[2][:len(thirds[2]) // 2])
            services.down(["hbase"], conf)
            time.sleep(8)  # at least one trigger with HBase down
            services.up(["hbase"], conf)
            published += st.publish(place.bootstrap, place.topic, thirds[2][len(thirds[2]) // 2:])
            proc = _catch_up(proc, cmd, ck, published[-1][0] + 1, log_path, log, exits)
            st.kill(proc)
        # what happened is part of the result: recovered (no exit) or failed loudly + restarted
        print(f"job exits: after the broker restart {exits[:after_kafka]}, after the HBase "
              f"restart {exits[after_kafka:]}", file=sys.stderr)

        sessions = st.assert_exactly_once(published, place.topic, place.location, place.db_url,
                                          idle=1e7)
        assert all(len(ss) == 1 for ss in sessions.values())
        assert len(sessions) == N_OBJECTS

        # the batch miner on the same HBase event log, relations read from the stream's table
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
        assert {tuple(r[S.PATTERN]): r[S.SUPPORT] for r in rows} == expected
        assert "relations" in mined.stderr  # the stage ran (read, not recomputed: no write)
    finally:
        if proc is not None and proc.poll() is None:
            st.kill(proc)
        services.up(["kafka", "hbase"], conf)
        st.drop_place(conf, place)
