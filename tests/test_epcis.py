"""soads.epcis: EPCIS XML / JSON-LD -> flat events | quarantine (pure, no Spark)."""
import json
import os
import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from soads import epcis, schema
from soads.epcis import parse_document, parse_file

DATA = os.path.join(os.path.dirname(__file__), "data", "epcis")

NS2 = "urn:epcglobal:epcis:xsd:2"


def xml_doc(events: str, ns: str = NS2) -> bytes:
    """An EPCIS XML document around ``events`` (the first event starts on line 2)."""
    return (f'<epcis:EPCISDocument xmlns:epcis="{ns}" schemaVersion="2.0">\n'
            f"<EPCISBody><EventList>{events}</EventList></EPCISBody></epcis:EPCISDocument>"
            ).encode()


def object_event(epcs=("urn:epc:id:sgtin:1.2.1",), time="2024-03-01T09:00:00.000+09:00",
                 read_point="rp-1", tag="ObjectEvent") -> str:
    parts = [f"<{tag}>"]
    if time is not None:
        parts.append(f"<eventTime>{time}</eventTime>")
    parts.append("<epcList>" + "".join(f"<epc>{e}</epc>" for e in epcs) + "</epcList>")
    parts.append("<action>OBSERVE</action><bizStep>assembling</bizStep>")
    if read_point is not None:
        parts.append(f"<readPoint><id>{read_point}</id></readPoint>")
    parts.append(f"</{tag}>\n")
    return "".join(parts)


def reasons(quarantine):
    return Counter(q[schema.REASON] for q in quarantine)


def row(oid, read_point, event_time, action, biz_step, disposition, biz_location, event_type,
        sensor_reports, source):
    return dict(zip(schema.EVENT_COLUMNS, (oid, read_point, event_time, action, biz_step,
                                           disposition, biz_location, event_type,
                                           sensor_reports, source)))


# -- the official GS1 examples ------------------------------------------------------------

# file -> (flat events, quarantine reasons): the only quarantine records are valid events
# without an instance-level EPC (class-level quantities, parentID only, sensor-only).
EXPECTED = {
    "jsonld/Example_9.6.1-ObjectEvent.jsonld": (3, {}),
    "jsonld/Example_9.6.3-AggregationEvent.jsonld": (2, {}),
    "jsonld/SensorDataExample1.jsonld": (1, {}),
    "jsonld/SensorDataExample2.jsonld": (1, {}),
    "xml/AggregationEvent.xml": (2, {}),
    "xml/AssociationEventExamples.xml": (7, {"no_instance_epc": 3}),
    "xml/ErrorDeclarationAndCorrectiveEvent.xml": (4, {}),
    "xml/Example_9.6.1-ObjectEvent-2020_06_18a.xml": (3, {}),
    "xml/ObjectEvent.xml": (2, {"no_instance_epc": 1}),
    "xml/SensorDataExamples.xml": (12, {"no_instance_epc": 4}),
    "xml/TransformationEvent.xml": (2, {}),
}


def test_every_example_is_expected(epcis_examples):
    found = sorted(f"{d}/{f}" for d in ("xml", "jsonld")
                   for f in os.listdir(os.path.join(epcis_examples, d)))
    assert found == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_examples_parse(epcis_examples, name):
    events, quarantine = parse_file(os.path.join(epcis_examples, name))
    n_events, expected_reasons = EXPECTED[name]
    assert len(events) == n_events
    assert reasons(quarantine) == Counter(expected_reasons)
    for event in events:
        assert tuple(event) == schema.EVENT_COLUMNS
        assert event[schema.OID] and event[schema.READ_POINT]
        assert datetime.strptime(event[schema.EVENT_TIME], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert event[schema.EVENT_TYPE] in epcis.EVENT_TYPES
    for q in quarantine:
        assert tuple(q) == schema.QUARANTINE_COLUMNS


def test_object_event_xml_rows(epcis_examples):
    path = os.path.join(epcis_examples, "xml", "ObjectEvent.xml")
    events, quarantine = parse_file(path)
    common = dict(read_point="urn:epc:id:sgln:0614141.07346.1234",
                  event_time="2005-04-04T02:33:31.116Z", action="OBSERVE",
                  biz_step="urn:epcglobal:cbv:bizstep:shipping",
                  disposition="urn:epcglobal:cbv:disp:in_transit", biz_location=None,
                  event_type="ObjectEvent", sensor_reports=None, source=f"{path}:7")
    assert events == [row("urn:epc:id:sgtin:0614141.107346.2017", **common),
                      row("urn:epc:id:sgtin:0614141.107346.2018", **common)]
    # the second ObjectEvent only has a class-level quantity: one record, not dropped
    assert [(q[schema.SOURCE], q[schema.REASON]) for q in quarantine] == [
        (f"{path}:27", "no_instance_epc")]
    assert "urn:epc:class" not in quarantine[0][schema.DETAIL]
    assert "1 quantityElement(s) in quantityList" in quarantine[0][schema.DETAIL]


def test_object_event_jsonld_rows(epcis_examples):
    path = os.path.join(epcis_examples, "jsonld", "Example_9.6.1-ObjectEvent.jsonld")
    events, quarantine = parse_file(path)
    first = dict(read_point="urn:epc:id:sgln:0614141.07346.1234",
                 event_time="2005-04-04T02:33:31.116Z", action="OBSERVE",
                 biz_step="urn:epcglobal:cbv:bizstep:shipping",
                 disposition="urn:epcglobal:cbv:disp:in_transit", biz_location=None,
                 event_type="ObjectEvent", sensor_reports=None, source=f"{path}#0")
    assert quarantine == []
    assert events == [
        row("urn:epc:id:sgtin:0614141.107346.2017", **first),
        row("urn:epc:id:sgtin:0614141.107346.2018", **first),
        row("urn:epc:id:sgtin:0614141.107346.2018", "urn:epc:id:sgln:0012345.11111.400",
            "2005-04-05T02:33:31.116Z", "OBSERVE", "urn:epcglobal:cbv:bizstep:receiving",
            "urn:epcglobal:cbv:disp:in_progress", "urn:epc:id:sgln:0012345.11111.0",
            "ObjectEvent", None, f"{path}#1"),
    ]


def test_xml_and_jsonld_of_the_same_events_agree(epcis_examples):
    xml, _ = parse_file(os.path.join(epcis_examples, "xml",
                                     "Example_9.6.1-ObjectEvent-2020_06_18a.xml"))
    jsn, _ = parse_file(os.path.join(epcis_examples, "jsonld",
                                     "Example_9.6.1-ObjectEvent.jsonld"))
    strip = [{k: v for k, v in e.items() if k != schema.SOURCE} for e in xml]
    assert strip == [{k: v for k, v in e.items() if k != schema.SOURCE} for e in jsn]


def test_aggregation_event_rows_children_only(epcis_examples):
    """parentID (the SSCC pallet) is not an oid; each childEPC is one flat event."""
    path = os.path.join(epcis_examples, "xml", "AggregationEvent.xml")
    events, quarantine = parse_file(path)
    common = dict(read_point="urn:epc:id:sgln:0614141.00777.0",
                  event_time="2013-06-08T14:58:56.591Z", action="OBSERVE",
                  biz_step="urn:epcglobal:cbv:bizstep:receiving",
                  disposition="urn:epcglobal:cbv:disp:in_progress",
                  biz_location="urn:epc:id:sgln:0614141.00888.0",
                  event_type="AggregationEvent", sensor_reports=None, source=f"{path}:7")
    assert quarantine == []
    assert events == [row("urn:epc:id:sgtin:0614141.107346.2017", **common),
                      row("urn:epc:id:sgtin:0614141.107346.2018", **common)]
    jsn, _ = parse_file(os.path.join(epcis_examples, "jsonld",
                                     "Example_9.6.3-AggregationEvent.jsonld"))
    assert [{**e, schema.SOURCE: None} for e in jsn] == [
        {**e, schema.SOURCE: None} for e in events]


def test_transformation_and_error_declaration_kept(epcis_examples):
    path = os.path.join(epcis_examples, "xml", "ErrorDeclarationAndCorrectiveEvent.xml")
    events, quarantine = parse_file(path)
    assert quarantine == []
    # the declared-erroneous event (line 8) and its corrective event (line 44): input + output
    assert [(e[schema.OID], e[schema.EVENT_TIME], e[schema.SOURCE]) for e in events] == [
        ("urn:epc:id:sgtin:4012345.011111.987", "2020-01-13T23:00:00.000Z", f"{path}:8"),
        ("urn:epc:id:sgtin:4012345.033333.AGHFG", "2020-01-13T23:00:00.000Z", f"{path}:8"),
        ("urn:epc:id:sgtin:4012345.011111.987", "2021-01-27T23:00:00.000Z", f"{path}:44"),
        ("urn:epc:id:sgtin:4012345.033333.AGHFG", "2021-01-27T23:00:00.000Z", f"{path}:44"),
    ]
    assert {e[schema.ACTION] for e in events} == {None}  # TransformationEvent has no action


def test_sensor_reports_kept_and_xml_equals_jsonld(epcis_examples):
    xml, _ = parse_file(os.path.join(epcis_examples, "xml", "SensorDataExamples.xml"))
    one, _ = parse_file(os.path.join(epcis_examples, "jsonld", "SensorDataExample1.jsonld"))
    two, _ = parse_file(os.path.join(epcis_examples, "jsonld", "SensorDataExample2.jsonld"))
    assert xml[0][schema.SENSOR_REPORTS] == one[0][schema.SENSOR_REPORTS]
    assert xml[1][schema.SENSOR_REPORTS] == two[0][schema.SENSOR_REPORTS]
    reports = json.loads(one[0][schema.SENSOR_REPORTS])
    assert len(reports) == 3
    assert reports[0] == {
        "sensorMetadata": {"time": "2019-04-02T14:05:00.000+01:00",
                           "deviceID": "urn:epc:id:giai:4000001.111",
                           "deviceMetadata": "https://id.gs1.org/8004/4000001111",
                           "rawData": "https://example.org/8004/401234599999"},
        "sensorReport": [{"type": "Temperature", "value": 26.0, "uom": "CEL"},
                         {"type": "AbsoluteHumidity", "value": 12.1, "uom": "A93"},
                         {"type": "Speed", "value": 160.0, "uom": "KMH"},
                         {"type": "Illuminance", "value": 800.0, "uom": "LUX"}]}
    assert one[0][schema.EVENT_TIME] == "2019-04-02T14:00:00.000Z"
    # GS1 Web URI bizStep normalised to the CBV URN
    assert xml[-1][schema.BIZ_STEP] == "urn:epcglobal:cbv:bizstep:sensor_reporting"


def test_epcis_12_extension_wrappers():
    path = os.path.join(DATA, "epcis12_transformation.xml")
    events, quarantine = parse_file(path)
    assert [(e[schema.OID], e[schema.READ_POINT], e[schema.EVENT_TIME], e[schema.EVENT_TYPE],
             e[schema.SOURCE]) for e in events] == [
        ("urn:epc:id:sgtin:8801234.000001.1", "urn:epc:id:sgln:8801234.00001.7",
         "2024-01-01T00:00:00.500Z", "ObjectEvent", f"{path}:5"),
        ("urn:epc:id:sgtin:8801234.000001.1", "urn:epc:id:sgln:8801234.00001.8",
         "2024-01-01T01:00:00.000Z", "TransformationEvent", f"{path}:21"),
        ("urn:epc:id:sgtin:8801234.000009.1", "urn:epc:id:sgln:8801234.00001.8",
         "2024-01-01T01:00:00.000Z", "TransformationEvent", f"{path}:21"),
    ]
    assert [(q[schema.SOURCE], q[schema.REASON]) for q in quarantine] == [
        (f"{path}:30", "no_instance_epc")]
    assert "quantityList" in quarantine[0][schema.DETAIL]


# -- normalisers ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, utc", [
    ("2005-04-03T20:33:31.116-06:00", "2005-04-04T02:33:31.116Z"),
    ("2005-04-03T20:33:31.116000-06:00", "2005-04-04T02:33:31.116Z"),
    ("2024-01-01T08:59:59.9999+09:00", "2023-12-31T23:59:59.999Z"),
    ("2013-06-08T14:58:56.591Z", "2013-06-08T14:58:56.591Z"),
    ("2005-07-11T11:30:47.0Z", "2005-07-11T11:30:47.000Z"),
    ("2020-01-14T00:00:00+01:00", "2020-01-13T23:00:00.000Z"),
    ("2024-02-29T23:30:00-05:30", "2024-03-01T05:00:00.000Z"),
])
def test_utc_millis(text, utc):
    assert epcis.utc_millis(text) == utc
    assert epcis.utc_millis_reference(text) == utc


def test_utc_millis_equals_reference_on_random_times():
    rnd = random.Random(3)
    base = datetime(2000, 1, 1, tzinfo=timezone.utc)
    for _ in range(2000):
        off = timedelta(minutes=rnd.randrange(-14 * 60, 14 * 60 + 1, 15))
        t = (base + timedelta(seconds=rnd.uniform(0, 30 * 365 * 86400))).astimezone(
            timezone(off))
        text = t.isoformat(timespec=rnd.choice(["seconds", "milliseconds", "microseconds"]))
        assert epcis.utc_millis(text) == epcis.utc_millis_reference(text), text


@pytest.mark.parametrize("bad", ["2024-03-01T09:00:00", "yesterday", "2024-13-01T00:00:00Z",
                                 "2024-03-01T25:00:00+09:00", ""])
def test_utc_millis_rejects(bad):
    with pytest.raises(ValueError):
        epcis.utc_millis(bad)


def test_cbv_normalisation():
    assert epcis.cbv_urn("shipping", "bizstep") == "urn:epcglobal:cbv:bizstep:shipping"
    assert epcis.cbv_urn("in_transit", "disp") == "urn:epcglobal:cbv:disp:in_transit"
    assert epcis.cbv_urn("cbv:BizStep-receiving", "bizstep") == (
        "urn:epcglobal:cbv:bizstep:receiving")
    assert epcis.cbv_urn("urn:epcglobal:cbv:disp:active", "disp") == (
        "urn:epcglobal:cbv:disp:active")
    assert epcis.cbv_urn(None, "disp") is None


# -- bad input: quarantined with a reason, never raised; counts add up ----------------------

def test_counting_rule_good_and_bad_events():
    events_xml = (object_event(epcs=("a", "b", "c"))          # line 2: 3 flat events
                  + object_event(time=None)                    # line 3: missing_event_time
                  + object_event(read_point=None)              # line 4: missing_read_point
                  + object_event(time="2024-03-01 nine")       # line 5: bad_timestamp
                  + object_event(tag="ReadEvent")              # line 6: unsupported_event
                  + object_event(epcs=("x", ""))               # line 7: missing_epc
                  + object_event(epcs=("d",)))                 # line 8: 1 flat event
    events, quarantine = parse_document(xml_doc(events_xml), "doc.xml")
    assert [(e[schema.OID], e[schema.SOURCE]) for e in events] == [
        ("a", "doc.xml:2"), ("b", "doc.xml:2"), ("c", "doc.xml:2"), ("d", "doc.xml:8")]
    assert sorted((q[schema.SOURCE], q[schema.REASON]) for q in quarantine) == [
        ("doc.xml:3", "missing_event_time"), ("doc.xml:4", "missing_read_point"),
        ("doc.xml:5", "bad_timestamp"), ("doc.xml:6", "unsupported_event"),
        ("doc.xml:7", "missing_epc")]
    # 7 event records = 2 records kept (4 flat events, one per EPC) + 5 quarantine records
    assert len({e[schema.SOURCE] for e in events}) + len(quarantine) == 7
    assert all(q[schema.REASON] in schema.REASONS for q in quarantine)


def test_truncated_xml_keeps_events_before_the_break():
    doc = xml_doc(object_event(epcs=("a", "b")) + object_event(epcs=("c",))
                  + object_event(epcs=("d",)))
    cut = doc[:doc.index(b"<epc>d</epc>") + 7]
    events, quarantine = parse_document(cut, "cut.xml")
    assert [e[schema.OID] for e in events] == ["a", "b", "c"]
    assert reasons(quarantine) == Counter({"malformed_xml": 1})
    assert quarantine[0][schema.SOURCE] == "cut.xml:4"
    # 2 complete records -> 3 flat events; the rest (the cut record) -> 1 quarantine record


def test_truncated_between_events_keeps_all_complete_events():
    doc = xml_doc(object_event(epcs=("a",)) + object_event(epcs=("b",)))
    cut = doc[:doc.index(b"</EventList>")]
    events, quarantine = parse_document(cut, "cut.xml")
    assert [e[schema.OID] for e in events] == ["a", "b"]
    assert reasons(quarantine) == Counter({"malformed_xml": 1})


def test_wrong_namespace():
    events, quarantine = parse_document(xml_doc(object_event(), ns="urn:example:not-epcis"),
                                        "w.xml")
    assert events == []
    assert [(q[schema.SOURCE], q[schema.REASON]) for q in quarantine] == [
        ("w.xml", "wrong_namespace")]
    events, quarantine = parse_document(b"<html><body>hi</body></html>", "h.xml")
    assert (events, reasons(quarantine)) == ([], Counter({"wrong_namespace": 1}))


def test_binary_garbage():
    garbage = bytes(random.Random(1).randrange(256) for _ in range(4096))
    events, quarantine = parse_document(b"\x89PNG\r\n\x1a\n\x00" + garbage, "img.png")
    assert (events, reasons(quarantine)) == ([], Counter({"binary": 1}))


def test_invalid_utf8():
    doc = xml_doc(object_event(epcs=("a",)) + object_event(epcs=("b\xff",)))
    doc = doc.replace("b\xff".encode(), b"b\xff\xfe")
    events, quarantine = parse_document(doc, "u.xml")
    assert [e[schema.OID] for e in events] == ["a"]  # the event before the bad bytes is kept
    assert reasons(quarantine) == Counter({"binary": 1})
    events, quarantine = parse_document(b'{"epcisBody": {"eventList": ["\xff"]}}', "u.json")
    assert (events, reasons(quarantine)) == ([], Counter({"binary": 1}))


def test_too_large(tmp_path):
    doc = xml_doc(object_event() * 50)
    events, quarantine = parse_document(doc, "big.xml", max_bytes=1000)
    assert (events, reasons(quarantine)) == ([], Counter({"too_large": 1}))
    path = tmp_path / "big.xml"
    path.write_bytes(doc)
    events, quarantine = parse_file(str(path), max_bytes=1000)
    assert (events, reasons(quarantine)) == ([], Counter({"too_large": 1}))
    assert str(len(doc)) in quarantine[0][schema.DETAIL]
    assert len(parse_file(str(path), max_bytes=len(doc))[0]) == 50


@pytest.mark.parametrize("data, reason", [
    (b"", "unknown_format"),
    (b"   \n\t ", "unknown_format"),
    (b"hello, world", "unknown_format"),
    (b"<", "malformed_xml"),
    (b"{not json", "malformed_json"),
    (b'{"type": "EPCISDocument"}', "unknown_format"),
    (b'{"epcisBody": {"eventList": 3}}', "malformed_json"),
])
def test_document_level_failures_are_one_record(data, reason):
    events, quarantine = parse_document(data, "d")
    assert events == []
    assert reasons(quarantine) == Counter({reason: 1})
    assert quarantine[0][schema.SOURCE] in ("d", "d:1")


def test_empty_event_list_is_nothing():
    assert parse_document(xml_doc(""), "e.xml") == ([], [])
    assert parse_document(b'{"epcisBody": {"eventList": []}}', "e.json") == ([], [])


def test_json_bad_events_counted_per_record():
    good = {"type": "ObjectEvent", "eventTime": "2024-03-01T09:00:00+09:00",
            "epcList": ["a", "b"], "readPoint": {"id": "rp"}, "bizStep": "packing"}
    event_list = [good, {**good, "type": "MagicEvent"}, {**good, "eventTime": None},
                  {**good, "readPoint": None}, {**good, "eventTime": "soon"}, "nonsense",
                  {**good, "epcList": [], "quantityList": [{"epcClass": "c", "quantity": 1}]}]
    doc = json.dumps({"type": "EPCISDocument", "epcisBody": {"eventList": event_list}})
    events, quarantine = parse_document(doc.encode(), "j.json")
    assert [(e[schema.OID], e[schema.BIZ_STEP], e[schema.SOURCE]) for e in events] == [
        ("a", "urn:epcglobal:cbv:bizstep:packing", "j.json#0"),
        ("b", "urn:epcglobal:cbv:bizstep:packing", "j.json#0")]
    assert [(q[schema.SOURCE], q[schema.REASON]) for q in quarantine] == [
        ("j.json#1", "unsupported_event"), ("j.json#2", "missing_event_time"),
        ("j.json#3", "missing_read_point"), ("j.json#4", "bad_timestamp"),
        ("j.json#5", "malformed_json"), ("j.json#6", "no_instance_epc")]
    assert 1 + len(quarantine) == len(event_list)


def test_single_json_event():
    doc = {"type": "ObjectEvent", "eventTime": "2024-03-01T09:00:00Z", "epcList": ["a"],
           "readPoint": {"id": "rp"}}
    events, quarantine = parse_document(json.dumps(doc).encode(), "topic/0/17")
    assert quarantine == []
    assert [(e[schema.OID], e[schema.SOURCE]) for e in events] == [("a", "topic/0/17#0")]


def test_missing_file_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        parse_file(str(tmp_path / "nope.xml"))


def test_doctests():
    import doctest

    assert doctest.testmod(epcis).failed == 0


def test_namespaced_event_list_is_not_silently_empty():
    doc = (f'<EPCISDocument xmlns="{NS2}"><EPCISBody><EventList>'
           + object_event() + object_event() + "</EventList></EPCISBody></EPCISDocument>")
    events, quarantine = parse_document(doc.encode(), "n.xml")
    assert events == []
    assert reasons(quarantine) == Counter({"wrong_namespace": 1})
    assert "2 child element(s)" in quarantine[0][schema.DETAIL]


# -- the regex fast path equals the lxml reference -----------------------------------------

def simulated_xml(n_events: int, seed: int, *, offset="+09:00", newline="\n",
                  extra: str = "") -> bytes:
    """A machine-written EPCIS document like the simulator's (plain ObjectEvents)."""
    rnd = random.Random(seed)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<epcis:EPCISDocument xmlns:epcis="{NS2}" schemaVersion="2.0" '
             'creationDate="2024-03-04T09:36:12.614+09:00">', "<EPCISBody>", "<EventList>"]
    t0 = datetime(2024, 3, 4, 8, tzinfo=timezone(timedelta(hours=9)))
    for i in range(n_events):
        when = (t0 + timedelta(milliseconds=rnd.randrange(10 ** 9))).astimezone(
            timezone(timedelta(hours=int(offset[:3]), minutes=int(offset[4:]))))
        epcs = "".join(f"<epc>urn:epc:id:sgtin:8801234.012345.{rnd.randrange(10 ** 6)}</epc>"
                       for _ in range(rnd.choice([1, 1, 1, 2, 4])))
        disposition = rnd.choice(["", "<disposition>in_progress</disposition>"])
        lines.append(
            f"<ObjectEvent><eventTime>{when.isoformat(timespec='milliseconds')}</eventTime>"
            f"<eventTimeZoneOffset>{offset}</eventTimeZoneOffset><epcList>{epcs}</epcList>"
            f"<action>OBSERVE</action><bizStep>urn:epcglobal:cbv:bizstep:assembling</bizStep>"
            f"{disposition}<readPoint><id>urn:epc:id:sgln:8801234.00001.{rnd.randrange(80)}"
            f"</id></readPoint><bizLocation><id>urn:epc:id:sgln:8801234.00001.0</id>"
            f"</bizLocation></ObjectEvent>")
        if i == n_events // 2 and extra:
            lines.append(extra)
    lines += ["</EventList>", "</EPCISBody>", "</epcis:EPCISDocument>", ""]
    return newline.join(lines).encode()


@pytest.mark.parametrize("kwargs", [{}, {"offset": "-06:00"}, {"offset": "+05:30"},
                                    {"offset": "+00:00", "newline": "\r\n"}])
def test_fast_path_equals_lxml(kwargs):
    doc = simulated_xml(500, seed=11, **kwargs)
    fast = epcis._parse_xml_fast(doc, "s.xml")
    assert fast is not None  # these documents take the fast path
    assert fast == epcis._parse_xml(doc, "s.xml")
    assert len(fast[0]) > 500 and fast[1] == []


@pytest.mark.parametrize("extra, reason", [
    (object_event(time=None).strip(), "missing_event_time"),
    (object_event(read_point=None).strip(), "missing_read_point"),
    (object_event(time="2024-02-30T00:00:00.000+09:00").strip(), "bad_timestamp"),
    (object_event(epcs=("a", "")).strip(), "missing_epc"),
])
def test_fast_path_quarantines_like_lxml(extra, reason):
    doc = simulated_xml(50, seed=5, extra=extra)
    fast = epcis._parse_xml_fast(doc, "s.xml")
    assert fast is not None
    assert fast == epcis._parse_xml(doc, "s.xml")
    assert reasons(fast[1]) == Counter({reason: 1})


@pytest.mark.parametrize("extra", [
    "<!-- a comment -->", object_event(tag="AggregationEvent"), "<ObjectEvent>&amp;</ObjectEvent>",
    '<ObjectEvent a="1"></ObjectEvent>', "<epcis:ObjectEvent/>",
])
def test_fast_path_declines_anything_else(extra):
    doc = simulated_xml(20, seed=5, extra=extra)
    assert epcis._parse_xml_fast(doc, "s.xml") is None
    assert parse_document(doc, "s.xml") == epcis._parse_xml(doc, "s.xml")


def test_fast_path_declines_truncated_and_foreign_documents():
    doc = simulated_xml(20, seed=5)
    assert epcis._parse_xml_fast(doc[:-40], "s.xml") is None
    assert epcis._parse_xml_fast(doc.replace(NS2.encode(), b"urn:x"), "s.xml") is None
    assert epcis._parse_xml_fast(doc.replace(b'xmlns:epcis=', b'xmlns="urn:x" xmlns:epcis='),
                                 "s.xml") is None
    events, quarantine = parse_document(doc[:-40], "s.xml")
    assert len(events) > 0 and reasons(quarantine) == Counter({"malformed_xml": 1})


def test_sensor_numbers_typed_alike_in_xml_and_json():
    xml = xml_doc(
        "<ObjectEvent><eventTime>2024-03-01T09:00:00Z</eventTime><epcList><epc>a</epc></epcList>"
        "<readPoint><id>rp</id></readPoint><sensorElementList><sensorElement>"
        '<sensorReport type="gs1:Speed" value="0" uom="MTS"/>'
        '<sensorReport type="gs1:Temperature" value="NaN" booleanValue="true"/>'
        "</sensorElement></sensorElementList></ObjectEvent>")
    jsn = json.dumps({"type": "ObjectEvent", "eventTime": "2024-03-01T09:00:00Z",
                      "epcList": ["a"], "readPoint": {"id": "rp"}, "sensorElementList": [
                          {"sensorReport": [{"type": "Speed", "value": 0, "uom": "MTS"},
                                            {"type": "Temperature", "value": "NaN",
                                             "booleanValue": True}]}]}).encode()
    (x,), _ = parse_document(xml, "x.xml")
    (j,), _ = parse_document(jsn, "j.json")
    assert x[schema.SENSOR_REPORTS] == j[schema.SENSOR_REPORTS]
    assert json.loads(x[schema.SENSOR_REPORTS]) == [{"sensorMetadata": {}, "sensorReport": [
        {"type": "Speed", "value": 0.0, "uom": "MTS"},
        {"type": "Temperature", "value": "NaN", "booleanValue": True}]}]
