"""soads.alerts.core and soads.alerts.rules (pure): fingerprints, matchers, the engine's
for / firing / resolve, inhibition and silences, the grouper's timings, the webhook JSON, each rule
kind, the actions, a restored engine; and the [alerts] / [actions] config files."""
import dataclasses
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from soads import config, schema as S
from soads.alerts import core, rules
from soads.alerts.core import (FIRING, INACTIVE, PENDING, RESOLVED, Alert, Candidate, Engine,
                               Grouper, Matcher, NotifyLog, Silence, fingerprint)

HERE = os.path.dirname(__file__)
CONF = os.path.join(HERE, "..", "conf")
T0 = datetime(2026, 11, 30, 8, 0, 0, tzinfo=timezone.utc)
RP = "urn:epc:id:sgln:8801234.00001.CNV-L2-ASM"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def conf(**rules_) -> config.AlertsConf:
    """The default [alerts] with some rules' settings replaced: rule=dict(...)."""
    base = config.AlertsConf()
    return dataclasses.replace(base, **{
        name: dataclasses.replace(base.rule(name), **kw) for name, kw in rules_.items()})


def cand(rule="stream_stalled", annotations=None, **labels) -> Candidate:
    labels = {"alertname": "StreamStalled", "severity": "critical", "job": "events", **labels}
    return Candidate(rule, labels, annotations or {"summary": "s"})


def states(alerts):
    return [(a.labels["alertname"], a.state) for a in alerts]


# -- fingerprint -------------------------------------------------------------------------------

def fnv1a64(data: bytes) -> int:  # the published FNV-1a, written out independently
    h = 14695981039346656037
    for byte in data:
        h ^= byte
        h = (h * 1099511628211) % 2 ** 64
    return h


def test_fingerprint_is_prometheus_labelset_fingerprint():
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C  # the FNV test vector: the loop is FNV-1a
    labels = {"job": "events", "alertname": "StreamStalled", "severity": "critical"}
    data = b"".join(k.encode() + b"\xff" + labels[k].encode() + b"\xff" for k in sorted(labels))
    assert fingerprint(labels) == f"{fnv1a64(data):016x}"
    assert fingerprint({}) == "cbf29ce484222325"  # the FNV offset basis
    # golden values printed by Go: prometheus/common v0.74.0 model.LabelSet.Fingerprint()
    assert fingerprint(labels) == "bc6280d3a16f57a1"
    assert fingerprint({"alertname": "ObjectAnomaly", "severity": "critical", "job": "events",
                        "oid": "urn:epc:id:sgtin:8801234.012345.7", "read_point": RP,
                        "line": "2"}) == "7458d0950ea9e2b5"
    assert fingerprint({"a": "é"}) == "0019cb2f2449a23e"
    # ... and its LabelSet.String(), the group key's labels
    assert core.group_key(labels) == (
        '{}:{alertname="StreamStalled", job="events", severity="critical"}')


# -- matchers and silences ---------------------------------------------------------------------

@pytest.mark.parametrize("text, labels, expected", [
    ("line=2", {"line": "2"}, True), ("line=2", {"line": "22"}, False),
    ("line!=2", {}, True), ("line!=2", {"line": "2"}, False),
    ("line=~2|3", {"line": "3"}, True), ("line=~2|3", {"line": "23"}, False),  # anchored
    ("line=~2|3", {}, False), ('line!~"2|3"', {"line": "4"}, True),
    ("line!~2|3", {"line": "2"}, False), ('oid=""', {}, True), ("oid=~.+", {}, False),
    ('summary="a \\"b\\""', {"summary": 'a "b"'}, True),
])
def test_matchers(text, labels, expected):
    assert Matcher.parse(text).matches(labels) is expected


@pytest.mark.parametrize("text, message", [
    ("line", "bad matcher 'line': expected name=value"), ("1a=b", "bad matcher '1a=b'"),
    ("line=~(", "bad matcher 'line=~(': missing ), unterminated subpattern"),
])
def test_bad_matcher_is_one_line(text, message):
    with pytest.raises(ValueError) as err:
        Matcher.parse(text)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_silence_validation_and_activity():
    s = Silence.create(["line=2", "alertname=~.*Rate"], at(0), at(3600), "ann", "maintenance")
    assert s.active(at(0)) and s.active(at(3599)) and not s.active(at(3600))
    assert not s.active(at(-1))
    assert s.matches({"line": "2", "alertname": "LineAnomalyRate"})
    assert not s.matches({"line": "3", "alertname": "LineAnomalyRate"})
    assert Silence.from_dict(json.loads(json.dumps(s.to_dict(), default=str))) == s
    assert [s.state(at(t)) for t in (-1, 0, 3600)] == ["pending", "active", "expired"]
    e = s.expire(at(60))
    assert (e.starts_at, e.ends_at, e.state(at(60))) == (at(0), at(60), "expired")
    assert e.expire(at(90)) == e and s.expire(at(-10)).ends_at == at(-10)  # pending: never ran
    with pytest.raises(ValueError, match="at least one matcher"):
        Silence.create([], at(0), at(1))
    with pytest.raises(ValueError, match="must not match the empty string"):
        Silence.create(["line=~.*"], at(0), at(1))
    with pytest.raises(ValueError, match="ends .* before it starts"):
        Silence.create(["line=2"], at(10), at(5))


# -- the engine --------------------------------------------------------------------------------

def test_for_keeps_an_alert_pending_then_fires_once():
    eng = Engine(conf(stream_stalled={"for_seconds": 60}))
    c = cand()
    (a,) = eng.evaluate(at(0), [c], ["stream_stalled"])
    assert (a.state, a.active_at, a.starts_at) == (PENDING, at(0), None)
    assert eng.evaluate(at(30), [c], ["stream_stalled"]) == []       # still pending
    (a,) = eng.evaluate(at(60), [c], ["stream_stalled"])
    assert (a.state, a.active_at, a.starts_at) == (FIRING, at(0), at(60))
    assert eng.evaluate(at(61), [c], ["stream_stalled"]) == []       # no repeat
    # new annotations: the same alert, refreshed, and no news until its state moves
    assert eng.evaluate(at(62), [cand(annotations={"summary": "newer"})], ["stream_stalled"]) == []
    (r,) = eng.evaluate(at(90), [], ["stream_stalled"])
    assert (r.fingerprint, r.state, r.starts_at, r.ends_at, r.annotations) == (
        a.fingerprint, RESOLVED, at(60), at(90), {"summary": "newer"})
    assert eng.alerts == {}


@pytest.mark.parametrize("series, expected", [
    # prometheus rules/alerting_test.go TestKeepFiringFor: `http_requests > 50`, for 1m,
    # keep_firing_for 1m, evaluated every minute over 75 85 70 70 10x5
    ([75, 85, 70, 70, 10, 10], [PENDING, FIRING, FIRING, FIRING, FIRING, RESOLVED]),
    # ... TestPendingAndKeepFiringFor: 75 10x10: a pending alert is dropped at once
    ([75, 10], [PENDING, INACTIVE]),
])
def test_prometheus_step_tables(series, expected):
    eng = Engine(conf(consumer_lag={"for_seconds": 60, "keep_firing_for_seconds": 60}))
    c = Candidate("consumer_lag", {"alertname": "HTTPRequestRateHigh", "job": "app-server",
                                   "instance": "0"}, {})
    got, state = [], None
    for i, value in enumerate(series):
        out = eng.evaluate(at(60 * i), [c] if value > 50 else [], ["consumer_lag"])
        state = out[0].state if out else state  # no change: the state it had
        got.append(state)
    assert got == expected


def test_pending_that_clears_is_dropped_and_for_zero_fires_at_once():
    eng = Engine(conf(stream_stalled={"for_seconds": 60}))
    eng.evaluate(at(0), [cand()], ["stream_stalled"])
    (a,) = eng.evaluate(at(30), [], ["stream_stalled"])
    assert a.state == INACTIVE and eng.alerts == {}
    (a,) = Engine(conf()).evaluate(at(0), [cand()], ["stream_stalled"])
    assert (a.state, a.starts_at) == (FIRING, at(0))


def test_a_rule_not_evaluated_leaves_its_alerts_alone():
    eng = Engine(conf())
    eng.evaluate(at(0), [cand()], ["stream_stalled"])
    assert eng.evaluate(at(10), [], ["consumer_lag"]) == []
    assert [a.state for a in eng.alerts.values()] == [FIRING]


def test_a_resolved_fingerprint_that_comes_back_is_a_new_alert():
    eng = Engine(conf())
    (a,) = eng.evaluate(at(0), [cand()], ["stream_stalled"])
    eng.evaluate(at(10), [], ["stream_stalled"])
    (b,) = eng.evaluate(at(20), [cand()], ["stream_stalled"])
    assert b.fingerprint == a.fingerprint and (b.state, b.starts_at) == (FIRING, at(20))
    assert b.ends_at is None and b.active_at != a.active_at


def test_keep_firing_for_resolves_an_object_alert_after_it_was_last_seen():
    eng = Engine(conf(object_anomaly={"keep_firing_for_seconds": 900}))
    c = Candidate("object_anomaly", {"alertname": "ObjectAnomaly", "oid": "o1"}, {})
    (a,) = eng.evaluate(at(0), [c], ["object_anomaly"])
    assert a.state == FIRING
    (a,) = eng.evaluate(at(5), [], ["object_anomaly"])  # new rows without it: keeps firing
    assert (a.state, a.keep_firing_since) == (FIRING, at(5))
    assert eng.evaluate(at(600), [], ["object_anomaly"]) == []
    (a,) = eng.evaluate(at(700), [c], ["object_anomaly"])  # seen again: the clock restarts
    assert (a.state, a.keep_firing_since, a.starts_at) == (FIRING, None, at(0))
    eng.evaluate(at(701), [], ["object_anomaly"])
    assert eng.evaluate(at(1600), [], ["object_anomaly"]) == []
    (a,) = eng.evaluate(at(1601), [], ["object_anomaly"])
    assert (a.state, a.ends_at) == (RESOLVED, at(1601))


def test_a_stalled_pipeline_inhibits_the_anomaly_alerts_of_its_job():
    eng = Engine(conf())
    obj = Candidate("object_anomaly", {"alertname": "ObjectAnomaly", "severity": "warning",
                                       "job": "events", "oid": "o1"}, {})
    sensor = Candidate("sensor_anomaly", {"alertname": "SensorAnomaly", "severity": "warning",
                                          "job": "sensor_anomaly", "machine_id": "m1"}, {})
    eng.evaluate(at(0), [obj, sensor], ["object_anomaly", "sensor_anomaly"])
    out = eng.evaluate(at(1), [cand(), obj, sensor], ["stream_stalled"])
    stalled = fingerprint(cand().labels)
    assert {a.labels["alertname"]: a.inhibited_by for a in out} == {
        "StreamStalled": (), "ObjectAnomaly": (stalled,)}  # the sensor job's alert is not muted
    muted = eng.alerts[fingerprint(obj.labels)]
    assert muted.state == FIRING and muted.muted  # kept, but neither notified nor actioned
    assert core.action_specs(muted, config.ActionsConf()) == []
    out = eng.evaluate(at(2), [obj, sensor], ["stream_stalled"])  # the stream is back
    assert [(a.labels["alertname"], a.state, a.inhibited_by) for a in out] == [
        ("ObjectAnomaly", FIRING, ()), ("StreamStalled", RESOLVED, ())]


def test_critical_inhibits_warning_and_two_sided_alerts_do_not_mute_each_other():
    eng = Engine(conf())
    warn = Candidate("object_anomaly", {"alertname": "ObjectAnomaly", "severity": "warning",
                                        "job": "events", "oid": "o1"}, {})
    crit = Candidate("object_anomaly", {**warn.labels, "severity": "critical"}, {})
    other = Candidate("object_anomaly", {**warn.labels, "oid": "o2"}, {})
    eng.evaluate(at(0), [warn, crit, other], [])
    assert {a.labels["oid"] + a.labels["severity"]: a.inhibited_by
            for a in eng.alerts.values()} == {
        "o1warning": (fingerprint(crit.labels),), "o1critical": (), "o2warning": ()}
    two = dataclasses.replace(conf(), inhibit=(config.InhibitRule(
        ("alertname=~A|B",), ("alertname=~A|B",), ()),))
    eng = Engine(two)
    out = eng.evaluate(at(0), [cand(alertname="A"), cand(alertname="B")], [])
    assert [a.inhibited_by for a in out] == [(), ()]


def test_silence_mutes_while_active():
    eng = Engine(conf())
    s = Silence.create(["alertname=StreamStalled"], at(10), at(20), "ann", "", id="s1")
    (a,) = eng.evaluate(at(0), [cand()], [], [s])
    assert a.silenced_by == ()
    (a,) = eng.evaluate(at(10), [cand()], [], [s])
    assert a.silenced_by == ("s1",) and a.state == FIRING
    assert eng.evaluate(at(15), [cand()], [], [s]) == []
    (a,) = eng.evaluate(at(20), [cand()], [], [s])  # expired
    assert a.silenced_by == ()


def test_ack_records_who_and_when():
    eng = Engine(conf())
    (a,) = eng.evaluate(at(0), [cand()], [])
    b = eng.ack(a.fingerprint, "ann", at(5))
    assert (b.acked_by, b.acked_at, b.state) == ("ann", at(5), FIRING)
    with pytest.raises(ValueError, match="needs a name"):
        core.ack(b, "", at(6))


def test_engine_restored_from_rows_goes_on_as_the_original():
    cf = conf(stream_stalled={"for_seconds": 30}, object_anomaly={"keep_firing_for_seconds": 60})
    obj = Candidate("object_anomaly", {"alertname": "ObjectAnomaly", "severity": "warning",
                                       "job": "events", "oid": "o1"}, {"summary": "o1"}, 5.0)
    steps = [(0, [obj, cand()]), (10, [cand()]), (20, [cand()]), (40, [cand()]), (50, []),
             (80, [obj]), (100, []), (170, []), (200, [cand()])]
    every = ["object_anomaly", "stream_stalled"]
    sil = [Silence.create(["oid=o1"], at(0), at(45), id="s1")]
    a = Engine(cf)
    for t, cs in steps[:3]:
        a.evaluate(at(t), cs, every, sil)
    a.ack(fingerprint(obj.labels), "ann", at(21))
    # stored as a table would hold them: JSON text, naive UTC times
    rows = [{k: (json.dumps(v) if isinstance(v, (dict, list)) else
                 v.replace(tzinfo=None) if isinstance(v, datetime) else v)
             for k, v in x.to_dict().items()} for x in a.alerts.values()]
    assert list(rows[0]) == [c for c, _ in S.TABLES["alert"]]  # the alert table's columns
    assert [(r["alertname"], r["silenced_by"], r["acked_by"]) for r in rows] == [
        ("ObjectAnomaly", '["s1"]', "ann"), ("StreamStalled", "[]", None)]
    b = Engine(cf, [Alert.from_dict(r) for r in rows])
    assert b.alerts == a.alerts
    for t, cs in steps[3:]:
        assert b.evaluate(at(t), cs, every, sil) == a.evaluate(at(t), cs, every, sil)
    assert b.alerts == a.alerts and [x.state for x in a.alerts.values()] == [PENDING]


# -- grouping and notification ---------------------------------------------------------------

GCONF = dataclasses.replace(conf(), group_by=("alertname", "line"), group_wait_seconds=10,
                            group_interval_seconds=60, repeat_interval_seconds=300)


def firing(name, line, t, **kw):
    labels = {"alertname": name, "line": line, **kw}
    return Alert(fingerprint(labels), "r", labels, {"summary": name}, FIRING, at(t), at(t),
                 updated_at=at(t))


def resolved(a, t):
    return dataclasses.replace(a, state=RESOLVED, ends_at=at(t), updated_at=at(t))


def fps(n):
    return [(a.labels.get("oid"), a.state) for a in n.alerts]


def test_grouper_timings():
    g = Grouper(GCONF)
    a1 = firing("LineAnomalyRate", "2", 0, oid="a")
    g.feed([a1], at(0))
    assert g.due(at(9)) == []                                 # group_wait
    (n,) = g.due(at(10))
    assert (n.group_key, n.group_labels, fps(n), n.status) == (
        '{}:{alertname="LineAnomalyRate", line="2"}', {"alertname": "LineAnomalyRate",
                                                       "line": "2"}, [("a", FIRING)], FIRING)
    a2 = firing("LineAnomalyRate", "2", 20, oid="b")
    g.feed([a2], at(20))
    assert g.due(at(30)) == [] and g.due(at(69)) == []        # group_interval
    (n,) = g.due(at(70))
    assert fps(n) == [("a", FIRING), ("b", FIRING)]
    for t in (130, 190, 250, 310, 370):                       # unchanged: not again...
        assert g.due(at(t)) == [], t
    (n,) = g.due(at(430))                                     # ...until repeat_interval
    assert fps(n) == [("a", FIRING), ("b", FIRING)] and n.at == at(430)
    g.feed([resolved(a1, 440)], at(440))
    (n,) = g.due(at(490))                                     # a resolved alert is news
    assert (fps(n), n.status) == ([("a", RESOLVED), ("b", FIRING)], FIRING)
    body = n.payload("soads", "http://127.0.0.1:9095")
    assert (body["groupKey"], body["status"], [x["status"] for x in body["alerts"]]) == (
        n.group_key, "firing", ["resolved", "firing"])
    row = n.to_dict("webhook", "http://127.0.0.1:9000/hook", "soads", "http://127.0.0.1:9095")
    assert (len(row["notification_id"]), row["group_key"], json.loads(row["payload"])) == (
        32, n.group_key, body)
    assert g.due(at(550)) == []                               # and told once
    g.feed([resolved(a2, 560)], at(560))
    (n,) = g.due(at(610))
    assert (fps(n), n.status) == ([("b", RESOLVED)], RESOLVED)
    assert g.groups == {}                                     # an empty group is gone
    # groups are separate; an alert already older than group_wait is flushed at once
    g.feed([firing("LineAnomalyRate", "3", 0, oid="c")], at(1000))
    assert [n.group_labels["line"] for n in g.due(at(1000))] == ["3"]


def test_grouper_repeat_zero_never_repeats_and_muted_or_pending_are_not_sent():
    g = Grouper(dataclasses.replace(GCONF, repeat_interval_seconds=0))
    a = firing("StreamStalled", "", 0)
    g.feed([a], at(0))
    assert len(g.due(at(10))) == 1
    assert all(g.due(at(t)) == [] for t in range(70, 100000, 6000))
    g = Grouper(GCONF)
    muted = dataclasses.replace(firing("X", "1", 0), silenced_by=("s1",))
    pending = dataclasses.replace(firing("X", "1", 0, oid="p"), state=PENDING)
    g.feed([muted, pending], at(0))
    assert g.due(at(10)) == []
    g.feed([dataclasses.replace(muted, silenced_by=())], at(20))  # the silence expired
    (n,) = g.due(at(70))
    assert fps(n) == [(None, FIRING)]
    # resolved before anyone was told it fired: nothing to say
    g = Grouper(GCONF)
    g.feed([resolved(firing("Y", "1", 0), 5)], at(5))
    assert g.due(at(100)) == [] and g.groups == {}


def test_grouper_restored_from_its_log_does_not_notify_again():
    g = Grouper(GCONF)
    a1, a2 = firing("L", "2", 0, oid="a"), firing("L", "2", 0, oid="b")
    g.feed([a1, a2], at(0))
    assert len(g.due(at(10))) == 1
    log = [NotifyLog.from_dict(json.loads(json.dumps(e.to_dict(), default=str)))
           for e in g.log()]
    assert log == g.log()
    # a restart: the log, the firing alerts, and one resolved since the last notification
    r = Grouper(GCONF, log, [resolved(a1, 30), a2])
    g.feed([resolved(a1, 30)], at(30))
    assert [fps(n) for n in r.due(at(70))] == [fps(n) for n in g.due(at(70))] == [
        [("a", RESOLVED), ("b", FIRING)]]
    assert r.due(at(130)) == g.due(at(130)) == []


# -- JSON ----------------------------------------------------------------------------------

def test_alert_json_and_webhook_payload_v4():
    a = firing("LineAnomalyRate", "2", 0, severity="warning", job="events")
    b = dataclasses.replace(firing("LineAnomalyRate", "2", 0.25, severity="critical",
                                   job="events"), annotations={"summary": "other"})
    b = resolved(b, 60)
    assert core.alert_json(a, "http://x/a") == {
        "labels": {"alertname": "LineAnomalyRate", "line": "2", "severity": "warning",
                   "job": "events"},
        "annotations": {"summary": "LineAnomalyRate"}, "startsAt": "2026-11-30T08:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://x/a",
        "fingerprint": a.fingerprint, "status": "firing"}
    jb = core.alert_json(b)
    assert (jb["startsAt"], jb["endsAt"], jb["status"]) == (
        "2026-11-30T08:00:00.25Z", "2026-11-30T08:01:00Z", "resolved")
    p = core.webhook_payload("soads", "{}:{line=\"2\"}", {"line": "2"}, [a, b],
                             "http://127.0.0.1:9095")
    assert list(p) == ["version", "groupKey", "truncatedAlerts", "status", "receiver",
                       "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
                       "alerts"]
    assert p == {"version": "4", "groupKey": '{}:{line="2"}', "truncatedAlerts": 0,
                 "status": "firing", "receiver": "soads", "groupLabels": {"line": "2"},
                 "commonLabels": {"alertname": "LineAnomalyRate", "line": "2", "job": "events"},
                 "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9095",
                 "alerts": [core.alert_json(a), jb]}
    p = core.webhook_payload("soads", "k", {}, [b], "", max_alerts=1)
    assert (p["status"], p["truncatedAlerts"], p["commonAnnotations"]) == (
        "resolved", 0, {"summary": "other"})
    assert core.webhook_payload("soads", "k", {}, [a, b], "", max_alerts=1)["truncatedAlerts"] == 1
    # the Alertmanager v2 POST item: five keys; a firing alert may carry its validity
    item = core.alertmanager_item(a, "g", valid_until=at(240))
    assert item == {"labels": a.labels, "annotations": a.annotations,
                    "startsAt": "2026-11-30T08:00:00Z", "endsAt": "2026-11-30T08:04:00Z",
                    "generatorURL": "g"}


# -- rules -----------------------------------------------------------------------------------

EXPLANATION = {"step": 3, "read_point": "urn:epc:id:sgln:8801234.00002.IRT-03",
               "kind": "control", "attribute": None, "value": None, "probability": 0.00021,
               "expected": "urn:epc:id:sgln:8801234.00002.CNV-L2-CDC",
               "context": ["urn:epc:id:sgln:8801234.00002.CNV-L2-IRT", "<start>"]}


def score_row(oid, anomaly, is_anomaly, explanation):
    return {S.OID: oid, S.ANOMALY: anomaly, S.IS_ANOMALY: is_anomaly,
            S.EXPLANATION: None if explanation is None else json.dumps(explanation),
            S.MODEL_RUN_ID: "run1", S.LAST_TIME: datetime(2026, 11, 30, 7, 59)}


def test_object_anomaly_tiers_labels_and_summary():
    rule = config.ObjectAnomalyRule()
    got = rules.object_anomaly([
        score_row("o1", 12.0, True, EXPLANATION), score_row("o2", 5.0, True, {
            **EXPLANATION, "kind": "attribute", "attribute": "disposition",
            "value": "damaged", "expected": "in_progress", "read_point": RP,
            "context": [RP]}),
        score_row("o3", 3.0, False, None), score_row("o4", 6.0, True, None),
        score_row("o5", 7.0, True, {**EXPLANATION, "context": ["<start>"], "step": 0,
                                    "expected": None, "probability": None})],
        rule, r"-L(\d+)-")
    assert [c.labels for c in got] == [
        {"alertname": "ObjectAnomaly", "severity": "critical", "job": "events", "oid": "o1",
         "read_point": EXPLANATION["read_point"], "line": "2"},  # line of the read before
        {"alertname": "ObjectAnomaly", "severity": "warning", "job": "events", "oid": "o2",
         "read_point": RP, "line": "2"},
        {"alertname": "ObjectAnomaly", "severity": "warning", "job": "events", "oid": "o4"},
        {"alertname": "ObjectAnomaly", "severity": "warning", "job": "events", "oid": "o5",
         "read_point": EXPLANATION["read_point"]}]  # no line in IRT-03 nor before it
    assert [c.annotations["summary"] for c in got] == [
        "Object o1: a read at IRT-03 after CNV-L2-IRT is unlikely (p=0.00021, expected "
        "CNV-L2-CDC)",
        "Object o2: disposition=damaged at CNV-L2-ASM is unlikely (p=0.00021, expected "
        "in_progress)",
        "Object o4 is anomalous (score 6.00)",
        "Object o5: a read at IRT-03 as the first read is unlikely"]
    assert json.loads(got[0].annotations["explanation"]) == EXPLANATION
    assert "explanation" not in got[2].annotations
    assert [c.value for c in got] == [12.0, 5.0, 6.0, 7.0]
    assert got[0].at == datetime(2026, 11, 30, 7, 59, tzinfo=timezone.utc)


def rate_rows(read_point, counts):
    """anomaly_rate rows of consecutive hour windows: counts = [(n_objects, flagged), ...]."""
    return [{S.WINDOW_START: at(3600 * i), S.WINDOW_END: at(3600 * (i + 1)),
             S.READ_POINT: read_point, S.N_OBJECTS: n, S.FLAGGED: f, S.RATE: f / n,
             S.MODEL_RUN_ID: "run1", S.WRITER: S.WRITER_STREAM} for i, (n, f) in enumerate(counts)]


def test_anomaly_rate_per_read_point_and_line():
    rule = config.RateRule()  # newest window vs the 6 before; 2x and +2 points; 20 objects
    l2a = "urn:epc:id:sgln:8801234.00001.CNV-L2-ASM"
    l2b = "urn:epc:id:sgln:8801234.00002.CNV-L2-IRT"
    l3 = "urn:epc:id:sgln:8801234.00001.CNV-L3-ASM"
    rows = (rate_rows(l2a, [(100, 2)] * 6 + [(50, 5)])       # 2% -> 10%: 5x, critical
            + rate_rows(l2b, [(100, 2)] * 6 + [(50, 2)])     # 2% -> 4%: 2x, +2 points: warning
            + rate_rows(l3, [(100, 2)] * 6 + [(10, 5)])      # 50%, but 10 objects: quiet
            + rate_rows("urn:epc:id:sgln:8801234.00001.WND-01",
                        [(100, 10)] * 6 + [(100, 15)]))      # 10% -> 15%: 1.5x
    got = rules.anomaly_rate(rows, rule, r"-L(\d+)-")
    assert [(c.labels, round(c.value, 4)) for c in got] == [
        ({"alertname": "ReadPointAnomalyRate", "severity": "critical", "job": "events",
          "read_point": l2a, "line": "2"}, 0.1),
        ({"alertname": "ReadPointAnomalyRate", "severity": "warning", "job": "events",
          "read_point": l2b, "line": "2"}, 0.04)]
    assert got[0].annotations["summary"] == (
        "Anomaly rate at read point CNV-L2-ASM is 10.0% of 50 objects, 5.0x its baseline 2.0%")
    assert got[0].at == at(7 * 3600)
    # line 2: 7 of 100 (7%) vs 24 of 1200 (2%): 3.5x, a warning; line 3: 5 of 10, too few
    (line,) = rules.anomaly_rate(rows, rule, r"-L(\d+)-", by="line")
    assert (line.rule, line.labels, round(line.value, 4)) == (
        "line_rate", {"alertname": "LineAnomalyRate", "severity": "warning", "job": "events",
                      "line": "2"}, 0.07)
    assert rules.anomaly_rate(rate_rows(l2a, [(50, 5)]), rule, r"-L(\d+)-") == []  # no baseline


def test_alignment_drop_uses_the_newest_run():
    rule = config.AlignmentDropRule()

    def rows(run, means, start=0):
        return [{S.WINDOW_START: at(3600 * (start + i)), S.WINDOW_END: at(3600 * (start + i + 1)),
                 S.MEAN_SCORE: m, S.N_OBJECTS: n, S.RUN_ID: run} for i, (m, n) in enumerate(means)]
    base = [(0.9, 100), (0.8, 100)]
    (c,) = rules.alignment_drop(rows("r1", base + [(0.7, 50)]), rule)
    assert (c.labels, round(c.value, 3)) == (
        {"alertname": "AlignmentScoreDrop", "severity": "warning", "job": "events"}, 0.7)
    assert c.annotations["summary"] == "Alignment score fell to 0.700 from 0.850 (50 objects)"
    assert rules.alignment_drop(rows("r1", base + [(0.76, 50)]), rule) == []     # drop 0.09
    assert rules.alignment_drop(rows("r1", base + [(0.1, 10)]), rule) == []      # 10 objects
    # a new mining run starts its own baseline: the old run's windows do not count
    assert rules.alignment_drop(rows("r1", base) + rows("r2", [(0.5, 50)], 2), rule) == []


def test_sensor_anomaly_counts_the_windows_in_a_row():
    rule = config.SensorAnomalyRule(consecutive=3, critical_consecutive=5)
    flags = {"m1": [1, 0, 1, 1, 1], "m2": [1, 1, 1, 1, 1, 1], "m3": [1, 1, 1, 1, 0]}
    rows = [{S.MACHINE_ID: m, S.WINDOW_END: at(i), S.SCORE: 9.5 + i, S.THRESHOLD: 4.0,
             S.IS_ANOMALY: bool(f), S.MODEL_VERSION: "v1"}
            for m, fs in flags.items() for i, f in reversed(list(enumerate(fs)))]
    got = rules.sensor_anomaly(rows, rule)
    assert [(c.labels["machine_id"], c.labels["severity"], c.value) for c in got] == [
        ("m1", "warning", 13.5), ("m2", "critical", 14.5)]
    assert got[0].labels == {"alertname": "SensorAnomaly", "severity": "warning",
                             "job": "sensor_anomaly", "machine_id": "m1"}
    assert got[0].annotations["summary"] == (
        "Machine m1: 3 anomalous windows in a row (last score 13.5, threshold 4)")


def test_sensor_drift_reads_the_newest_row_per_model():
    rows = [{S.MODEL_VERSION: v, S.WINDOW_START: at(i), S.WINDOW_END: at(i + 1), S.N_WINDOWS: 120,
             S.JSD: j, S.DRIFTED: d}
            for v, i, j, d in [("v1", 0, 0.05, False), ("v1", 1, 0.2, True),
                               ("v2", 0, 0.3, True), ("v2", 1, 0.01, False)]]
    (c,) = rules.sensor_drift(rows, config.RuleConf())
    assert (c.labels, c.value) == ({"alertname": "SensorDrift", "severity": "warning",
                                    "job": "sensor_anomaly", "model_version": "v1"}, 0.2)
    assert c.annotations["summary"] == (
        "Sensor model v1: its score distribution drifted (JSD 0.200 over 120 windows)")


def test_pipeline_health_rules():
    rule = config.StreamStalledRule()  # 120 s, sinks ["events"]
    rows = [{S.SINK: "events", S.BATCH_ID: 7, S.CREATED_AT: datetime(2026, 11, 30, 7, 57)},
            {S.SINK: "events", S.BATCH_ID: 8, S.CREATED_AT: datetime(2026, 11, 30, 7, 58)},
            {S.SINK: "sensor_anomaly", S.BATCH_ID: 1, S.CREATED_AT: datetime(2026, 11, 29)}]
    assert rules.stream_stalled(rows, at(0), rule) == []              # 120 s: not yet
    (c,) = rules.stream_stalled(rows, at(1), rule)
    assert (c.labels, c.value) == ({"alertname": "StreamStalled", "severity": "critical",
                                    "job": "events"}, 121.0)
    assert c.annotations["summary"] == "Job events has committed no micro-batch for 121 s"
    assert rules.stream_stalled(rows, at(1), rule, backlog={"events": 0}) == []  # idle
    newest = {"events": {S.BATCH_ID: 8, S.CREATED_AT: datetime(2026, 11, 30, 7, 58)}}
    assert rules.stream_stalled(newest, at(1), rule) == [c]  # as soads.query.newest_batches
    every = dataclasses.replace(rule, sinks=())
    assert [c.labels["job"] for c in rules.stream_stalled(rows, at(1), every)] == [
        "events", "sensor_anomaly"]
    lag = config.ConsumerLagRule(max_lag=1000)
    (c,) = rules.consumer_lag({"events": 1001, "sensor_anomaly": 1000}, lag)
    assert (c.labels["alertname"], c.labels["job"], c.value) == ("ConsumerLagHigh", "events",
                                                                 1001.0)
    q = config.QuarantineRateRule()  # 5%, 100 records
    (c,) = rules.quarantine_rate({"events": (6, 100), "sensor_anomaly": (50, 99)}, q)
    assert (c.labels["job"], c.value, c.annotations["summary"]) == (
        "events", 0.06, "Job events quarantined 6.0% of 100 records")


def test_evaluate_rules_runs_the_enabled_rules_with_input():
    cf = conf(line_rate={"enabled": False})
    cands, evaluated = rules.evaluate_rules(
        cf, at(1), object_scores=[score_row("o1", 12.0, True, EXPLANATION)],
        anomaly_rates=iter(rate_rows(RP, [(100, 2)] * 6 + [(50, 5)])), lags={"events": 0})
    assert evaluated == ["object_anomaly", "read_point_rate", "consumer_lag"]
    assert [c.labels["alertname"] for c in cands] == ["ObjectAnomaly", "ReadPointAnomalyRate"]


# -- actions -----------------------------------------------------------------------------------

def test_actions_of_an_alert_and_their_ids_are_deterministic():
    acts = config.ActionsConf()
    rows = [score_row("o1", 12.0, True, EXPLANATION)]

    def run(t):
        eng = Engine(conf())
        (a,) = eng.evaluate(at(t), rules.object_anomaly(rows, config.ObjectAnomalyRule(),
                                                         r"-L(\d+)-"), ["object_anomaly"])
        return a, core.action_specs(a, acts)
    a, specs = run(0.5)
    assert [(s.name, s.type, s.channel, s.target_label, s.target) for s in specs] == [
        ("hold_object", "hold_object", "kafka", "oid", "o1")]
    assert specs == run(0.5)[1]                                # a replay: the same id
    assert a.alert_id == f"{a.fingerprint}-20261130T080000.500000Z"
    assert specs[0].action_id == core.action_id(a.alert_id, "hold_object")
    assert run(60)[1][0].action_id != specs[0].action_id       # a new alert: a new action
    # restored from a database that keeps times to the second: the same alert, the same action
    row = {k: v.replace(microsecond=0, tzinfo=None) if isinstance(v, datetime) else v
           for k, v in a.to_dict().items()}
    assert core.action_specs(Alert.from_dict(row), acts) == [
        dataclasses.replace(specs[0], starts_at=at(0))]
    assert specs[0].message() == {
        "actionId": specs[0].action_id, "alertId": a.alert_id, "action": "hold_object",
        "type": "hold_object", "target": {"oid": "o1"}, "fingerprint": a.fingerprint,
        "startsAt": "2026-11-30T08:00:00.5Z", "labels": a.labels,
        "summary": a.annotations["summary"]}
    assert specs[0].to_dict() == {
        "action_id": specs[0].action_id, "alert_id": a.alert_id, "fingerprint": a.fingerprint,
        "action_name": "hold_object", "action_type": "hold_object", "target": "o1",
        "channel": "kafka", "payload": json.dumps(specs[0].message()), "url": ""}
    assert core.action_specs(dataclasses.replace(a, state=PENDING), acts) == []
    assert core.action_specs(a, dataclasses.replace(acts, enabled=False)) == []
    hook = config.ActionsConf(rules=(config.ActionRule(
        "cmms", "maintenance_order", ("alertname=ObjectAnomaly",), "machine_id", "webhook",
        "http://127.0.0.1:8081/orders"),))
    assert core.action_specs(a, hook) == []                   # no machine_id label: no target
    (s,) = core.action_specs(dataclasses.replace(a, labels={**a.labels, "machine_id": "m"}), hook)
    assert (s.channel, s.url, s.target) == ("webhook", "http://127.0.0.1:8081/orders", "m")


# -- config ------------------------------------------------------------------------------------

def test_alerts_and_actions_files_load_and_are_the_defaults():
    cfg = config.load([os.path.join(CONF, "soads.toml"), os.path.join(CONF, "alerts.toml"),
                       os.path.join(CONF, "actions.toml")], env={})
    assert cfg.alerts == config.AlertsConf() and cfg.actions == config.ActionsConf()
    assert cfg.alerts.stream_stalled.sinks == ("events",) and len(cfg.alerts.inhibit) == 2
    assert cfg.alerts.inhibit[0].equal == ("job",)
    assert [a.name for a in cfg.actions.rules][:2] == ["hold_object", "inspect_object"]
    assert cfg.alerts.alertmanager_url == "http://127.0.0.1:9095"
    assert config.load(overrides=["alerts.object_anomaly.for_seconds=5"],
                       env={}).alerts.object_anomaly.for_seconds == 5.0


@pytest.mark.parametrize("text, message", [
    ('[alerts.object_anomaly]\nseverity = "high"\n',
     "alerts.object_anomaly.severity: expected one of info, warning, critical, got 'high'"),
    ('[alerts.consumer_lag]\nmax_lag = -1\n', "alerts.consumer_lag.max_lag: must be >= 0"),
    ('[alerts.sensor_anomaly]\nconsecutiv = 3\n',
     "unknown key(s) in [alerts.sensor_anomaly]: consecutiv"),
    ('[alerts]\nline_pattern = "L"\n', "alerts.line_pattern: needs a group (the line)"),
    ('[[alerts.inhibit]]\nsource_matchers = ["alertname=~("]\n',
     "alerts.inhibit[0].source_matchers: bad matcher 'alertname=~(': missing ), "
     "unterminated subpattern at position 0"),
    ('[alerts]\ninhibit = ["x"]\n', "alerts.inhibit: expected an array of tables"),
    ('[alerts]\nwebhook_urls = ["127.0.0.1:9000"]\n',
     "alerts.webhook_urls[0]: expected an http(s) URL, got '127.0.0.1:9000'"),
    ('[alerts]\nalertmanager_url = "localhost"\n',
     "alerts.alertmanager_url: expected an http(s) URL or \"\" (off), got 'localhost'"),
    ('[[actions.rules]]\nname = "a"\ntype = "explode"\n',
     "actions.rules[0].type: expected one of hold_object, stop_machine"),
    ('[[actions.rules]]\nname = "a"\nchannel = "webhook"\n',
     "actions.rules[0].url: a webhook action needs an http(s) url"),
    ('[[actions.rules]]\nname = "a"\nmatcher = ["x=y"]\n',
     "unknown key(s) in [actions.rules[0]]: matcher"),
    ('[[actions.rules]]\nname = "a"\n[[actions.rules]]\nname = "a"\n',
     "actions.rules: action names must be unique"),
])
def test_a_bad_rule_file_is_refused_with_the_key_and_reason(tmp_path, text, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load([bad], env={})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_core_imports_nothing_but_the_standard_library_and_soads_basics():
    code = ("import sys, soads.alerts.core, soads.alerts.rules; "
            "print(sorted(m for m in ('pyspark', 'torch', 'sqlalchemy', 'kafka', 'urllib.request',"
            " 'http.client', 'numpy', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             [os.path.join(HERE, "..")]
                             + [p for p in [os.environ.get("PYTHONPATH")] if p])})
    assert out.stdout.strip() == "[]"


def test_rows_go_through_the_alert_tables_and_come_back(tmp_path):
    # the contract with storage: to_dict rows fit soads.storage.alerts / soads.query (SQLite)
    from soads import query
    from soads.storage import alerts as store, tables

    db = f"sqlite:///{tmp_path}/a.db"
    tables.create_tables(tables.engine(db))
    sil = Silence.create(["oid=o1"], at(0), at(600), "ann", "line stop", id="s1")
    store.add_silence(db, {**sil.to_dict(), "created_at": at(0)})
    eng, g = Engine(conf()), Grouper(GCONF)
    obj = rules.object_anomaly([score_row("o1", 12.0, True, EXPLANATION),
                                score_row("o2", 12.0, True, EXPLANATION)],
                               config.ObjectAnomalyRule(), r"-L(\d+)-")
    changed = eng.evaluate(at(0.25), obj, ["object_anomaly"],
                           [Silence.from_dict(r) for r in query.silences(db)])
    g.feed(changed, at(0.25))
    (n,) = g.due(at(60))
    specs = [s for a in changed for s in core.action_specs(a, config.ActionsConf())]
    store.write_step(db, alerts=[a.to_dict() for a in changed],
                     notifications=[n.to_dict("webhook", "http://h", "soads", "")],
                     actions=[s.to_dict() for s in specs],
                     groups=[e.to_dict() for e in g.log()])
    back = {a.fingerprint: a for a in map(Alert.from_dict, query.alerts(db))}
    # the table keeps value and keep_firing_since: a restart goes on where it stopped
    assert back == {a.fingerprint: a for a in changed}
    assert {a.labels["oid"]: a.silenced_by for a in back.values()} == {"o1": ("s1",), "o2": ()}
    assert [NotifyLog.from_dict(r) for r in query.alert_groups(db)] == g.log()
    assert [(r["action_id"], r["target"]) for r in query.alert_actions(db)] == [
        (s.action_id, "o2") for s in specs]  # o1 is silenced: no action
