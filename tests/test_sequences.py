import datetime as dt
import random

import numpy as np
from pyspark.testing import assertDataFrameEqual

from soads import schema as S
from soads.sequences import (arrival_key, dedup_dwell, extract_sequences, sequence_of,
                             visit_mask, read_sequences_jsonl)

T0 = dt.datetime(2024, 1, 1)


def t(seconds):
    return T0 + dt.timedelta(seconds=seconds)


def test_dedup_dwell_merges_only_consecutive_reads_within_dwell():
    assert dedup_dwell(["a", "a", "a", "b"], [0, 30, 60, 70], 60) == ["a", "b"]
    # the gap is measured between consecutive reads: a tag sitting in the field is one visit
    assert dedup_dwell(["a", "a", "a"], [0, 50, 100], 60) == ["a"]
    assert dedup_dwell(["a", "a"], [0, 61], 60) == ["a", "a"]
    assert dedup_dwell(["a", "b", "a"], [0, 1, 2], 60) == ["a", "b", "a"]
    assert dedup_dwell([], [], 60) == []
    assert dedup_dwell(["a", "a"], [0, 0], 0) == ["a"]


def test_ties_keep_arrival_order():
    assert arrival_key("dir/f.xml:12") == ("dir/f.xml", 12)
    assert arrival_key("events/0/41") == ("events/0", 41)
    reads = [("c", 5.0, "f:30"), ("b", 5.0, "f:9"), ("a", 1.0, "f:100")]
    assert sequence_of(reads, 60) == ["a", "b", "c"]


def test_visit_mask_equals_list_core_on_random_objects():
    rng = random.Random(3)
    for _ in range(50):
        rows = []
        for o in range(rng.randint(1, 6)):
            tm = 0
            for _ in range(rng.randint(1, 12)):
                tm += rng.choice([0, 5, 30, 59, 60, 61, 300])
                rows.append((f"o{o}", rng.choice("abc"), tm))
        oids = np.array([r[0] for r in rows], dtype=object)
        rps = np.array([r[1] for r in rows], dtype=object)
        tus = np.array([r[2] * 1_000_000 for r in rows], dtype=np.int64)
        mask = visit_mask(oids, rps, tus, 60)
        for o in set(oids):
            idx = np.flatnonzero(oids == o)
            expected = dedup_dwell(list(rps[idx]), [r[2] for r in np.array(rows, dtype=object)[idx]], 60)
            assert list(rps[idx][mask[idx]]) == expected


def test_extract_sequences_exact_rows(spark):
    events = spark.createDataFrame(
        [("o1", "A", t(0), "f.xml:1"), ("o1", "A", t(30), "f.xml:5"), ("o1", "B", t(300), "f.xml:9"),
         ("o1", "A", t(900), "f.xml:20"),
         ("o2", "C", t(10), "g.xml:100"), ("o2", "B", t(10), "g.xml:20"),  # tie: arrival order
         ("o3", "D", t(5), "g.xml:7")],
        "oid string, read_point string, event_time timestamp, source string")
    got = extract_sequences(events, dwell_seconds=60)
    # no attribute columns in this log: one empty attribute map per visit
    expected = spark.createDataFrame(
        [("o1", ["A", "B", "A"], [{}] * 3, t(0), t(900)),
         ("o2", ["B", "C"], [{}] * 2, t(10), t(10)),
         ("o3", ["D"], [{}], t(5), t(5))], S.sequence_struct())
    assertDataFrameEqual(got, expected)


def test_read_sequences_jsonl_takes_input_as_given(spark, tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"oid": "x", "sequence": ["a", "a", "b"]}\n{"oid": "y", "sequence": []}\n')
    rows = sorted((r[S.OID], list(r[S.SEQUENCE])) for r in read_sequences_jsonl(spark, str(p)).collect())
    assert rows == [("x", ["a", "a", "b"]), ("y", [])]


def test_read_sequences_jsonl_rejects_bad_lines(spark, tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"oid": "x", "sequence": ["a"]}\nnot json\n')
    import pytest
    with pytest.raises(ValueError, match="not a sequence line"):
        read_sequences_jsonl(spark, str(p))


# -- attributes per visit --------------------------------------------------------------------------


def _events_of(spark, paths):
    from soads import preprocess

    events, _ = preprocess.split_parsed(preprocess.parse_documents(
        preprocess.read_documents(spark, paths)))
    return events


def _visits_by_hand(rows, dwell_seconds):
    """The slow, obvious extractor: per oid, sort, keep a read unless it repeats the previous
    read point within the dwell, and take the kept read's non-null fields."""
    import json
    from collections import defaultdict

    by_oid = defaultdict(list)
    for r in rows:
        by_oid[r[S.OID]].append(r)
    out = {}
    for oid, reads in by_oid.items():
        reads.sort(key=lambda r: (r[S.EVENT_TIME], arrival_key(r[S.SOURCE])))
        seq, attrs, prev = [], [], None
        for r in reads:
            if prev is None or r[S.READ_POINT] != prev[S.READ_POINT] or \
                    (r[S.EVENT_TIME] - prev[S.EVENT_TIME]).total_seconds() > dwell_seconds:
                a = {k: r[k] for k in (S.BIZ_STEP, S.DISPOSITION, S.BIZ_LOCATION, S.ACTION)
                     if r[k] is not None}
                alerts = sorted({rep["exception"] for el in json.loads(r[S.SENSOR_REPORTS] or "[]")
                                 for rep in el["sensorReport"] if "exception" in rep})
                if alerts:
                    a[S.SENSOR_ALERT] = ",".join(alerts)
                seq.append(r[S.READ_POINT])
                attrs.append(a)
            prev = r
        out[oid] = (seq, attrs)
    return out


def _extracted(df):
    return {r[S.OID]: (list(r[S.SEQUENCE]), [dict(m) for m in r[S.ATTRIBUTES]])
            for r in df.collect()}


def test_attributes_per_visit_on_the_gs1_examples(spark, epcis_examples):
    events = _events_of(spark, [epcis_examples]).cache()
    got = extract_sequences(events, dwell_seconds=60, num_partitions=3)
    assert got.schema == S.sequence_struct()
    got = _extracted(got)
    assert got == _visits_by_hand(events.collect(), 60)
    # what the examples hold: the sensor alerts of a read, a DELETE, a read without action
    alarm = got["urn:epc:id:sgtin:4012345.011111.9876"][1]
    assert [a[S.SENSOR_ALERT] for a in alarm if S.SENSOR_ALERT in a] == \
        ["ALARM_CONDITION,ERROR_CONDITION"]
    assert all({S.BIZ_STEP, S.ACTION} <= set(a) for a in alarm)
    flat = [a for _, attrs in got.values() for a in attrs]
    assert any(a.get(S.ACTION) == "DELETE" for a in flat)
    assert any(S.ACTION not in a for a in flat)  # a TransformationEvent has no action


def test_attributes_per_visit_on_a_simulated_log(spark, tmp_path):
    from soads.simulator.generate import ATTRIBUTE_ANOMALY_TYPES, iter_cases, simulate

    kwargs = dict(seed=4, anomaly_rate=0.05, noise_rate=0.3, attribute_anomaly_rate=0.3)
    simulate(str(tmp_path), n_objects=300, events_per_file=1500, **kwargs)
    got = _extracted(extract_sequences(_events_of(spark, [str(tmp_path)]), dwell_seconds=60))
    expected = {obj.oid: (seq, attrs) for obj, seq, attrs in iter_cases(300, **kwargs)}
    assert got == expected
    types = {obj.anomaly_type for obj, _, _ in iter_cases(300, **kwargs)}
    assert set(ATTRIBUTE_ANOMALY_TYPES) <= types
