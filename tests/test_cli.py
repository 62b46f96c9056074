"""The ``soads`` command line, as a user runs it (in-process: it reuses the session's Spark)."""
import json
import os

import pytest

from soads import schema as S
from soads.cli import main


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
