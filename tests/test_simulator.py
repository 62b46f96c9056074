"""Battery factory simulator: determinism, ground truth, paths, and the EPCIS documents."""
import csv
import hashlib
import json
import os
from collections import Counter, defaultdict
from datetime import datetime

import pytest
from lxml import etree

from soads.schema import ANOMALY_TYPE, LABEL, NOISE, OID
from soads.simulator.generate import (
    ANOMALY_TYPES, EPCIS_JSONLD_CONTEXT, EPCIS_XML_NS, NOISE_TYPES, iter_documents, iter_objects,
    iter_sequences, simulate,
)
from soads.simulator.plant import (
    REWORK, STAGES, build_plant, preferred_facility, process_relations, rework_targets,
    unknown_read_points,
)

NS = {"epcis": EPCIS_XML_NS}


def _digest(out_dir):
    h = hashlib.sha256()
    for name in sorted(os.listdir(out_dir)):
        h.update(name.encode())
        with open(os.path.join(out_dir, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def _xml_events(data):
    """(eventTime as datetime, [epc], read point) per ObjectEvent of one XML document."""
    root = etree.fromstring(data)
    assert root.tag == f"{{{EPCIS_XML_NS}}}EPCISDocument"
    out = []
    for ev in root.iterfind("EPCISBody/EventList/ObjectEvent"):
        out.append((datetime.fromisoformat(ev.findtext("eventTime")),
                    [e.text for e in ev.iterfind("epcList/epc")], ev.findtext("readPoint/id")))
    return out


def _relations(seq):
    return list(zip(seq, seq[1:]))


# -- the plant -----------------------------------------------------------------------------------


def test_plant_facilities_and_routing():
    plant = build_plant(7)
    assert [len(f) for f in plant.facilities] == [20, 24, 8, 4, 6, 7, 7]
    for line in range(plant.n_lines):
        for k, spec in enumerate(STAGES):
            probs = plant.facility_probabilities(line, k)
            assert sum(probs.values()) == pytest.approx(1.0)
            pref = plant.facilities[k][preferred_facility(line, spec.n_facilities)].urn
            assert probs[pref] == pytest.approx(0.5)
            # the others: weights 5-25 normalised to share the other 50%
            others = [p for urn, p in probs.items() if urn != pref]
            assert max(others) / min(others) <= 25 / 5 + 1e-9
    assert build_plant(7).routing == plant.routing
    assert build_plant(8).routing != plant.routing


def test_rework_probabilities_are_the_papers():
    def probs(code):
        targets, cum = rework_targets([s.code for s in STAGES].index(code))
        steps = [round(b - a, 10) for a, b in zip((0.0,) + cum[:-1], cum)]
        return {STAGES[t].code: p for t, p in zip(targets, steps)}

    assert probs("IRT") == {"RTA": 0.5, "HTA": 0.27, "IRT": 0.23}
    assert probs("CDC") == {"RTA": 0.5, "HTA": 0.27, "CDC": 0.15, "IRT": 0.08}
    assert probs("INS") == {"RTA": 0.32, "HTA": 0.21, "IRT": 0.12, "CDC": 0.35}
    assert not set(unknown_read_points()) & set(build_plant(7).read_points)


# -- arguments -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"n_objects": 0}, "n_objects"),
    ({"anomaly_rate": 1.5}, "anomaly_rate"),
    ({"noise_rate": -0.1}, "noise_rate"),
    ({"attribute_anomaly_rate": 2}, "attribute_anomaly_rate"),
    ({"fmt": "csv"}, "fmt"),
    ({"events_per_file": 0}, "events_per_file"),
])
def test_bad_arguments_raise(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate(str(tmp_path), **kwargs)
    with pytest.raises(ValueError, match=message):
        next(iter_documents(**kwargs))


def test_earlier_output_is_replaced_not_mixed(tmp_path):
    (tmp_path / "notes.txt").write_text("kept")
    simulate(str(tmp_path), n_objects=50, events_per_file=100)
    assert "events-00001.xml" in os.listdir(tmp_path)
    with pytest.raises(ValueError, match="overwrite"):
        simulate(str(tmp_path), n_objects=5, overwrite=False)
    stats = simulate(str(tmp_path), n_objects=5, fmt="jsonld")
    assert sorted(os.listdir(tmp_path)) == ["events-00000.jsonld", "notes.txt", "truth.csv"]
    assert stats["objects"] == 5


# -- determinism and ground truth ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["xml", "jsonld"])
def test_same_seed_gives_identical_bytes(tmp_path, fmt):
    a = simulate(str(tmp_path / "a"), n_objects=400, seed=11, fmt=fmt, events_per_file=2000)
    b = simulate(str(tmp_path / "b"), n_objects=400, seed=11, fmt=fmt, events_per_file=2000)
    c = simulate(str(tmp_path / "c"), n_objects=400, seed=12, fmt=fmt, events_per_file=2000)
    assert a["documents"] > 1
    assert _digest(a["out_dir"]) == _digest(b["out_dir"])
    assert _digest(a["out_dir"]) != _digest(c["out_dir"])


def test_truth_csv_format_and_counts(tmp_path):
    stats = simulate(str(tmp_path), n_objects=2000, seed=7, anomaly_rate=0.2, noise_rate=0.1)
    with open(tmp_path / "truth.csv", newline="") as f:
        header = f.readline()
        rows = list(csv.DictReader(f, fieldnames=header.strip().split(",")))
    # the first three columns as before; noise added after them
    assert header == "oid,label,anomaly_type,noise\n"
    assert header.strip().split(",") == [OID, LABEL, ANOMALY_TYPE, NOISE]
    assert len(rows) == stats["objects"] == 2000
    assert len({r[OID] for r in rows}) == 2000
    assert {r[LABEL] for r in rows} == {"0", "1"}
    assert all((r[LABEL] == "1") == (r[ANOMALY_TYPE] != "") for r in rows)
    assert Counter(r[ANOMALY_TYPE] for r in rows if r[ANOMALY_TYPE]) == stats["anomalies"]
    assert sum(stats["noise"].values()) > 0 and set(stats["noise"]) == set(NOISE_TYPES)
    assert stats["epcis_events"] <= stats["events"]


def test_anomaly_fraction_and_even_types():
    objs = list(iter_objects(10000, seed=5, anomaly_rate=0.04, noise_rate=0.05))
    counts = Counter(o.anomaly_type for o in objs if o.label)
    assert 0.035 <= sum(counts.values()) / len(objs) <= 0.045
    assert set(counts) == set(ANOMALY_TYPES)
    assert max(counts.values()) - min(counts.values()) <= 1
    noise = Counter(o.noise for o in objs if o.noise)
    assert 0.04 <= sum(noise.values()) / len(objs) <= 0.06
    assert max(noise.values()) - min(noise.values()) <= 1
    assert all(o.label == 0 for o in iter_objects(300, seed=5, anomaly_rate=0.0))


# -- paths ---------------------------------------------------------------------------------------


def test_normal_sequences_have_15_to_20_reads():
    plant = build_plant(7)
    plain = [o for o in iter_objects(5000, seed=7) if not o.label
             and not any(rp.kind == REWORK for _, rp, _ in o.reads)]
    lengths = Counter(len(o.reads) for o in plain)
    assert sum(n for k, n in lengths.items() if 15 <= k <= 20) / len(plain) >= 0.95
    assert all(15 <= len(o.reads) <= 20 for o in plain if not o.noise)
    assert {15, 20} <= set(lengths)
    # every cell starts at its line's entry conveyor and ends in the finished-goods stocker
    assert all(o.reads[0][1] == plant.conveyors[o.line][0] and o.reads[-1][1] == plant.exit
               for o in plain if not o.noise)


def test_process_model_holds_except_for_anomalies():
    plant = build_plant(7)
    allowed = process_relations(plant)
    truth = {o.oid: o for o in iter_objects(6000, seed=7, anomaly_rate=0.1, noise_rate=0.2)}
    seen_rework = False
    for oid, seq in iter_sequences(6000, seed=7, anomaly_rate=0.1, noise_rate=0.2):
        obj = truth[oid]
        bad = [r for r in _relations(seq) if r not in allowed]
        unknown = [rp for rp in seq if rp not in plant.read_points]
        seen_rework |= any(rp == plant.rework[4].urn for rp in seq)
        if obj.label:
            # every anomaly breaks the process model
            assert bad, (obj.anomaly_type, seq)
            assert (len(unknown) == 1) == (obj.anomaly_type == "unknown_read_point")
        elif obj.noise == "missed_read":
            # at most the one relation bridging the missed conveyor read
            assert len(bad) <= 1 and not unknown
        else:
            # repeated reads vanish in the dwell de-duplication
            assert not bad and not unknown, (obj.noise, seq)
    assert seen_rework


def test_repeated_reads_fall_inside_the_dwell_window():
    objs = [o for o in iter_objects(3000, seed=3, noise_rate=0.3) if o.noise == "repeated_read"]
    assert objs
    for o in objs:
        pairs = [(a, b) for a, b in zip(o.reads, o.reads[1:]) if a[1] is b[1]]
        assert len(pairs) == 1
        (ta, _, _), (tb, _, _) = pairs[0]
        assert 1000 < tb - ta <= 60_000


# -- documents ------------------------------------------------------------------------------------


def test_xml_documents_match_the_ground_truth():
    plant = build_plant(9)
    kwargs = dict(n_objects=1500, seed=9, anomaly_rate=0.2, noise_rate=0.2)
    docs = list(iter_documents(fmt="xml", events_per_file=3000, **kwargs))
    assert [name for name, _ in docs][:2] == ["events-00000.xml", "events-00001.xml"]
    reads, times, sizes = defaultdict(list), [], Counter()
    for name, data in docs:
        events = _xml_events(data)
        assert 0 < len(events) <= 3000
        for when, epcs, rp in events:
            assert when.utcoffset().total_seconds() == 9 * 3600
            times.append(when)
            sizes[len(epcs)] += 1
            for epc in epcs:
                reads[epc].append(rp)
    # event times never decrease, within and across documents
    assert times == sorted(times)
    # one read cycle, one event: some events carry several EPCs
    assert sizes[1] > 0 and sum(n for k, n in sizes.items() if k > 1) > 0
    truth = {o.oid: o for o in iter_objects(**kwargs)}
    raw = dict(iter_sequences(dwell_seconds=None, **kwargs))
    assert reads == raw
    for oid, seq in raw.items():
        unknown = [rp for rp in seq if rp not in plant.read_points]
        assert not unknown or truth[oid].anomaly_type == "unknown_read_point"


def test_jsonld_documents(tmp_path):
    stats = simulate(str(tmp_path), n_objects=200, seed=7, fmt="jsonld", events_per_file=1000)
    names = sorted(n for n in os.listdir(tmp_path) if n.endswith(".jsonld"))
    assert len(names) == stats["documents"] >= 2
    n_reads = 0
    for name in names:
        with open(tmp_path / name, "rb") as f:
            doc = json.load(f)
        assert doc["@context"] == EPCIS_JSONLD_CONTEXT and doc["type"] == "EPCISDocument"
        for ev in doc["epcisBody"]["eventList"]:
            assert ev["type"] == "ObjectEvent" and ev["action"] == "OBSERVE"
            assert ev["eventTimeZoneOffset"] == "+09:00" and ev["eventTime"].endswith("+09:00")
            assert ev["bizStep"].startswith("urn:epcglobal:cbv:bizstep:")
            n_reads += len(ev["epcList"])
    assert n_reads == stats["events"]


def test_streams_documents_before_all_objects_enter():
    entered, first_at = [], []
    for _ in iter_documents(n_objects=5000, seed=7, events_per_file=500,
                            on_object=entered.append):
        first_at.append(len(entered))
        break
    assert first_at[0] < 1000


def test_progress_reports_finished_objects(tmp_path):
    calls = []
    simulate(str(tmp_path), n_objects=25, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (25, 25)


def test_single_object(tmp_path):
    stats = simulate(str(tmp_path), n_objects=1, anomaly_rate=0.0, noise_rate=0.0)
    assert stats["objects"] == 1 and 15 <= stats["events"] <= 20 and stats["documents"] == 1


def test_a_later_start_moves_every_event_time_and_nothing_else():
    import datetime as dt

    from soads import epcis

    start = dt.datetime(2026, 11, 22, 1, 2, 3, 456000, tzinfo=dt.timezone.utc)
    base = list(iter_documents(60, seed=3, events_per_file=50))
    moved = list(iter_documents(60, seed=3, events_per_file=50, start=start))
    assert [n for n, _ in base] == [n for n, _ in moved]
    shift = None
    for (_, a), (_, b) in zip(base, moved):
        ea, _ = epcis.parse_document(a, "t", 1 << 24)
        eb, _ = epcis.parse_document(b, "t", 1 << 24)
        for x, y in zip(ea, eb, strict=True):
            tx, ty = (dt.datetime.fromisoformat(e["event_time"].replace("Z", "+00:00"))
                      for e in (x, y))
            shift = shift or ty - tx
            assert ty - tx == shift
            assert {k: v for k, v in x.items() if k != "event_time"} == \
                {k: v for k, v in y.items() if k != "event_time"}
    # the default plant start is 2024-03-04 08:00 +09:00; the first read is at time 0
    first = epcis.parse_document(moved[0][1], "t", 1 << 24)[0][0]["event_time"]
    assert first == "2026-11-22T01:02:03.456Z"
    with pytest.raises(ValueError, match="aware"):
        next(iter_documents(5, start=dt.datetime(2026, 1, 1)))


def test_first_serial_renumbers_the_objects_and_changes_nothing_else():
    base = list(iter_objects(40, seed=3))
    moved = list(iter_objects(40, seed=3, first_serial=1000))
    assert [o.oid.rsplit(".", 1)[1] for o in moved] == [str(i) for i in range(1000, 1040)]
    assert [o._replace(oid="") for o in base] == [o._replace(oid="") for o in moved]
    # the documents: the same reads, the same times, only the EPCs renumbered
    docs = [d for _, d in iter_documents(40, seed=3, events_per_file=30)]
    renamed = [d for _, d in iter_documents(40, seed=3, events_per_file=30, first_serial=1000)]
    for a, b in zip(docs, renamed, strict=True):
        for o, m in zip(reversed(base), reversed(moved)):  # .40 before .4: no prefix clash
            a = a.replace(f"{o.oid}<".encode(), f"{m.oid}<".encode())
        assert a == b


def test_run_first_serial_keeps_the_demo_ids_and_separates_other_runs():
    import datetime as dt

    from soads.simulator.generate import SERIAL_BLOCK, default_start, run_first_serial

    assert run_first_serial(7) == run_first_serial(7, default_start()) == 1
    later = default_start() + dt.timedelta(days=1)
    firsts = [run_first_serial(seed, start) for seed in (7, 8, 9) for start in (None, later)]
    assert len(set(firsts)) == 6
    # each run's block holds SERIAL_BLOCK serials: two runs' ids never meet
    assert all(f == 1 or (f - 1) % SERIAL_BLOCK == 0 for f in firsts)
    assert run_first_serial(8, later) == run_first_serial(8, later.astimezone(dt.timezone.utc))


def test_timed_documents_carry_their_last_event_time_for_the_real_time_pace():
    import datetime as dt

    from soads import epcis
    from soads.simulator.publish import keep_with_clock

    start = dt.datetime(2026, 11, 29, 20, 0, tzinfo=dt.timezone.utc)
    timed = list(iter_documents(60, seed=3, events_per_file=40, start=start, timed=True))
    assert [(n, d) for n, d, _ in timed] == list(iter_documents(60, seed=3, events_per_file=40,
                                                                start=start))
    for _, doc, time_ms in timed:
        events, _ = epcis.parse_document(doc, "t", 1 << 24)
        last = max(dt.datetime.fromisoformat(e["event_time"].replace("Z", "+00:00"))
                   for e in events)
        assert last == start + dt.timedelta(milliseconds=time_ms)
    # released when the wall clock has moved as far as the document's last event
    clock = [100.0]
    released = [(name, clock[0]) for name, _ in keep_with_clock(
        timed, clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))]
    assert [n for n, _ in released] == [n for n, _, _ in timed]
    assert [t - 100.0 for _, t in released] == pytest.approx([ms / 1000 for *_, ms in timed])


# -- attribute anomalies ---------------------------------------------------------------------------


def _expected_fields(plant, urn, stage_of):
    """What the plant's read point ``urn`` always reports: bizStep, bizLocation, action, and its
    allowed dispositions."""
    from soads.simulator.plant import OBSERVE, normal_dispositions

    rp = plant.read_points[urn]
    dispositions = normal_dispositions(rp.kind, stage_of.get(urn, -1))
    return rp.biz_step, rp.biz_location, OBSERVE, dispositions


def _stage_of(plant):
    return {f.urn: k for k, stage in enumerate(plant.facilities) for f in stage}


ATTRIBUTE_KWARGS = dict(seed=7, anomaly_rate=0.05, noise_rate=0.3, attribute_anomaly_rate=0.2)


def test_every_read_point_reports_the_same_fields_noise_included():
    from soads.schema import ACTION, BIZ_LOCATION, BIZ_STEP, DISPOSITION
    from soads.simulator.generate import iter_cases

    plant = build_plant(7)
    stage_of = _stage_of(plant)
    seen_noise = Counter()
    for obj, seq, attrs in iter_cases(3000, **ATTRIBUTE_KWARGS):
        if obj.label:
            continue
        seen_noise[obj.noise] += 1
        assert len(seq) == len(attrs)
        for urn, a in zip(seq, attrs):
            step, location, action, dispositions = _expected_fields(plant, urn, stage_of)
            assert (a[BIZ_STEP], a[BIZ_LOCATION], a[ACTION]) == (step, location, action)
            assert a[DISPOSITION] in dispositions
    # reader noise (repeated and missed reads) changes no event field
    assert seen_noise["repeated_read"] > 100 and seen_noise["missed_read"] > 100
    # a conveyor's location is its line's; facilities are the hall's
    assert plant.conveyors[1][3].biz_location == "urn:epc:id:sgln:8801234.00002.L2"
    assert plant.facilities[3][0].biz_location == "urn:epc:id:sgln:8801234.00002.0"


def test_attribute_anomalies_are_injected_labelled_and_wrong_at_their_read_point():
    from soads.schema import ACTION, BIZ_LOCATION, BIZ_STEP, DISPOSITION
    from soads.simulator.generate import ATTRIBUTE_ANOMALY_TYPES, iter_cases
    from soads.simulator.plant import BIZ_STEPS, DISPOSITIONS, line_location

    plant = build_plant(7)
    stage_of = _stage_of(plant)
    allowed = process_relations(plant)
    field = {"wrong_biz_step": BIZ_STEP, "wrong_disposition": DISPOSITION,
             "wrong_biz_location": BIZ_LOCATION, "wrong_action": ACTION}
    counts, wrong_values = Counter(), defaultdict(set)
    n = 4000
    for obj, seq, attrs in iter_cases(n, **ATTRIBUTE_KWARGS):
        if obj.anomaly_type not in ATTRIBUTE_ANOMALY_TYPES:
            continue
        counts[obj.anomaly_type] += 1
        assert obj.label == 1
        # the path itself is normal (a missed read may bridge one conveyor, as for any cell)
        bad = [r for r in _relations(seq) if r not in allowed]
        assert len(bad) <= (obj.noise == "missed_read")
        wrong = []
        for i, (urn, a) in enumerate(zip(seq, attrs)):
            step, location, action, dispositions = _expected_fields(plant, urn, stage_of)
            wrong += [(i, urn, k) for k, ok in ((BIZ_STEP, a[BIZ_STEP] == step),
                                                (BIZ_LOCATION, a[BIZ_LOCATION] == location),
                                                (ACTION, a[ACTION] == action),
                                                (DISPOSITION, a[DISPOSITION] in dispositions))
                      if not ok]
        # exactly one visit, one field: the type's, with a value the read point never reports
        assert len(wrong) == 1, (obj.anomaly_type, wrong)
        i, urn, key = wrong[0]
        assert key == field[obj.anomaly_type]
        value = attrs[i][key]
        wrong_values[obj.anomaly_type].add(value)
        if key == BIZ_STEP:
            assert value in BIZ_STEPS
        elif key == DISPOSITION:
            assert value in DISPOSITIONS
        elif key == BIZ_LOCATION:
            # the right station (the cell's own line's conveyor), another line's location
            assert urn in {rp.urn for rp in plant.conveyors[obj.line]}
            area = urn.rsplit(".", 2)[1]
            assert value in {line_location(area, x) for x in range(plant.n_lines) if x != obj.line}
        else:
            assert 0 < i < len(seq) - 1 and value in ("ADD", "DELETE")
    # every type, spread evenly, in attribute_anomaly_rate of the cells without a process anomaly
    assert set(counts) == set(ATTRIBUTE_ANOMALY_TYPES)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert 0.15 <= sum(counts.values()) / (n * 0.95) <= 0.25
    assert all(len(v) > 1 for v in wrong_values.values())


def test_attribute_anomalies_leave_every_other_cell_as_it_was():
    kwargs = dict(seed=5, anomaly_rate=0.1, noise_rate=0.3)
    plain = list(iter_objects(1500, attribute_anomaly_rate=0.0, **kwargs))
    mixed = list(iter_objects(1500, attribute_anomaly_rate=0.3, **kwargs))
    changed, moved_miss = 0, 0
    for a, b in zip(plain, mixed, strict=True):
        if b.anomaly_type and not a.anomaly_type:
            # the same path, times and noise; only the label and one read's fields
            changed += 1
            assert a.noise == b.noise and b.label == 1
            path_a = [(t, rp.urn) for t, rp, _ in a.reads]
            path_b = [(t, rp.urn) for t, rp, _ in b.reads]
            if path_a != path_b:
                # ... unless the missed read fell on the changed read: the next conveyor is
                # missed instead
                moved_miss += 1
                assert a.noise == "missed_read"
                urns_a, urns_b = Counter(u for _, u in path_a), Counter(u for _, u in path_b)
                assert [k for k, v in (urns_a - urns_b).items() for _ in range(v)] == \
                    [u for u in urns_a - urns_b if "CNV" in u]
                assert sum((urns_a - urns_b).values()) == sum((urns_b - urns_a).values()) == 1
        else:
            assert a == b
    assert changed > 300 and moved_miss < 10
    # deterministic per seed, attribute anomalies included
    docs = [list(iter_documents(200, seed=s, attribute_anomaly_rate=0.3, events_per_file=500))
            for s in (5, 5, 6)]
    assert docs[0] == docs[1] != docs[2]
    # the sequences' read points do not depend on the attribute anomalies but for those moves
    differ = [oid for (oid, x), (_, y) in zip(iter_sequences(1500, attribute_anomaly_rate=0.0,
                                                             **kwargs),
                                              iter_sequences(1500, attribute_anomaly_rate=0.3,
                                                             **kwargs)) if x != y]
    assert len(differ) == moved_miss


@pytest.mark.parametrize("fmt", ["xml", "jsonld"])
def test_documents_carry_the_attribute_anomalies(tmp_path, fmt):
    """Parsed back (soads.epcis), each visit's first read has the fields iter_cases gives."""
    from soads import epcis
    from soads import schema as S
    from soads.sequences import arrival_key
    from soads.simulator.generate import iter_cases

    kwargs = dict(seed=3, anomaly_rate=0.05, noise_rate=0.3, attribute_anomaly_rate=0.3)
    simulate(str(tmp_path), n_objects=600, fmt=fmt, events_per_file=2500, **kwargs)
    reads = defaultdict(list)
    for name in sorted(os.listdir(tmp_path)):
        if name.startswith("events-"):
            events, bad = epcis.parse_document((tmp_path / name).read_bytes(), name, 1 << 26)
            assert not bad
            for e in events:
                reads[e[S.OID]].append(e)
    n_wrong_action = 0
    for obj, seq, attrs in iter_cases(600, **kwargs):
        got = sorted(reads[obj.oid], key=lambda e: (e[S.EVENT_TIME], arrival_key(e[S.SOURCE])))
        t = [datetime.fromisoformat(e[S.EVENT_TIME].replace("Z", "+00:00")).timestamp()
             for e in got]
        first = [e for k, e in enumerate(got) if k == 0 or e[S.READ_POINT] != got[k - 1][
            S.READ_POINT] or t[k] - t[k - 1] > 60]
        assert [e[S.READ_POINT] for e in first] == seq
        assert [{k: e[k] for k in a} for e, a in zip(first, attrs)] == attrs
        n_wrong_action += obj.anomaly_type == "wrong_action"
    assert n_wrong_action > 10
    with open(tmp_path / "truth.csv", newline="") as f:
        truth = list(csv.DictReader(f))
    assert Counter(r[NOISE] for r in truth if r[NOISE]) == \
        Counter(o.noise for o, _, _ in iter_cases(600, **kwargs) if o.noise)
    assert any(r[NOISE] and r[LABEL] == "0" for r in truth)
