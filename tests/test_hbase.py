"""EVENT LOG TABLE on HBase (soads.storage.hbase) and the HBase service (soads.services.hbase).

The row-key tests are pure. The integration tests need HBase's Thrift server
(``python -m soads.services up hbase``): under ``CI=true`` the fixture starts it when it is not
running and FAILS when it cannot be reached; elsewhere it skips unless ``SOADS_START_SERVICES=1``
asks it to start HBase too.
"""
import datetime as dt
import doctest
import os
import random

import pytest

from soads import schema as S
from soads.storage import hbase as H
import streamtools as st  # require: fail under CI=true, skip elsewhere

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)


def ev(oid, seconds, read_point="urn:epc:id:sgln:0614141.00777.0", source=None, **extra):
    e = {c: None for c in S.EVENT_COLUMNS}
    e.update({S.OID: oid, S.READ_POINT: read_point,
              S.EVENT_TIME: T0 + dt.timedelta(seconds=seconds),
              S.SOURCE: source or f"file.xml:{int(seconds * 1000)}"})
    e.update(extra)
    return e


def sample_events():
    """Events of four objects, inserted out of time order; '...1' is a prefix of '...10';
    two events of one object at the same instant at different read points; pre-1970 time."""
    rnd = random.Random(3)
    out = []
    for o in ("urn:epc:id:sgtin:0614141.107346.1", "urn:epc:id:sgtin:0614141.107346.10",
              "urn:epc:id:sgtin:0614141.107346.2", "urn:epc:id:grai:0614141.12345.400"):
        times = [rnd.uniform(-3600, 86400) for _ in range(6)]
        for i, t in enumerate(times):
            out.append(ev(o, round(t, 6), read_point=f"urn:epc:id:sgln:0614141.00777.{i % 3}",
                          action="OBSERVE", biz_step="urn:epcglobal:cbv:bizstep:receiving",
                          event_type="ObjectEvent",
                          sensor_reports='[{"type":"Temperature","value":21.5}]' if i == 2 else None))
    out.append(ev("urn:epc:id:sgtin:0614141.107346.2", 100.0, read_point="rp:a", source="k/0/1"))
    out.append(ev("urn:epc:id:sgtin:0614141.107346.2", 100.0, read_point="rp:b", source="k/0/2"))
    out.append(ev("urn:epc:id:sgtin:0614141.107346.2",
                  (dt.datetime(1969, 12, 31, 23, 0, tzinfo=UTC) - T0).total_seconds()))
    rnd.shuffle(out)
    return out


# -- pure ---------------------------------------------------------------------------------
def test_doctests():
    result = doctest.testmod(H)
    assert result.attempted > 0 and result.failed == 0


def test_same_event_same_key():
    e = ev("urn:epc:id:sgtin:1.2.3", 5.5)
    assert H.row_key(e) == H.row_key(dict(e))
    # the time may arrive as a datetime, an ISO string or µs: the key is the same
    us = H.to_micros(e[S.EVENT_TIME])
    assert H.row_key(dict(e, event_time=H.iso(us))) == H.row_key(e)
    assert H.row_key(dict(e, event_time=us)) == H.row_key(e)
    assert H.row_key(dict(e, event_time=e[S.EVENT_TIME].replace(tzinfo=None))) == H.row_key(e)
    # other (non-key) columns do not change the key: a replay rewrites the same row
    assert H.row_key(dict(e, action="ADD")) == H.row_key(e)


def test_distinct_events_distinct_keys():
    events = sample_events()
    assert len({H.row_key(e) for e in events}) == len(events)
    a = ev("urn:x:1", 1.0, read_point="r1", source="s")
    assert H.row_key(a) != H.row_key(dict(a, read_point="r2"))
    assert H.row_key(a) != H.row_key(dict(a, source="s2"))


def test_keys_of_one_object_sort_by_time():
    events = sample_events()
    for oid in {e[S.OID] for e in events}:
        mine = [e for e in events if e[S.OID] == oid]
        by_key = [e[S.EVENT_TIME] for e in sorted(mine, key=H.row_key)]
        assert by_key == sorted(by_key)


def test_prefix_scan_returns_exactly_the_objects_events():
    events = sample_events()
    table = sorted((H.row_key(e), e) for e in events)  # what HBase stores, in key order
    for oid in {e[S.OID] for e in events}:
        prefix = H.object_prefix(oid)
        scanned = [e for k, e in table if k.startswith(prefix)]
        expected = [e for e in events if e[S.OID] == oid]
        assert sorted(map(H.row_key, scanned)) == sorted(map(H.row_key, expected))
        times = [e[S.EVENT_TIME] for e in scanned]
        assert times == sorted(times)
        # contiguous: the object's rows are one run of the sorted table
        idx = [i for i, (k, _) in enumerate(table) if k.startswith(prefix)]
        assert idx == list(range(idx[0], idx[0] + len(idx)))


def test_encode_decode_roundtrip():
    for e in sample_events():
        back = H.decode(H.encode(e))
        assert back == e
        assert all(k.startswith(b"e:") for k in H.encode(e))


def test_event_puts_equal_row_key_and_encode(epcis_examples):
    """The stream's one-pass encoder against the two reference functions, on every official
    EPCIS example, a simulated document and events off the fast path."""
    import glob
    import itertools

    from soads import epcis
    from soads.simulator.generate import iter_documents

    events = []
    for path in sorted(glob.glob(os.path.join(epcis_examples, "**", "*.*"), recursive=True)):
        events += epcis.parse_file(path)[0]
    for name, content, *_ in itertools.islice(iter_documents(30, seed=5, events_per_file=200), 3):
        events += epcis.parse_document(content, f"t/0/{name}", 10**8)[0]
    assert len(events) > 500
    events += sample_events()  # datetimes and None values: the generic path
    events += [dict(events[0], oid="urn:ü:1", read_point=None),
               dict(events[0], event_time="2024-02-29T23:59:59.999Z", source="s:\u00e9"),
               dict(events[0], event_time=1_700_000_000_123_456),
               dict(events[0], biz_step=7)]
    got = H.event_puts(events)
    assert got == [(H.row_key(e), H.encode(e)[H.EVENT_CELL]) for e in events]


def test_quarantine_key_stable():
    r = {S.SOURCE: "bad.xml:0", S.REASON: "malformed_xml", S.DETAIL: "line 1"}
    assert H.quarantine_key(r) == H.quarantine_key(dict(r))
    assert H.quarantine_key(r) != H.quarantine_key(dict(r, detail="line 2"))
    assert H.quarantine_key(r) != H.quarantine_key(dict(r, reason="binary"))


def test_bucket_ranges_cover_key_space():
    for n in (1, 3, 8, 256):
        ranges = H.bucket_ranges(n)
        assert len(ranges) == n and ranges[0][0] == b"" and ranges[-1][1] == b""
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    with pytest.raises(ValueError):
        H.bucket_ranges(0)


def test_parse_location():
    assert H.parse_location("127.0.0.1:9090/soads") == ("127.0.0.1", 9090, "soads")
    assert H.parse_location("hbase://h:1/p") == ("h", 1, "p")
    assert H.parse_location("h") == ("h", 9090, "soads")


def test_service_conf_renders(tmp_path):
    from soads import config
    from soads.services import hbase as service

    cfg = config.load(overrides=[f"services.root={tmp_path}", "hbase.thrift_port=19090"], env={})
    conf_dir = service.render_conf(cfg)
    site = (conf_dir / "hbase-site.xml").read_text()
    assert f"file://{tmp_path}/hbase/hbase" in site and "19090" in site and "$" not in site
    assert "0.0.0.0" not in site
    cmd = service.java_command(cfg, service.MASTER_CLASS, ["start"], "768m", tmp_path / "m.log")
    assert "-Xmx768m" in cmd and "--add-opens=java.base/java.nio=ALL-UNNAMED" in cmd
    with pytest.raises(config.ConfigError, match="unknown key.*no_such_key"):
        config.load(overrides=["hbase.no_such_key=1"], env={})


# -- integration --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def hbase_location():
    """``host:port/prefix`` of a reachable HBase Thrift server, with a per-run table prefix."""
    from soads import services

    cfg = st.services_conf("hbase")
    loc = services.hbase_location(cfg, prefix=f"t{os.getpid()}")
    yield loc
    conn = H.connect(loc)
    try:
        for name in (H.EVENT_TABLE, H.QUARANTINE_TABLE):
            if name.encode() in conn.tables():
                conn.delete_table(name, disable=True)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def events_df(spark):
    rows = [tuple(e[c] for c in S.EVENT_COLUMNS) for e in sample_events()]
    return spark.createDataFrame(rows, S.event_struct()).repartition(3)


@pytest.mark.integration
def test_write_replay_read(spark, hbase_location, events_df):
    from pyspark.testing import assertDataFrameEqual

    H.write_events(events_df, hbase_location, mode="overwrite")
    first = H.read_events(spark, hbase_location).count()
    assert first == events_df.count()
    H.write_events(events_df, hbase_location)  # replay: upsert of the same rows
    back = H.read_events(spark, hbase_location)
    assert back.count() == first
    assert back.schema == S.event_struct()
    assert back.rdd.getNumPartitions() == H.DEFAULT_PARTITIONS
    assertDataFrameEqual(back, events_df)


@pytest.mark.integration
def test_scan_object_time_ordered(spark, hbase_location, events_df):
    H.write_events(events_df, hbase_location)
    events = sample_events()
    conn = H.connect(hbase_location)
    try:
        table = conn.table(H.EVENT_TABLE)
        for oid in sorted({e[S.OID] for e in events}):
            got = H.scan_object(table, oid)
            times = [e[S.EVENT_TIME] for e in got]
            assert times == sorted(times)
            assert all(e[S.OID] == oid for e in got)
            expected = sorted((e for e in events if e[S.OID] == oid), key=H.row_key)
            assert got == expected
    finally:
        conn.close()


@pytest.mark.integration
def test_quarantine_roundtrip(spark, hbase_location):
    from pyspark.testing import assertDataFrameEqual

    rows = [("bad.xml:0", "malformed_xml", "no element found: line 1"),
            ("bad.json:0", "malformed_json", "Expecting value"),
            ("k/0/7", "missing_epc", "empty <epc>")]
    q = spark.createDataFrame(rows, S.quarantine_struct())
    H.write_quarantine(q, hbase_location, mode="overwrite")
    H.write_quarantine(q, hbase_location)
    assertDataFrameEqual(H.read_quarantine(spark, hbase_location, partitions=2), q)


@pytest.mark.integration
def test_read_missing_table(spark, hbase_location):
    with pytest.raises(FileNotFoundError):
        H.read_events(spark, hbase_location + "_missing")


@pytest.mark.integration
def test_put_records_pipelined_equals_decode_and_fails_loudly(hbase_location):
    """The streaming parse stage's writer: parser dicts (event_time as the parser's text), more
    than two batches so the sender thread overlaps, replay-idempotent; a dead server raises."""
    loc = hbase_location + "_put"
    H.ensure_table(loc, H.EVENT_TABLE, overwrite=True)
    events = [dict(e, **{S.EVENT_TIME: e[S.EVENT_TIME].strftime("%Y-%m-%dT%H:%M:%S.")
                         + f"{e[S.EVENT_TIME].microsecond // 1000:03d}Z"})
              for e in (ev(f"urn:epc:id:sgtin:1.2.{i % 97}", i * 0.25) for i in range(2500))]
    assert H.put_records(loc, H.EVENT_TABLE, events, batch_size=1000) == 2500
    assert H.put_records(loc, H.EVENT_TABLE, events[:10], batch_size=1000) == 10  # replay
    conn = H.connect(loc)
    try:
        stored = {k: H.decode(c) for k, c in conn.table(H.EVENT_TABLE).scan()}
        conn.delete_table(H.EVENT_TABLE, disable=True)
    finally:
        conn.close()
    assert set(stored) == {H.row_key(e) for e in events}
    e = events[7]
    assert stored[H.row_key(e)] == dict(e, **{S.EVENT_TIME: H.from_micros(H.to_micros(
        e[S.EVENT_TIME]))})
    from thriftpy2.transport import TTransportException

    # the sender thread's connection error, re-raised in the caller's thread as it is
    with pytest.raises(TTransportException, match="Could not connect"):
        H.put_records("hbase://127.0.0.1:1/nothing", H.EVENT_TABLE, events, batch_size=100)
