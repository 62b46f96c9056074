"""soads.preprocess: the Event Log Preprocessor on Spark (mapInPandas over soads.epcis)."""
import datetime as dt
import os
import shutil

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from soads import preprocess, schema


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, epcis_examples):
    """The GS1 examples plus a binary file, a truncated file and a text file to be skipped."""
    root = tmp_path_factory.mktemp("epcis-in")
    shutil.copytree(epcis_examples, root / "examples")
    (root / "bad").mkdir()
    (root / "bad" / "garbage.xml").write_bytes(b"\x00\x01\x02garbage")
    (root / "bad" / "truncated.xml").write_bytes(
        b'<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2"><EPCISBody><EventList>\n'
        b"<ObjectEvent><eventTime>2024-03-01T09:00:00.000+09:00</eventTime>"
        b"<epcList><epc>urn:epc:id:sgtin:1.1.1</epc></epcList>"
        b"<readPoint><id>rp-1</id></readPoint></ObjectEvent>\n<ObjectEvent><eventTi")
    (root / "bad" / "notes.txt").write_text("not an EPCIS document, not read")
    return root


@pytest.fixture(scope="module")
def parsed(spark, inputs):
    docs = preprocess.read_documents(spark, [str(inputs / "examples"), str(inputs / "bad")])
    frame = preprocess.parse_documents(docs, max_bytes=1 << 20).cache()
    yield frame
    frame.unpersist()


def test_read_documents(spark, inputs):
    docs = preprocess.read_documents(spark, [str(inputs)])
    assert docs.columns == [schema.SOURCE, schema.CONTENT]
    sources = sorted(r[schema.SOURCE] for r in docs.select(schema.SOURCE).collect())
    assert len(sources) == 11 + 2  # 11 examples, garbage.xml, truncated.xml; notes.txt skipped
    assert str(inputs / "bad" / "garbage.xml") in sources
    # a file named explicitly is read whatever its suffix
    one = preprocess.read_documents(spark, [str(inputs / "bad" / "notes.txt")])
    assert one.count() == 1


def test_read_documents_missing_path(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        preprocess.read_documents(spark, [str(tmp_path / "nope")])


def test_split_schemas_and_counts(parsed):
    events, quarantine = preprocess.split_parsed(parsed)
    assert events.schema == schema.event_struct()
    assert quarantine.schema == schema.quarantine_struct()
    # 39 flat events from the examples + 1 before the truncation
    assert events.count() == 40
    by_reason = {r[schema.REASON]: r["count"]
                 for r in quarantine.groupBy(schema.REASON).count().collect()}
    assert by_reason == {"no_instance_epc": 8, "binary": 1, "malformed_xml": 1}


def test_exact_rows(spark, parsed, inputs):
    events, quarantine = preprocess.split_parsed(parsed)
    path = str(inputs / "examples" / "xml" / "AggregationEvent.xml")
    time = dt.datetime(2013, 6, 8, 14, 58, 56, 591000)  # session time zone is UTC
    common = ("urn:epc:id:sgln:0614141.00777.0", time, "OBSERVE",
              "urn:epcglobal:cbv:bizstep:receiving", "urn:epcglobal:cbv:disp:in_progress",
              "urn:epc:id:sgln:0614141.00888.0", "AggregationEvent", None, f"{path}:7")
    expected = spark.createDataFrame(
        [("urn:epc:id:sgtin:0614141.107346.2017", *common),
         ("urn:epc:id:sgtin:0614141.107346.2018", *common)], schema.event_struct())
    assertDataFrameEqual(events.filter(F.col(schema.SOURCE).startswith(path)), expected)

    bad = str(inputs / "bad")
    got = quarantine.filter(F.col(schema.SOURCE).startswith(bad)).select(
        schema.SOURCE, schema.REASON)
    assertDataFrameEqual(got, spark.createDataFrame(
        [(f"{bad}/garbage.xml", "binary"), (f"{bad}/truncated.xml:3", "malformed_xml")],
        "source string, reason string"))
    kept = events.filter(F.col(schema.SOURCE).startswith(bad)).collect()
    assert [(r[schema.OID], r[schema.EVENT_TIME], r[schema.SOURCE]) for r in kept] == [
        ("urn:epc:id:sgtin:1.1.1", dt.datetime(2024, 3, 1), f"{bad}/truncated.xml:2")]


def test_too_large_documents(spark, inputs):
    docs = preprocess.read_documents(spark, [str(inputs / "examples" / "xml")])
    events, quarantine = preprocess.split_parsed(preprocess.parse_documents(docs, max_bytes=3000))
    sizes = {f: os.path.getsize(str(inputs / "examples" / "xml" / f))
             for f in os.listdir(str(inputs / "examples" / "xml"))}
    # AggregationEvent.xml (2 events), the 9.6.1 example (3) and ObjectEvent.xml (2) fit
    assert sorted(f for f, n in sizes.items() if n <= 3000) == [
        "AggregationEvent.xml", "Example_9.6.1-ObjectEvent-2020_06_18a.xml", "ObjectEvent.xml"]
    assert events.count() == 2 + 3 + 2
    by_reason = {r[schema.REASON]: r["count"]
                 for r in quarantine.groupBy(schema.REASON).count().collect()}
    assert by_reason == {"too_large": 4, "no_instance_epc": 1}
