"""The ``soads`` command line, as a user runs it (in-process: it reuses the session's Spark)."""
import json
import os

import pytest

from soads import schema as S
from soads.cli import main
from streamtools import fail_or_skip  # fail under CI=true, skip elsewhere


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_parse_prints_one_json_event_per_line(capsys, epcis_examples):
    code, out, err = run(capsys, "parse", os.path.join(epcis_examples, "xml", "ObjectEvent.xml"))
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [e[S.OID] for e in events] == ["urn:epc:id:sgtin:0614141.107346.2017",
                                          "urn:epc:id:sgtin:0614141.107346.2018"]
    assert set(events[0]) == set(S.EVENT_COLUMNS)
    assert events[0][S.EVENT_TIME] == "2005-04-04T02:33:31.116Z"


def test_parse_shows_sensor_reports_as_json(capsys, epcis_examples):
    code, out, _ = run(capsys, "parse", os.path.join(epcis_examples, "jsonld", "SensorDataExample1.jsonld"))
    assert code == 0
    event = json.loads(out.splitlines()[0])
    reports = event[S.SENSOR_REPORTS]
    assert isinstance(reports, list) and len(reports) == 3
    assert reports[0]["sensorReport"][0]["type"] == "Temperature"


def test_parse_reports_quarantine_on_stderr_and_exits_0(capsys, tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b"\x00\xff\xfe garbage")
    code, out, err = run(capsys, "parse", str(bad))
    assert code == 0 and out == ""
    assert "quarantine" in err and str(bad) in err


def test_parse_missing_file_is_one_line_error(capsys, tmp_path):
    code, out, err = run(capsys, "parse", str(tmp_path / "nope.xml"))
    assert code == 2
    assert err.strip().count("\n") == 0 and "no such file" in err


def test_simulate_bad_arguments_exit_nonzero(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--objects", "0", "--out", str(tmp_path)])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["simulate", "--objects", "5", "--out", str(tmp_path), "--anomaly-rate", "2"])


def test_mine_and_score_jsonl_round_trip(capsys, tmp_path, spark):
    seqs = tmp_path / "seqs.jsonl"
    lines = [("o1", ["A", "B", "C", "D"]), ("o2", ["A", "B", "C"]), ("o3", ["A", "B", "C", "D"]),
             ("o4", ["X", "B", "C"]), ("o5", ["D"])]
    seqs.write_text("".join(json.dumps({"oid": o, "sequence": s}) + "\n" for o, s in lines))
    pats = tmp_path / "patterns.jsonl"
    code, _, err = run(capsys, "mine", "--input", str(seqs), "--minsup", "3", "--out", str(pats))
    assert code == 0, err
    got = [json.loads(x) for x in pats.read_text().splitlines()]
    # contiguous patterns with support >= 3: BC (4), AB (3), ABC (3); ABC is maximal
    assert sorted((tuple(g["pattern"]), g["support"], g["maximal"]) for g in got) == [
        (("A", "B"), 3, False), (("A", "B", "C"), 3, True), (("B", "C"), 4, False)]
    scores = tmp_path / "scores.jsonl"
    code, _, err = run(capsys, "score", "--input", str(seqs), "--patterns", str(pats),
                       "--out", str(scores))
    assert code == 0, err
    by_oid = {r["oid"]: r for r in map(json.loads, scores.read_text().splitlines())}
    assert by_oid["o2"]["score"] == 1.0 and by_oid["o2"]["pattern"] == ["A", "B", "C"]
    assert by_oid["o2"]["raw"] == 6.0
    assert by_oid["o1"]["score"] == pytest.approx(6 / 8)  # SW(s,p)=6, SW(s,s)=8
    assert by_oid["o5"]["score"] == 0.0


def test_mine_rejects_bad_input_file(capsys, tmp_path, spark):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n")
    code, _, err = run(capsys, "mine", "--input", str(bad), "--minsup", "0.5", "--out",
                       str(tmp_path / "p.jsonl"))
    assert code == 2 and "not a sequence line" in err
    code, _, err = run(capsys, "mine", "--input", str(tmp_path / "none.jsonl"), "--minsup", "0.5",
                       "--out", str(tmp_path / "p.jsonl"))
    assert code == 2 and "cannot read" in err


# -- score --input: every case format, the context detector's verdict, bad cases -------------

CASES = os.path.join(os.path.dirname(__file__), "data", "cases")
VERDICT = (S.ANOMALY, S.IS_ANOMALY, S.EXPLANATION)


def _score_rows(capsys, tmp_path, input_path, *extra):
    out = tmp_path / "scores.jsonl"
    code, _, err = run(capsys, "score", "--input", str(input_path), "--out", str(out), *extra)
    assert code == 0, err
    return [json.loads(x) for x in out.read_text().splitlines()], err


def test_score_input_reads_every_format_to_the_same_rows(capsys, tmp_path):
    pats = tmp_path / "patterns.jsonl"
    pats.write_text(json.dumps({"pattern": ["A", "B", "C"], "support": 2, "maximal": True}) + "\n")
    rows = {}
    for name in ("small.jsonl", "small.jsonl.gz", "small.xes", "small.xes.gz"):
        rows[name], err = _score_rows(capsys, tmp_path, os.path.join(CASES, name))
        # no --patterns: oid and the context detector's verdict only, in input order
        assert [list(r) for r in rows[name]] == [[S.OID, *VERDICT]] * 4
        assert [r[S.OID] for r in rows[name]] == ["c1", "2", "c3", "c4"]
        last = err.strip().splitlines()[-1]
        assert last.startswith("[soads] score: 4 cases (8 events), 0 flagged (0.0%), "
                               "1 without events (scored as START -> END); fit ")
        assert last.endswith(f" s -> {tmp_path / 'scores.jsonl'}")
    assert all(rows[name] == rows["small.jsonl"] for name in rows)
    for r in rows["small.jsonl"]:
        assert isinstance(r[S.ANOMALY], float) and r[S.ANOMALY] >= 0
        assert isinstance(r[S.IS_ANOMALY], bool)
    with_pats, _ = _score_rows(capsys, tmp_path, os.path.join(CASES, "small.xes"),
                               "--patterns", str(pats))
    assert [list(r) for r in with_pats] == [[S.OID, S.SCORE, S.RAW, S.PATTERN, *VERDICT]] * 4
    assert [(r[S.SCORE], r[S.RAW], r[S.PATTERN]) for r in with_pats] == [
        (1.0, 6.0, ["A", "B", "C"]), (pytest.approx(2 / 6), 2.0, ["A", "B", "C"]),
        (0.0, 0.0, None), (1.0, 6.0, ["A", "B", "C"])]
    assert [{k: r[k] for k in (S.OID, *VERDICT)} for r in with_pats] == rows["small.jsonl"]


def test_score_input_alignment_fields_equal_the_spark_scorer(capsys, tmp_path, spark):
    # the alignment fields of today's Spark path (scoring.score_sequences), on a seeded log
    import random

    from soads import scoring
    from soads.config import ScoringConf

    rnd = random.Random(12)
    seqs = [[rnd.choice("ABCDEF") for _ in range(rnd.randint(0, 9))] for _ in range(300)]
    pats = [["A", "B", "C"], ["B", "C"], ["D", "E", "F", "A"], ["F"]]
    path = tmp_path / "seqs.jsonl"
    path.write_text("".join(json.dumps({"oid": f"o{i}", "sequence": s}) + "\n"
                            for i, s in enumerate(seqs)))
    pfile = tmp_path / "patterns.jsonl"
    pfile.write_text("".join(json.dumps({"pattern": p, "support": 9, "maximal": True}) + "\n"
                             for p in pats))
    got, _ = _score_rows(capsys, tmp_path, path, "--patterns", str(pfile))
    df = spark.createDataFrame([(f"o{i}", s) for i, s in enumerate(seqs)],
                               "oid string, sequence array<string>")
    want = {r[S.OID]: (r[S.SCORE], r[S.RAW], list(r[S.PATTERN]) if r[S.PATTERN] else None)
            for r in scoring.score_sequences(df, pats, ScoringConf()).collect()}
    assert [r[S.OID] for r in got] == [f"o{i}" for i in range(300)]
    assert {r[S.OID]: (r[S.SCORE], r[S.RAW], r[S.PATTERN]) for r in got} == want


def test_score_input_flags_the_odd_cases_and_explains_them(capsys, tmp_path):
    lines = []
    for i in range(300):  # the normal path, each step with its usual resource
        lines.append({"oid": f"n{i}", "sequence": ["A", "B", "C", "D"],
                      "attributes": [{"res": "r1"}, {"res": "r2"}, {"res": "r3"}, {"res": "r4"}]})
    lines.append({"oid": "order", "sequence": ["A", "C", "B", "D"],
                  "attributes": [{"res": "r1"}, {"res": "r3"}, {"res": "r2"}, {"res": "r4"}]})
    lines.append({"oid": "resource", "sequence": ["A", "B", "C", "D"],
                  "attributes": [{"res": "r1"}, {"res": "r2"}, {"res": "r1"}, {"res": "r4"}]})
    lines.append({"oid": "empty", "sequence": []})  # never read: START -> END, never seen
    path = tmp_path / "log.jsonl.gz"
    import gzip

    path.write_bytes(gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode()))
    rows, err = _score_rows(capsys, tmp_path, path)
    by_oid = {r[S.OID]: r for r in rows}
    assert [r[S.OID] for r in rows if r[S.IS_ANOMALY]] == ["order", "resource", "empty"]
    assert "303 cases (1,208 events), 3 flagged (1.0%), 1 without events" in err
    assert max(r[S.ANOMALY] for r in rows if r[S.OID].startswith("n")) == 0.0
    assert by_oid["empty"][S.EXPLANATION]["kind"] == "end"
    assert by_oid["empty"][S.EXPLANATION]["step"] == 0
    assert by_oid["order"][S.EXPLANATION]["kind"] == "control"
    assert by_oid["order"][S.EXPLANATION]["step"] == 1
    assert by_oid["order"][S.EXPLANATION]["read_point"] == "C"
    expl = by_oid["resource"][S.EXPLANATION]
    assert (expl["kind"], expl["step"], expl["read_point"], expl["attribute"], expl["value"]) == \
        ("attribute", 2, "C", "res", "r1")
    assert 0 <= expl["probability"] < 0.01


def test_score_input_fits_in_chunks_the_same_model_as_in_one_call():
    # a seeded log with a nearly unique attribute (left out) and a few empty cases
    import random

    from soads.cli import fit_in_chunks
    from soads.config import DetectorConf
    from soads.detect import context

    rnd = random.Random(5)
    log = []
    for i in range(400):
        seq = [rnd.choice("ABCD") for _ in range(rnd.choice([0, 2, 3, 5, 8]))]
        log.append((seq, [{"res": rnd.choice(["r1", "r2"]), "id": f"{i}-{j}"}
                          for j in range(len(seq))] or None))
    conf = DetectorConf(threshold=2.0)  # small contexts count too
    whole = context.ContextModel.fit(log, conf)
    assert whole.skipped_ == ("id",)
    for chunk_events in (1, 7, 100, 10_000):
        part = fit_in_chunks(iter(log), conf, chunk_events)
        assert part.skipped_ == whole.skipped_ and part.to_rows() == whole.to_rows()
        assert context.score_cases(part, log) == context.score_cases(whole, log)


@pytest.mark.parametrize("name, content, reason", [
    ("bad.jsonl", '{"oid": "a", "sequence": ["A"]}\n{"oid": "b", "sequence": ["A", "B"], '
     '"times": ["t1"]}\n', ':2: "times" has 1 entry for 2 steps'),
    ("bad.jsonl", '{"oid": "a", "sequence": ["A", 7]}\n',
     ":1: step 1: activity must be a non-empty string, got a number"),
    ("bad.jsonl", '{"oid": "a", "sequence": ["A"], "attributes": [{"k": ["v"]}]}\n',
     ":1: step 0: attribute 'k' must be a string, number or boolean, got a list"),
    ("bad.jsonl", '{"sequence": ["A"]}\n', ':1: no "oid"'),
    ("bad.jsonl", "this is not json\n", ":1: malformed JSON (Expecting value at column 1)"),
    ("bad.xes", '<log><trace><event><string key="concept:name" value="A"/></event></trace>\n'
     "<trace><event>", ": line 2 (after trace 1): malformed XES (Premature end of data"),
    ("bad.xes", "<log><trace><event><int key='n' value='1'/></event></trace></log>",
     ": trace 1 (line 1): event 0 (line 1) has no concept:name (the activity)"),
])
def test_score_input_bad_case_is_one_line_error_and_no_output(capsys, tmp_path, name, content,
                                                               reason):
    bad = tmp_path / name
    bad.write_text(content)
    out = tmp_path / "scores.jsonl"
    code, stdout, err = run(capsys, "score", "--input", str(bad), "--out", str(out))
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith(f"soads score: {bad}{reason}"), err
    assert not out.exists() and not (tmp_path / "scores.jsonl.part").exists()


def test_score_input_needs_out_and_a_readable_file(capsys, tmp_path):
    code, _, err = run(capsys, "score", "--input", os.path.join(CASES, "small.jsonl"))
    assert code == 2 and "--out SCORES.jsonl is required with --input" in err
    code, _, err = run(capsys, "score", "--input", str(tmp_path / "none.xes"), "--out",
                       str(tmp_path / "s.jsonl"))
    assert code == 2 and "cannot read" in err
    code, _, err = run(capsys, "score", "--input", os.path.join(CASES, "small.xes"), "--out",
                       str(tmp_path / "no-dir" / "s.jsonl"))
    assert code == 2 and err == f"soads score: cannot write {tmp_path}/no-dir/s.jsonl: " \
        "No such file or directory\n"


def test_simulate_start_takes_now_or_iso_and_refuses_anything_else(capsys, tmp_path):
    import datetime as dt

    from soads import epcis

    for when, want in (("2026-11-22T10:00:00", "2026-11-22T10:00:00.000Z"),
                       ("2026-11-22T19:00:00+09:00", "2026-11-22T10:00:00.000Z")):
        code, out, _ = run(capsys, "simulate", "--objects", "3", "--out", str(tmp_path),
                           "--start", when)
        assert code == 0
        doc = (tmp_path / "events-00000.xml").read_bytes()
        assert epcis.parse_document(doc, "t", 1 << 24)[0][0]["event_time"] == want
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    assert run(capsys, "simulate", "--objects", "3", "--out", str(tmp_path), "--start", "now")[0] == 0
    first = epcis.parse_document((tmp_path / "events-00000.xml").read_bytes(), "t", 1 << 24)[0][0]
    assert dt.datetime.fromisoformat(first["event_time"].replace("Z", "+00:00")) >= before
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--objects", "3", "--out", str(tmp_path), "--start", "yesterday"])
    assert e.value.code == 2
    assert "not 'now' or an ISO-8601 time" in capsys.readouterr().err


# -- object ids per run, real-time pace ----------------------------------------------------


def _oids(truth):
    return [line.split(",")[0] for line in truth.read_text().splitlines()[1:]]


def test_simulate_ids_unique_per_seed_and_start_and_the_demo_ids_unchanged(capsys, tmp_path):
    runs = {"default": [], "seed 8": ["--seed", "8"],
            "later start": ["--start", "2024-03-05T08:00:00+09:00"],
            "explicit": ["--first-serial", "500"]}
    oids = {}
    for name, extra in runs.items():
        out = tmp_path / name.replace(" ", "-")
        code, stdout, err = run(capsys, "simulate", "--objects", "20", "--out", str(out), *extra)
        assert code == 0, err
        oids[name] = _oids(out / "truth.csv")
        assert json.loads(stdout.splitlines()[-1])["first_serial"] == \
            int(oids[name][0].rsplit(".", 1)[1])
    # seed 7 from the default start is `make demo`'s log: its ids are as they always were
    assert oids["default"] == [f"urn:epc:id:sgtin:8801234.012345.{i}" for i in range(1, 21)]
    assert oids["explicit"][0].endswith(".500") and oids["explicit"][-1].endswith(".519")
    for a in runs:
        for b in runs:
            if a < b:
                assert not set(oids[a]) & set(oids[b]), (a, b)
    # the same seed and start give the same log, ids included
    code, _, _ = run(capsys, "simulate", "--objects", "20", "--out", str(tmp_path / "again"),
                     "--seed", "8")
    assert code == 0 and _oids(tmp_path / "again" / "truth.csv") == oids["seed 8"]


def test_pace_realtime_needs_kafka_and_no_rate(capsys, tmp_path):
    code, _, err = run(capsys, "simulate", "--objects", "3", "--out", str(tmp_path),
                       "--pace", "realtime")
    assert code == 2 and "--kafka" in err
    code, _, err = run(capsys, "simulate", "--objects", "3", "--kafka", "t", "--pace",
                       "realtime", "--rate", "100")
    assert code == 2 and "exclude" in err
    with pytest.raises(SystemExit):
        main(["simulate", "--objects", "3", "--kafka", "t", "--pace", "slow"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "'fast' (default) runs as fast as possible" in text and "'realtime'" in text


# -- bench: one sub-command per benchmark ----------------------------------------------------


def test_bench_has_one_sub_command_per_benchmark_each_with_its_own_options(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    top = capsys.readouterr().out
    for name in ("parse", "mine", "score", "simulate", "stream", "sensor"):
        assert f"    {name} " in top
    assert "--minsup" not in top and "--skab" not in top
    helps = {}
    for name in ("parse", "mine", "score", "simulate", "stream", "sensor"):
        with pytest.raises(SystemExit) as e:
            main(["bench", name, "--help"])
        assert e.value.code == 0
        helps[name] = capsys.readouterr().out
    assert "--repeat" in helps["mine"] and "--mllib-timeout" in helps["mine"]
    assert "--skab" not in helps["mine"] and "--readings-per-s" not in helps["mine"]
    assert "--repeat" in helps["score"] and "--minsup" not in helps["score"]
    assert "--skab" in helps["sensor"] and "--minsup" not in helps["sensor"]
    assert "--operator" in helps["stream"] and "--skab" not in helps["stream"]
    with pytest.raises(SystemExit) as e:
        main(["bench", "mine", "--skab", "x"])  # another benchmark's option is refused
    assert e.value.code == 2


# -- jobs and quarantine ---------------------------------------------------------------------


def test_jobs_lists_running_jobs_and_removes_dead_pid_files(capsys, tmp_path):
    import subprocess
    import sys

    from soads import job_status

    jobs = tmp_path / "jobs"
    code, out, _ = run(capsys, "jobs", "--dir", str(jobs))
    assert code == 0 and "no jobs running" in out
    job_status.write_pid_file("stream_events", ["conf/soads.toml"], str(jobs))
    # a job that was killed: its process is gone, its pid file stayed
    child = subprocess.run([sys.executable, "-c",
                            "import sys; from soads import job_status; "
                            f"job_status.write_pid_file('stream_sensors', [], {str(jobs)!r})"],
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(
                               [os.path.join(os.path.dirname(__file__), "..")]
                               + [p for p in [os.environ.get("PYTHONPATH")] if p])},
                           check=True)
    assert child.returncode == 0 and len(os.listdir(jobs)) == 2
    code, out, _ = run(capsys, "jobs", "--dir", str(jobs))
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert f"pid {os.getpid()}" in lines["stream_events"] and "running" in lines["stream_events"]
    assert "conf/soads.toml" in lines["stream_events"]
    assert "dead" in lines["stream_sensors"]
    assert os.listdir(jobs) == [f"stream_events-{os.getpid()}.json"]  # the dead one cleaned
    code, out, _ = run(capsys, "jobs", "--dir", str(jobs))
    assert "stream_sensors" not in out


def test_quarantine_shows_newest_records_of_the_event_log(capsys, tmp_path):
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(directory, name, rows, mtime):
        os.makedirs(directory, exist_ok=True)
        pq.write_table(pa.table({c: pa.array([r[i] for r in rows], pa.string())
                                 for i, c in enumerate(S.QUARANTINE_COLUMNS)}),
                       os.path.join(directory, name))
        os.utime(os.path.join(directory, name), (mtime, mtime))

    # one event log ([storage]): soads ingest's part files and the event job's batch files
    now = time.time()
    write(tmp_path / "log" / "quarantine", "part-0.parquet",
          [("a.xml:3", "missing_epc", "no epc"), ("b.xml", "malformed_xml", "line 1")], now - 10)
    write(tmp_path / "log" / "quarantine", "batch-4-00000.parquet",
          [("soads-events/0/17", "too_large", "70000000 bytes")], now)
    conf = tmp_path / "q.toml"
    conf.write_text(f'[storage]\nroot = "{tmp_path}/log"\n')
    code, out, err = run(capsys, "quarantine", "--conf", str(conf), "--limit", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert "too_large" in lines[0] and "soads-events/0/17" in lines[0]
    assert "malformed_xml" in lines[1] and "b.xml" in lines[1]
    code, out, _ = run(capsys, "quarantine", "--conf", str(conf), "--json")
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r[S.SOURCE] for r in rows] == ["soads-events/0/17", "b.xml", "a.xml:3"]
    assert {r["event_log"] for r in rows} == {f"{tmp_path}/log"}
    # [stream] names no event log of its own any more: an old conf file says where it went
    old = tmp_path / "old.toml"
    old.write_text(f'[stream]\nevent_log = "{tmp_path}/stream"\n')
    code, _, err = run(capsys, "quarantine", "--conf", str(old))
    assert code != 0 and "stream.event_log: moved to storage.event_log" in err


# -- one progress display: Spark's bars and INFO lines off unless -v -------------------------


def test_spark_progress_bars_and_info_lines_only_with_verbose(tmp_path):
    import subprocess
    import sys

    seqs = tmp_path / "seqs.jsonl"
    seqs.write_text("".join(json.dumps({"oid": f"o{i}", "sequence": ["A", "B", "C"]}) + "\n"
                            for i in range(50)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.join(os.path.dirname(__file__), "..")]
        + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    spark_toml = tmp_path / "spark.toml"
    spark_toml.write_text('[spark]\nmaster = "local[2]"\nshuffle_partitions = 2\n'
                          'driver_memory = "1g"\n')

    def mine(*flags):
        return subprocess.run([sys.executable, "-m", "soads.cli", *flags, "mine", "--input",
                               str(seqs), "--minsup", "2", "--out", str(tmp_path / "p.jsonl"),
                               "--conf", str(spark_toml)],
                              capture_output=True, text=True, env=env, timeout=600)

    quiet = mine()
    assert quiet.returncode == 0, quiet.stderr
    assert "[soads] mine (soads): 3 patterns" in quiet.stderr  # the CLI's own progress line
    assert "[Stage " not in quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if " INFO " in line]
    verbose = mine("-v")
    assert verbose.returncode == 0, verbose.stderr
    assert " INFO " in verbose.stderr and "[Stage " not in verbose.stderr


# -- env.sh: this clone's soads and jobs in the user's shell -----------------------------------


def test_env_sh_puts_this_clone_first_and_sets_the_spark_variables(tmp_path):
    import subprocess
    import sys

    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    venv = os.path.dirname(os.path.dirname(sys.executable))
    if not os.path.exists(os.path.join(venv, "bin", "activate")):
        # make test runs the suite in the project's venv: under CI this fails, never skips
        fail_or_skip(f"the interpreter running the tests is not a venv's ({sys.executable}): "
                     "run the tests with make test")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "venv").symlink_to(venv)
    script = (f"source {repo}/env.sh && cd / && "
              "python -c 'import soads, os; print(soads.__file__); "
              "print(os.environ[\"PYSPARK_PYTHON\"], os.environ[\"SPARK_LOCAL_IP\"])' && "
              "command -v soads && soads jobs --dir /nonexistent-soads-jobs")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                         env={**env, "SOADS_CACHE": str(cache)})
    module, spark_vars, soads_bin, jobs = out.stdout.splitlines()
    assert jobs == "no jobs running (pid files in /nonexistent-soads-jobs)"  # the script runs
    assert module == os.path.join(repo, "soads", "__init__.py")
    assert spark_vars == f"{cache}/venv/bin/python 127.0.0.1"
    assert os.path.samefile(soads_bin, os.path.join(venv, "bin", "soads"))  # the venv's
    # another clone ahead of this one on PYTHONPATH: this clone still comes first
    other = tmp_path / "other-clone"
    (other / "soads").mkdir(parents=True)
    (other / "soads" / "__init__.py").write_text("")
    again = subprocess.run(["bash", "-c", f"source {repo}/env.sh && cd / && python -c "
                            "'import soads; print(soads.__file__)'"], capture_output=True,
                           text=True, check=True, env={**env, "SOADS_CACHE": str(cache),
                                                       "PYTHONPATH": f"{other}:{repo}"})
    assert again.stdout.strip() == os.path.join(repo, "soads", "__init__.py")
    missing = subprocess.run(["bash", "-c", f"source {repo}/env.sh"], capture_output=True,
                             text=True, env={**env, "SOADS_CACHE": str(tmp_path / "none")})
    assert missing.returncode == 1 and "make venv" in missing.stderr


def test_unreachable_database_is_one_line_without_the_password(capsys, monkeypatch, tmp_path):
    # a db_url carries the password the loader filled in: no message may show it
    monkeypatch.setenv("SOADS_DB_PASSWORD", "s3cret-pw")
    monkeypatch.delenv("SOADS_DB_PASSWORD_FILE", raising=False)
    rc = main(["quarantine", "--sensor", "--set",
               "storage.db_url=mysql+pymysql://soads@127.0.0.1:1/soads"])
    err = capsys.readouterr().err
    assert rc == 2 and "s3cret-pw" not in err
    assert "mysql+pymysql://soads:***@127.0.0.1:1/soads" in err
    # an error no command expected (a file where a directory belongs): one line, status 2
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    rc = main(["jobs", "--dir", str(not_a_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().splitlines() == [
        f"soads jobs: NotADirectoryError: [Errno 20] Not a directory: '{not_a_dir}'"]


def test_score_against_a_model_run_that_does_not_exist_is_one_line(capsys, tmp_path):
    import datetime as dt

    from soads.storage import tables

    url = f"sqlite:///{tmp_path}/s.db"
    tables.create_tables(tables.engine(url))
    tables.write_rows(url, "mining_run", [{S.RUN_ID: "r", S.CREATED_AT: dt.datetime(2024, 1, 1)}])
    code, out, err = run(capsys, "score", "--set", f"storage.db_url={url}",
                         "--model-run", "context-nope")
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [
        "soads score: no detector model run 'context-nope' in table detector_run "
        "(soads fit-detector makes one)"]


def test_score_input_against_a_stored_model_run(capsys, tmp_path):
    # a model run fitted on 300 normal paths, stored; the file holds only odd cases, so a model
    # fitted on the file itself would find nothing odd: the stored run flags them
    from soads import pipeline, query
    from soads.config import DetectorConf
    from soads.detect import context
    from soads.detect.spark import Fit

    url = f"sqlite:///{tmp_path}/m.db"
    model = context.ContextModel.fit([(["A", "B", "C"], [{"res": "r1"}, {"res": "r2"},
                                                         {"res": "r3"}])] * 300)
    pipeline.write_model_run(url, "context-t", Fit(model, (), None, 300), DetectorConf(), 0.1)
    odd = [{"oid": "o1", "sequence": ["A", "C", "B"]},
           {"oid": "o2", "sequence": ["A", "B", "C"],
            "attributes": [{"res": "r1"}, {"res": "r1"}, {"res": "r3"}]}]
    path = tmp_path / "odd.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in odd))
    stored = query.detector_model(url, "context-t")
    for which in ("context-t", "newest"):
        rows, _ = _score_rows(capsys, tmp_path, path, "--model-run", which,
                              "--set", f"storage.db_url={url}")
        want = context.score_cases(stored, [(x["sequence"], x.get("attributes")) for x in odd])
        assert [(r[S.ANOMALY], r[S.IS_ANOMALY], r[S.EXPLANATION]) for r in rows] == \
            [(v.anomaly, v.is_anomaly, v.explanation) for v in want]
        assert [r[S.IS_ANOMALY] for r in rows] == [True, True]
    code, _, err = run(capsys, "score", "--input", str(path), "--out", str(tmp_path / "x"),
                       "--model-run", "newest",
                       "--set", f"storage.db_url=sqlite:///{tmp_path}/e.db")
    assert code == 2 and "no detector model run" in err


def test_demo_report_shows_every_detector_side_by_side_and_where_objects_were_flagged():
    from soads.cli import format_report
    from soads.evaluate import detection_quality, noise_false_positives
    from soads.pipeline import Report

    labels, types = [0, 0, 0, 1, 1], ["", "", "", "skipped_stage", "wrong_biz_step"]
    verdicts = [False, True, False, True, True]
    report = Report(model_run_id="context-x")
    report.quality = {
        "alignment": detection_quality(labels, types, [0.1, 0.2, 0.3, 0.4, 0.5]),
        "surprisal": detection_quality(labels, types, [0.1, 0.2, 0.3, 0.9, 0.0]),
        "context": detection_quality(labels, types, [0.0, 5.0, 0.0, 6.0, 7.0], verdicts)}
    report.noise = {"context": noise_false_positives(labels, ["", "missed_read", "", "", ""],
                                                     verdicts)}
    report.anomaly_rates = [{S.READ_POINT: "urn:epc:id:sgln:1.2.CNV-L2-ASM", S.FLAGGED: 2,
                             S.N_OBJECTS: 5}]
    text = format_report(report)
    lines = text.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split() == ["alignment", "surprisal",
                                                                 "context"])
    assert lines[head + 1].split() == ["anomaly", "type", "n"] + ["ROC-AUC", "best", "F1"] * 3 \
        + ["P", "R", "F1"]
    assert lines[head + 2].split() == ["all", "2", "1.0000", "1.0000", "0.5000", "0.6667",
                                       "1.0000", "1.0000", "0.667", "1.000", "0.800"]
    assert [ln.split()[0] for ln in lines[head + 3:head + 5]] == ["skipped_stage",
                                                                  "wrong_biz_step"]
    assert "context 1/1 (100.0%; clean normal 0.0%)" in text
    assert "model run context-x" in text
    assert lines[-1].split() == ["2", "of", "5", "(40.0%)", "CNV-L2-ASM"]


def test_fit_detector_then_score_against_the_new_run(capsys, tmp_path, spark):
    from soads import query
    from soads.simulator.generate import simulate

    simulate(str(tmp_path / "plant"), n_objects=40, seed=4)
    url = f"sqlite:///{tmp_path}/soads.db"
    conf = ["--set", f"storage.root={tmp_path / 'data'}", "--set", f"storage.db_url={url}",
            "--set", "mining.minsup=0.2"]
    code, _, err = run(capsys, "ingest", str(tmp_path / "plant"), *conf)
    assert code == 0, err
    code, out, err = run(capsys, "score", *conf)
    assert code == 2 and "no mining run" in err  # nothing mined yet: nothing to score against
    code, out, err = run(capsys, "fit-detector", *conf)
    assert code == 0, err
    first = query.newest_detector_run(url)
    assert out.startswith(f"detector model run {first[S.RUN_ID]}: ")
    assert first[S.N_OBJECTS] == 40
    code, out, err = run(capsys, "mine", *conf)  # mining fits a model run too
    assert code == 0, err
    second = query.newest_detector_run(url)
    assert second[S.RUN_ID] != first[S.RUN_ID] and f"model run {second[S.RUN_ID]}" in out
    for which, want in ((None, second), (first[S.RUN_ID], first)):
        code, out, err = run(capsys, "score", *conf, *(["--model-run", which] if which else []))
        assert code == 0, err
        assert f"against model run {want[S.RUN_ID]}" in out
        rows = query.object_scores(url)
        assert len(rows) == 40 and {r[S.MODEL_RUN_ID] for r in rows} == {want[S.RUN_ID]}
        assert query.anomaly_rates(url, want[S.RUN_ID]) != []
