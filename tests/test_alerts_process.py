"""The alert process (soads.alerts.process) over real tables, as `soads alerts run` runs it.

- Embedded default (SQLite, no Kafka; fast): object_score rows written as the event job writes
  them (with their micro-batch id) fire ObjectAnomaly alerts with their labels and tiers, the
  actions are recorded, the read position moves on, one alert per object, keep_firing_for,
  silences and acks through the CLI, inhibition by a stalled stream, a restart that repeats
  nothing; webhooks to a real local HTTP receiver (Alertmanager's webhook JSON, version 4).
- Real parts (Kafka, MariaDB, Alertmanager; under CI=true a missing one fails): the alerts and
  actions topics and Alertmanager's API, and the job killed with SIGKILL while it works:
  every alert, message and action exactly once.
"""
import datetime as dt
import http.server
import json
import os
import random
import signal
import sys
import threading
import time
import uuid

import pytest
from streamtools import REPO, create_place, drop_place, kill, services_conf, start

from soads import cli, config, query, schema as S
from soads.alerts import core, delivery, process
from soads.storage import alerts as store, tables

CONFS = [os.path.join(REPO, c) for c in ("conf/soads.toml", "conf/alerts.toml",
                                         "conf/actions.toml")]
SGLN = "urn:epc:id:sgln:8801234.00001."


def load(db_url, *sets):
    """The shipped configuration on ``db_url``, no Alertmanager unless a test sets one."""
    return config.load(CONFS, [f"storage.db_url={db_url}", "alerts.alertmanager_url=", *sets])


def cli_args(db_url, *sets):
    out = []
    for c in CONFS:
        out += ["--conf", c]
    for s in (f"storage.db_url={db_url}", "alerts.alertmanager_url=", *sets):
        out += ["--set", s]
    return out


class Clock:
    """An injected clock: a fixed start (by default a minute ahead of the wall clock, so a
    silence the CLI makes now is already in force) plus the seconds the test moved it on."""

    def __init__(self, lead=60):
        self.t = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + \
            dt.timedelta(seconds=lead)

    def __call__(self):
        return self.t

    def advance(self, seconds):
        self.t += dt.timedelta(seconds=seconds)
        return self.t


def explanation(read_point, before="WND-07", kind="control"):
    """A context detector explanation (soads.detect.context's keys)."""
    return {"step": 2, "read_point": SGLN + read_point, "kind": kind, "attribute": None,
            "value": None, "probability": 2.5e-05, "expected": SGLN + "CNV-L2-PCK",
            "context": [SGLN + before]}


def verdict(oid, anomaly, flagged, expl=None, last_time=None):
    return {S.OID: oid, S.ANOMALY: anomaly, S.IS_ANOMALY: flagged, S.EXPLANATION: expl,
            S.MODEL_RUN_ID: "ctx-run-1",
            S.LAST_TIME: last_time or dt.datetime(2026, 11, 30, 8, 0, 0)}


def write_batch(db_url, batch_id, rows, committed_at):
    """One micro-batch of the event job: its object_score rows (with the batch id) and its
    ledger row (sink_batch), in one transaction as soads.storage.sinks writes them."""
    eng = tables.engine(db_url)
    try:
        tables.create_tables(eng)
        with eng.begin() as conn:
            tables.upsert(conn, "sink_batch", [{S.SINK: "events", S.BATCH_ID: batch_id,
                                                S.CREATED_AT: committed_at.replace(tzinfo=None)}])
            tables.upsert(conn, "object_score", [tables._to_row("object_score", {
                **r, S.BATCH_ID: batch_id}) for r in rows])
    finally:
        eng.dispose()


def by_oid(db_url):
    out = {}
    for r in query.alerts(db_url, states=None):
        out.setdefault(r[S.LABELS].get("oid"), []).append(r)
    return out


@pytest.fixture()
def db(tmp_path):
    return f"sqlite:///{tmp_path}/soads.db"


class Receiver:
    """A real webhook receiver on 127.0.0.1 (a free port): records every POST (its JSON body
    and headers) and answers ``status``."""

    def __init__(self, status=200):
        self.status, self.posts = status, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()},
                                   json.loads(body)))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# -- embedded default: SQLite, no Kafka ------------------------------------------------------


def test_verdicts_fire_object_alerts_once_with_labels_tiers_and_recorded_actions(db):
    clock = Clock()
    cfg = load(db)
    crit = cfg.alerts.object_anomaly.critical_above
    write_batch(db, 0, [verdict("obj-a", 6.5, True, explanation("CNV-L2-ASM")),
                        verdict("obj-b", crit + 1.0, True, explanation("CNV-L3-ASM", "CNV-L3-IN")),
                        verdict("obj-c", 1.0, False),
                        verdict("obj-d", None, None)], clock())  # no model run: no verdict
    proc = process.AlertProcess(cfg, clock=clock)
    assert proc.kafka is False  # the embedded default reads files, not Kafka
    rep = proc.step()
    assert sorted((a.labels["oid"], a.state) for a in rep.changed) == [
        ("obj-a", "firing"), ("obj-b", "firing")]
    got = {oid: rows for oid, rows in by_oid(db).items()}
    assert sorted(got) == ["obj-a", "obj-b"] and all(len(v) == 1 for v in got.values())
    a, b = got["obj-a"][0], got["obj-b"][0]
    assert a[S.LABELS] == {"alertname": "ObjectAnomaly", "severity": "warning", "job": "events",
                           "oid": "obj-a", "read_point": SGLN + "CNV-L2-ASM", "line": "2"}
    assert b[S.LABELS]["severity"] == "critical" and b[S.LABELS]["line"] == "3"
    assert a[S.FINGERPRINT] == core.fingerprint(a[S.LABELS])
    assert a[S.ALERT_ID] == core.alert_id(a[S.FINGERPRINT], clock())
    assert (a[S.STATE], a[S.STARTS_AT], a[S.ENDS_AT]) == ("firing", clock().replace(
        tzinfo=None), None)
    assert json.loads(a[S.ANNOTATIONS]["explanation"]) == explanation("CNV-L2-ASM")
    assert a[S.ANNOTATIONS]["summary"] == ("Object obj-a: a read at CNV-L2-ASM after WND-07 is "
                                           "unlikely (p=2.5e-05, expected CNV-L2-PCK)")
    # the actions of conf/actions.toml, recorded; without Kafka they cannot be sent: failed
    acts = {r[S.TARGET]: r for r in query.alert_actions(db)}
    assert {k: (r[S.ACTION_NAME], r[S.ACTION_TYPE], r[S.ALERT_ID]) for k, r in acts.items()} == {
        "obj-a": ("inspect_object", "notify_team", a[S.ALERT_ID]),
        "obj-b": ("hold_object", "hold_object", b[S.ALERT_ID])}
    assert all(r[S.STATUS] == store.FAILED and "no Kafka" in r[S.ERROR] for r in acts.values())
    assert json.loads(acts["obj-b"][S.PAYLOAD])["target"] == {"oid": "obj-b"}
    assert query.alert_notifications(db) == []  # no Kafka, no webhook
    assert query.alert_cursors(db) == {process.OBJECT_CURSOR: 0}

    # nothing new: no change, the old batch's rows are not read again
    rep = proc.step()
    assert rep.candidates == 0 and [a.state for a in rep.changed] == ["firing", "firing"]
    assert all(a.keep_firing_since == clock() for a in rep.changed)  # not seen this time
    # obj-a seen again with another worst step (another read point, now critical): ONE alert
    clock.advance(5)
    write_batch(db, 1, [verdict("obj-a", crit + 2.0, True, explanation("CNV-L4-ASM"))], clock())
    rep = proc.step()
    assert rep.candidates == 1
    rows = by_oid(db)["obj-a"]
    assert len(rows) == 1 and rows[0][S.ALERT_ID] == a[S.ALERT_ID]
    assert rows[0][S.LABELS] == a[S.LABELS] and rows[0][S.KEEP_FIRING_SINCE] is None
    assert json.loads(rows[0][S.ANNOTATIONS]["explanation"])["read_point"] == SGLN + "CNV-L4-ASM"
    assert len(query.alert_actions(db)) == 2  # no new action
    assert query.alert_cursors(db) == {process.OBJECT_CURSOR: 1}
    proc.close()


def test_soads_alerts_run_list_and_actions_on_the_embedded_default(db, capsys):
    write_batch(db, 0, [verdict("obj-a", 6.5, True, explanation("CNV-L2-ASM"))],
                dt.datetime.now(dt.timezone.utc))
    assert cli.main(["alerts", "run", "--steps", "2",
                     *cli_args(db, "alerts.evaluation_seconds=0.05")]) == 0
    err = capsys.readouterr().err
    assert "Kafka topics off; Alertmanager off; webhooks 0" in err
    (row,) = query.alerts(db)
    assert cli.main(["alerts", "list", *cli_args(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{row[S.ALERT_ID]}  firing   warning  ObjectAnomaly ")
    assert "line=2 read_point=" + SGLN + "CNV-L2-ASM oid=obj-a job=events" in out[0]
    assert out[1].strip() == row[S.ANNOTATIONS]["summary"]
    assert cli.main(["alerts", "actions", "--json", *cli_args(db)]) == 0
    (act,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (act[S.ACTION_NAME], act[S.STATUS], act[S.ALERT_ID]) == (
        "inspect_object", "failed", row[S.ALERT_ID])
    assert cli.main(["alerts", "list", "--state", "resolved", *cli_args(db)]) == 0
    assert capsys.readouterr().out == "no resolved alerts\n"


def test_an_object_alert_resolves_keep_firing_for_after_it_was_last_seen(db):
    clock = Clock()
    cfg = load(db, "alerts.object_anomaly.keep_firing_for_seconds=30")
    write_batch(db, 0, [verdict("obj-a", 6.5, True, explanation("CNV-L2-ASM"))], clock())
    proc = process.AlertProcess(cfg, clock=clock)
    t0 = clock()
    proc.step()
    clock.advance(10)
    proc.step()  # not seen: keeps firing from now
    clock.advance(29)
    assert proc.step().changed == []
    assert [r[S.STATE] for r in by_oid(db)["obj-a"]] == ["firing"]
    clock.advance(1)
    rep = proc.step()
    assert [(a.state, a.ends_at) for a in rep.changed] == [("resolved", t0 + dt.timedelta(
        seconds=40))]
    (row,) = by_oid(db)["obj-a"]
    assert (row[S.STATE], row[S.ENDS_AT]) == ("resolved", (t0 + dt.timedelta(seconds=40))
                                              .replace(tzinfo=None))
    # flagged again later: a new alert (a new alert_id), the first stays resolved
    clock.advance(5)
    write_batch(db, 1, [verdict("obj-a", 6.5, True, explanation("CNV-L2-ASM"))], clock())
    proc.step()
    rows = by_oid(db)["obj-a"]
    assert sorted(r[S.STATE] for r in rows) == ["firing", "resolved"]
    assert len({r[S.ALERT_ID] for r in rows}) == 2
    assert len(query.alert_actions(db)) == 2
    proc.close()


def test_a_silence_mutes_a_new_alert_until_unsilence_then_its_actions_start(db, capsys):
    clock = Clock()
    with Receiver() as hook:
        sets = (f"alerts.webhook_urls={hook.url}", "alerts.group_wait_seconds=0")
        assert cli.main(["alerts", "silence", "alertname=ObjectAnomaly", "--for", "1h",
                         "--by", "tester", "--comment", "maintenance",
                         *cli_args(db, *sets)]) == 0
        out = capsys.readouterr().out
        sid = out.split()[1].rstrip(":")
        assert out.startswith(f"silence {sid}: alertname=\"ObjectAnomaly\" until ")
        (sil,) = query.silences(db)
        assert (sil[S.SILENCE_ID], sil[S.MATCHERS], sil[S.CREATED_BY], sil[S.COMMENT]) == (
            sid, ['alertname="ObjectAnomaly"'], "tester", "maintenance")
        assert sil[S.ENDS_AT] - sil[S.STARTS_AT] == dt.timedelta(hours=1)

        cfg = load(db, *sets)
        write_batch(db, 0, [verdict("obj-a", 6.5, True, explanation("CNV-L2-ASM"))], clock())
        proc = process.AlertProcess(cfg, clock=clock)
        proc.step()
        (row,) = by_oid(db)["obj-a"]
        assert row[S.STATE] == "firing" and row[S.SILENCED_BY] == [sid]
        assert query.alert_actions(db) == [] and query.alert_notifications(db) == []
        clock.advance(1)
        proc.step()
        assert hook.posts == [] and query.alert_actions(db) == []
        assert cli.main(["alerts", "list", *cli_args(db)]) == 0
        assert "[silenced]" in capsys.readouterr().out

        assert cli.main(["alerts", "unsilence", sid, *cli_args(db)]) == 0
        assert capsys.readouterr().out.strip() == f"silence {sid} ended"
        (ended,) = query.silences(db)
        assert ended[S.STARTS_AT] == sil[S.STARTS_AT] and ended[S.ENDS_AT] < sil[S.ENDS_AT]
        assert cli.main(["alerts", "unsilence", sid, *cli_args(db)]) == 0  # safe to repeat
        assert query.silences(db) == [ended]
        assert cli.main(["alerts", "unsilence", "nope", *cli_args(db)]) == 2
        assert capsys.readouterr().err == ("soads alerts: no silence 'nope' (soads alerts "
                                           "silences shows the ids)\n")
        clock.advance(1)
        rep = proc.step()
        assert [(a.state, a.silenced_by) for a in rep.changed] == [("firing", ())]
        (row,) = by_oid(db)["obj-a"]
        assert row[S.SILENCED_BY] == [] and row[S.ALERT_ID] == rep.changed[0].alert_id
        (act,) = query.alert_actions(db)
        assert (act[S.ACTION_NAME], act[S.ALERT_ID]) == ("inspect_object", row[S.ALERT_ID])
        # its group was flushed (with nothing to say) while it was muted: the notification
        # waits for the group's next flush, group_interval later (Alertmanager's dispatcher)
        assert hook.posts == []
        clock.advance(cfg.alerts.group_interval_seconds)
        proc.step()
        assert [p[2]["alerts"][0]["labels"]["oid"] for p in hook.posts] == ["obj-a"]
        proc.close()
    # a silence that has not started yet: unsilence starts and ends it now (never an end
    # before its start)
    later = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(hours=2)
    store.add_silence(db, {S.SILENCE_ID: "later", S.MATCHERS: ["oid=obj-z"],
                           S.STARTS_AT: later, S.ENDS_AT: later + dt.timedelta(hours=1)})
    assert cli.main(["alerts", "unsilence", "later", *cli_args(db)]) == 0
    (pend,) = [r for r in query.silences(db) if r[S.SILENCE_ID] == "later"]
    assert pend[S.STARTS_AT] == pend[S.ENDS_AT] < later
    capsys.readouterr()
    # a silence with a bad matcher is a one-line error
    assert cli.main(["alerts", "silence", "oid=~(", *cli_args(db)]) == 2
    assert capsys.readouterr().err == ("soads alerts: bad matcher 'oid=~(': missing ), "
                                       "unterminated subpattern at position 0\n")


def test_an_ack_survives_the_process_writes(db, capsys):
    clock = Clock()
    cfg = load(db, "alerts.object_anomaly.keep_firing_for_seconds=30")
    write_batch(db, 0, [verdict("obj-a", 6.5, True, explanation("CNV-L2-ASM"))], clock())
    proc = process.AlertProcess(cfg, clock=clock)
    proc.step()
    (row,) = by_oid(db)["obj-a"]
    assert cli.main(["alerts", "ack", row[S.ALERT_ID], "--by", "op-7", *cli_args(db)]) == 0
    assert capsys.readouterr().out.strip() == f"acknowledged alert {row[S.ALERT_ID]} by op-7"
    (act,) = query.alert_actions(db)
    assert cli.main(["alerts", "ack", act[S.ACTION_ID], "--action", "--by", "op-7",
                     *cli_args(db)]) == 0
    assert cli.main(["alerts", "ack", "no-such-alert", *cli_args(db)]) == 2
    for step, wait in enumerate((20, 20, 20, 35)):  # keeps firing, is seen again, keeps
        clock.advance(wait)                               # firing, resolves: each is written
        if step == 1:
            write_batch(db, 1, [verdict("obj-a", 7.0, True, explanation("CNV-L2-ASM"))],
                        clock())
        assert proc.step().changed
        (row,) = by_oid(db)["obj-a"]
        assert row[S.ACKED_BY] == "op-7" and row[S.ACKED_AT] is not None
    assert row[S.STATE] == "resolved"
    (act,) = query.alert_actions(db)  # acknowledged, and still says it failed (no Kafka)
    assert (act[S.STATUS], act[S.ACKED_BY]) == (store.FAILED, "op-7")
    capsys.readouterr()
    assert cli.main(["alerts", "list", "--state", "resolved", *cli_args(db)]) == 0
    assert "acked by op-7" in capsys.readouterr().out
    proc.close()


def test_a_stalled_stream_inhibits_the_object_alerts_of_its_job(db, tmp_path):
    clock = Clock()
    incoming = tmp_path / "incoming"  # the file stream's input: a file waits there
    incoming.mkdir()
    (incoming / "events-1.json").write_text("{}")
    cfg = load(db, f"stream.input_path={incoming}")
    stalled = cfg.alerts.stream_stalled.stalled_seconds
    write_batch(db, 0, [verdict("obj-a", 6.5, True, explanation("CNV-L2-ASM"))],
                clock() - dt.timedelta(seconds=stalled + 30))
    proc = process.AlertProcess(cfg, clock=clock)
    proc.step()
    rows = {r[S.ALERTNAME]: r for r in query.alerts(db)}
    assert sorted(rows) == ["ObjectAnomaly", "StreamStalled"]
    st, ob = rows["StreamStalled"], rows["ObjectAnomaly"]
    assert st[S.LABELS] == {"alertname": "StreamStalled", "severity": "critical",
                            "job": "events"}
    assert (st[S.STATE], ob[S.STATE]) == ("firing", "firing")
    assert ob[S.INHIBITED_BY] == [st[S.FINGERPRINT]]
    # the stalled pipeline pages operations; the muted object starts nothing
    assert [(r[S.ACTION_NAME], r[S.TARGET]) for r in query.alert_actions(db)] == [
        ("page_operations", "events")]
    # the stream commits again: StreamStalled resolves, the object alert is unmuted and acts
    clock.advance(1)
    write_batch(db, 1, [], clock())
    rep = proc.step()
    assert sorted((a.labels["alertname"], a.state) for a in rep.changed) == [
        ("ObjectAnomaly", "firing"), ("StreamStalled", "resolved")]
    assert by_oid(db)["obj-a"][0][S.INHIBITED_BY] == []
    assert sorted(r[S.ACTION_NAME] for r in query.alert_actions(db)) == [
        "inspect_object", "page_operations"]
    proc.close()


def test_a_restart_repeats_no_alert_notification_or_action(db):
    clock = Clock()
    with Receiver() as hook:
        sets = (f"alerts.webhook_urls={hook.url}", "alerts.group_wait_seconds=0")
        cfg = load(db, *sets)
        write_batch(db, 0, [verdict("obj-a", 6.5, True, explanation("CNV-L2-ASM")),
                            verdict("obj-b", 6.0, True, explanation("CNV-L3-ASM"))], clock())
        proc = process.AlertProcess(cfg, clock=clock)
        proc.step()
        clock.advance(1)
        proc.step()  # not seen again: keeps firing (keep_firing_for)
        proc.close()
        snapshot = (query.alerts(db), query.alert_notifications(db), query.alert_actions(db),
                    query.alert_groups(db), query.alert_cursors(db))
        assert len(hook.posts) == 2 and len(snapshot[2]) == 2  # one group per line
        for _ in range(2):  # restarted twice, a step each, the same moment and a second later
            proc = process.AlertProcess(cfg, clock=clock)
            assert proc.step().changed == []
            proc.close()
            assert (query.alerts(db), query.alert_notifications(db), query.alert_actions(db),
                    query.alert_groups(db), query.alert_cursors(db)) == snapshot
            clock.advance(1)
        assert len(hook.posts) == 2

        # killed after its transaction, before delivering: the restart delivers it, once
        clock.advance(1)
        write_batch(db, 1, [verdict("obj-c", 6.0, True, explanation("CNV-L5-ASM"))], clock())
        proc = process.AlertProcess(cfg, clock=clock)
        proc.step(deliver=False)
        proc.close()
        (pending,) = query.alert_notifications(db, store.PENDING)
        for _ in range(2):
            proc = process.AlertProcess(cfg, clock=clock)
            proc.step()
            proc.close()
        assert [p[1]["idempotency-key"] for p in hook.posts[2:]] == [pending[S.NOTIFICATION_ID]]
        assert query.alert_notifications(db, store.PENDING) == []
        assert sorted(by_oid(db)) == ["obj-a", "obj-b", "obj-c"]
        assert all(len(v) == 1 for v in by_oid(db).values())
        assert len(query.alert_actions(db)) == 3


# -- webhooks: a real local HTTP receiver ----------------------------------------------------


def test_a_webhook_receives_the_group_once_in_alertmanager_v4_format(db):
    clock = Clock()
    with Receiver() as hook:
        cfg = load(db, f"alerts.webhook_urls={hook.url}", "alerts.group_wait_seconds=2",
                   "alerts.group_interval_seconds=5",
                   "alerts.object_anomaly.keep_firing_for_seconds=20")
        write_batch(db, 0, [verdict("obj-a", 6.5, True, explanation("CNV-L2-ASM")),
                            verdict("obj-b", 6.0, True, explanation("CNV-L2-IN"))], clock())
        proc = process.AlertProcess(cfg, clock=clock)
        t0 = clock()
        proc.step()
        assert hook.posts == []  # group_wait
        clock.advance(1)
        proc.step()
        assert hook.posts == []
        clock.advance(1)
        rep = proc.step()
        assert (rep.notifications, rep.delivered, rep.failed) == (1, 1, 0)
        ((path, headers, body),) = hook.posts
        (n,) = query.alert_notifications(db)
        assert (path, headers["content-type"], headers["idempotency-key"]) == (
            "/hook", "application/json", n[S.NOTIFICATION_ID])
        assert (n[S.STATUS], n[S.ATTEMPTS], n[S.CHANNEL], n[S.TARGET]) == (
            store.DELIVERED, 1, "webhook", hook.url)
        alerts = {r[S.LABELS]["oid"]: r for r in query.alerts(db)}
        assert {k: v for k, v in body.items() if k != "alerts"} == {
            "version": "4", "groupKey": '{}:{alertname="ObjectAnomaly", line="2"}',
            "truncatedAlerts": 0, "status": "firing", "receiver": "soads",
            "groupLabels": {"alertname": "ObjectAnomaly", "line": "2"},
            "commonLabels": {"alertname": "ObjectAnomaly", "severity": "warning",
                             "job": "events", "line": "2"},
            "commonAnnotations": {}, "externalURL": cfg.alerts.external_url}
        assert [(a["labels"]["oid"], a["fingerprint"], a["status"], a["startsAt"], a["endsAt"])
                for a in body["alerts"]] == [
            (oid, alerts[oid][S.FINGERPRINT], "firing", core.rfc3339(t0), core.ZERO_TIME)
            for oid in ("obj-a", "obj-b")]
        assert set(body["alerts"][0]) == {"labels", "annotations", "startsAt", "endsAt",
                                          "generatorURL", "fingerprint", "status"}
        for _ in range(3):  # unchanged: never again (repeat_interval 4 h)
            clock.advance(3)
            proc.step()
        assert len(hook.posts) == 1
        # both resolve (20 s after they were last seen): one resolved notification
        for _ in range(5):
            clock.advance(3)
            proc.step()
        assert [p[2]["status"] for p in hook.posts] == ["firing", "resolved"]
        assert [a["status"] for a in hook.posts[1][2]["alerts"]] == ["resolved", "resolved"]
        assert all(a["endsAt"] != core.ZERO_TIME for a in hook.posts[1][2]["alerts"])
        proc.close()


def test_a_resolution_not_yet_notified_is_notified_after_a_restart(db):
    """The alert resolved, its group's next flush had not come, the process restarted: the
    restarted one still tells the webhook (Alertmanager keeps it in its aggregation group)."""
    clock = Clock()
    with Receiver() as hook:
        cfg = load(db, f"alerts.webhook_urls={hook.url}", "alerts.group_wait_seconds=0",
                   "alerts.group_interval_seconds=30",
                   "alerts.object_anomaly.keep_firing_for_seconds=5")
        write_batch(db, 0, [verdict("obj-a", 6.5, True, explanation("CNV-L2-ASM")),
                            verdict("obj-b", 6.0, True, explanation("CNV-L2-IN"))], clock())
        proc = process.AlertProcess(cfg, clock=clock)
        proc.step()
        clock.advance(1)
        proc.step()
        clock.advance(6)
        assert sorted(a.state for a in proc.step().changed) == ["resolved", "resolved"]
        proc.close()
        assert [p[2]["status"] for p in hook.posts] == ["firing"]
        proc = process.AlertProcess(cfg, clock=clock)
        clock.advance(30)
        proc.step()
        assert [p[2]["status"] for p in hook.posts] == ["firing", "resolved"]
        assert sorted(a["labels"]["oid"] for a in hook.posts[1][2]["alerts"]) == ["obj-a",
                                                                                 "obj-b"]
        clock.advance(30)
        proc.step()  # and only once
        proc.close()
        proc = process.AlertProcess(cfg, clock=clock)
        clock.advance(30)
        proc.step()
        proc.close()
        assert len(hook.posts) == 2


def test_a_group_whose_alerts_are_all_muted_sends_no_empty_notification(db):
    clock = Clock()
    with Receiver() as hook:
        cfg = load(db, f"alerts.webhook_urls={hook.url}", "alerts.group_wait_seconds=0",
                   "alerts.group_interval_seconds=5",
                   "alerts.object_anomaly.keep_firing_for_seconds=5")
        write_batch(db, 0, [verdict("obj-a", 6.5, True, explanation("CNV-L2-ASM"))], clock())
        proc = process.AlertProcess(cfg, clock=clock)
        proc.step()
        sil = core.Silence.create(["oid=obj-a"], clock(), clock() + dt.timedelta(hours=1))
        store.add_silence(db, {k: v.replace(tzinfo=None) if isinstance(v, dt.datetime) else v
                               for k, v in sil.to_dict().items()})
        for _ in range(4):  # silenced, then resolved while silenced
            clock.advance(3)
            proc.step()
        proc.close()
        assert [r[S.STATE] for r in query.alerts(db)] == ["resolved"]
        assert [(p[2]["status"], len(p[2]["alerts"])) for p in hook.posts] == [("firing", 1)]
        assert len(query.alert_notifications(db)) == 1


def test_a_webhook_answering_500_is_retried_then_recorded_failed(db):
    clock = Clock()
    with Receiver(status=500) as hook:
        cfg = load(db, f"alerts.webhook_urls={hook.url}", "alerts.group_wait_seconds=0",
                   "alerts.webhook_retries=2", "alerts.webhook_backoff_seconds=0.01")
        write_batch(db, 0, [verdict("obj-a", 6.5, True, explanation("CNV-L2-ASM"))], clock())
        proc = process.AlertProcess(cfg, clock=clock)
        t = time.monotonic()
        rep = proc.step()
        assert time.monotonic() - t < 2.0
        assert (rep.notifications, rep.delivered, rep.failed) == (1, 0, 1)
        assert len(hook.posts) == 3  # the first attempt and two retries
        (n,) = query.alert_notifications(db)
        assert (n[S.STATUS], n[S.ATTEMPTS]) == (store.FAILED, 3)
        assert n[S.ERROR] == f"POST {hook.url}: HTTP 500 Internal Server Error"
        assert n[S.SENT_AT] is not None
        proc.step()  # recorded, not sent again and again
        assert len(hook.posts) == 3
        # the alert stays in the table
        assert [r[S.STATE] for r in query.alerts(db)] == ["firing"]
        proc.close()
    # the retry settings are checked like every other
    with pytest.raises(config.ConfigError, match="alerts.webhook_retries: must be >= 0"):
        load(db, "alerts.webhook_retries=-1")


# -- the real parts: Kafka topics, MariaDB, Alertmanager ---------------------------------------


def read_topic(bootstrap, topic, timeout_s=10.0):
    """Every message of ``topic``: [(key, value dict)]."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                      consumer_timeout_ms=int(timeout_s * 1000))
    try:
        parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        left = sum(ends.values())
        out = []
        while left > 0:
            batch = c.poll(timeout_ms=int(timeout_s * 1000))
            if not batch:
                break
            for msgs in batch.values():
                for m in msgs:
                    out.append((m.key.decode(), json.loads(m.value)))
                    left -= 1
        return out
    finally:
        c.close()


def delete_topics(bootstrap, names):
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.delete_topics(list(names))
        admin.close()
    except Exception:  # noqa: BLE001 - cleanup only
        pass


@pytest.fixture()
def place(tmp_path):
    conf = services_conf("kafka", "mariadb", "alertmanager")
    p = create_place(conf, "alerts")
    tag = uuid.uuid4().hex[:10]
    p.alerts_topic, p.actions_topic = f"soads-alerts-{tag}", f"soads-actions-{tag}"
    p.conf = conf
    p.sets = ("stream.source=kafka", f"stream.kafka_bootstrap={p.bootstrap}",
              f"stream.topic={p.topic}", f"stream.quarantine_topic={p.qtopic}",
              f"stream.checkpoint_root={tmp_path}/checkpoints",
              f"alerts.alerts_topic={p.alerts_topic}", f"alerts.actions_topic={p.actions_topic}")
    yield p
    drop_place(conf, p)
    delete_topics(p.bootstrap, [p.alerts_topic, p.actions_topic])


def test_kafka_topics_and_alertmanager_carry_the_alert_and_its_action(place):
    from soads import services

    am = services.alertmanager_url(place.conf)
    clock = Clock(lead=-120)  # in the past: Alertmanager takes the resolved endsAt as over
    cfg = load(place.db_url, *place.sets, f"alerts.alertmanager_url={am}",
               "alerts.object_anomaly.keep_firing_for_seconds=30")
    oid = f"obj-{uuid.uuid4().hex[:8]}"
    crit = cfg.alerts.object_anomaly.critical_above
    write_batch(place.db_url, 0, [verdict(oid, crit + 1.0, True, explanation("CNV-L2-ASM"))],
                clock())
    proc = process.AlertProcess(cfg, clock=clock)
    assert proc.kafka is True  # [stream] source = kafka: the topics are on
    rep = proc.step()
    assert [a.state for a in rep.changed] == ["firing"]
    (alert,) = query.alerts(place.db_url)
    (n,) = query.alert_notifications(place.db_url)
    (act,) = query.alert_actions(place.db_url)
    assert (n[S.STATUS], n[S.CHANNEL], n[S.TARGET]) == (store.DELIVERED, "kafka",
                                                        place.alerts_topic)
    assert (act[S.STATUS], act[S.ACTION_NAME], act[S.TARGET]) == (store.DELIVERED,
                                                                  "hold_object", oid)
    ((key, msg),) = read_topic(place.bootstrap, place.alerts_topic)
    assert key == n[S.NOTIFICATION_ID]
    assert (msg["alertId"], msg["fingerprint"], msg["status"], msg["labels"]) == (
        alert[S.ALERT_ID], alert[S.FINGERPRINT], "firing", alert[S.LABELS])
    ((akey, amsg),) = read_topic(place.bootstrap, place.actions_topic)
    assert akey == act[S.ACTION_ID]
    assert (amsg["action"], amsg["type"], amsg["target"], amsg["alertId"]) == (
        "hold_object", "hold_object", {"oid": oid}, alert[S.ALERT_ID])
    # Alertmanager has it, under the same fingerprint
    res = delivery.get_alerts(am, filters={"oid": oid})
    assert res.ok, res.error
    assert [(a["fingerprint"], a["labels"]) for a in res.data] == [
        (alert[S.FINGERPRINT], alert[S.LABELS])]
    # resolved: a resolved message, and Alertmanager no longer lists it as active
    clock.advance(5)
    proc.step()
    clock.advance(31)
    rep = proc.step()
    assert [a.state for a in rep.changed] == ["resolved"]
    msgs = read_topic(place.bootstrap, place.alerts_topic)
    assert [(m["status"], m["alertId"]) for _, m in msgs] == [
        ("firing", alert[S.ALERT_ID]), ("resolved", alert[S.ALERT_ID])]
    assert msgs[1][1]["endsAt"] != core.ZERO_TIME and len({k for k, _ in msgs}) == 2
    assert len(read_topic(place.bootstrap, place.actions_topic)) == 1
    res = delivery.get_alerts(am, filters={"oid": oid})
    assert res.ok and res.data == [], res.data
    proc.close()


def wait_for(cond, seconds, job, tmp_path, every=0.02):
    deadline = time.monotonic() + seconds
    while not cond():
        if job.poll() is not None:
            pytest.fail(f"the job ended ({job.returncode}): see {tmp_path / 'job.log'}")
        if time.monotonic() > deadline:
            pytest.fail(f"not done after {seconds} s: see {tmp_path / 'job.log'}")
        time.sleep(every)


def test_a_muted_alert_whose_firing_was_published_publishes_its_resolution(db, tmp_path):
    from soads import services

    conf = services_conf("kafka")
    bootstrap = services.kafka_bootstrap(conf)
    tag = uuid.uuid4().hex[:10]
    topic, actions = f"soads-alerts-{tag}", f"soads-actions-{tag}"
    cfg = load(db, f"stream.kafka_bootstrap={bootstrap}", f"stream.topic=soads-none-{tag}",
               "stream.quarantine_topic=", f"stream.checkpoint_root={tmp_path}/checkpoints",
               f"alerts.alerts_topic={topic}", f"alerts.actions_topic={actions}",
               "alerts.object_anomaly.keep_firing_for_seconds=5")
    clock = Clock()

    def silence(oid):
        sil = core.Silence.create([f"oid={oid}"], clock(), clock() + dt.timedelta(hours=1))
        store.add_silence(db, {k: v.replace(tzinfo=None) if isinstance(v, dt.datetime) else v
                               for k, v in sil.to_dict().items()})

    try:
        silence("obj-c")  # muted from the start: never announced
        write_batch(db, 0, [verdict(o, 6.5, True, explanation("CNV-L2-ASM"))
                            for o in ("obj-a", "obj-b", "obj-c")], clock())
        proc = process.AlertProcess(cfg, kafka=True, clock=clock)
        proc.step()
        silence("obj-b")  # muted after its firing was published
        clock.advance(1)
        proc.step()
        assert [r[S.SILENCED_BY] != [] for r in sorted(query.alerts(db),
                                                       key=lambda r: r[S.LABELS]["oid"])] == [
            False, True, True]
        clock.advance(5)
        assert sorted(a.state for a in proc.step().changed) == ["resolved"] * 3
        proc.close()
        msgs = [(m["labels"]["oid"], m["status"]) for _, m in read_topic(bootstrap, topic)]
        assert sorted(msgs[:2]) == [("obj-a", "firing"), ("obj-b", "firing")]
        assert sorted(msgs[2:]) == [("obj-a", "resolved"), ("obj-b", "resolved")]
        assert sorted(json.loads(m[S.PAYLOAD])["target"]["oid"]
                      for m in query.alert_actions(db)) == ["obj-a", "obj-b"]
    finally:
        delete_topics(bootstrap, [topic, actions])


def test_an_action_acknowledged_while_pending_is_still_sent_then_acked(db, tmp_path, capsys):
    from soads import services

    conf = services_conf("kafka")
    bootstrap = services.kafka_bootstrap(conf)
    tag = uuid.uuid4().hex[:10]
    topic, actions = f"soads-alerts-{tag}", f"soads-actions-{tag}"
    sets = (f"stream.kafka_bootstrap={bootstrap}", f"stream.topic=soads-none-{tag}",
            "stream.quarantine_topic=", f"stream.checkpoint_root={tmp_path}/checkpoints",
            f"alerts.alerts_topic={topic}", f"alerts.actions_topic={actions}")
    clock = Clock()
    try:
        write_batch(db, 0, [verdict("obj-a", 6.5, True, explanation("CNV-L2-ASM"))], clock())
        proc = process.AlertProcess(load(db, *sets), kafka=True, clock=clock)
        proc.step(deliver=False)
        (act,) = query.alert_actions(db)
        assert cli.main(["alerts", "ack", act[S.ACTION_ID], "--action", "--by", "op-3",
                         *cli_args(db, *sets)]) == 0
        (act,) = query.alert_actions(db)
        assert (act[S.STATUS], act[S.ACKED_BY]) == (store.PENDING, "op-3")
        assert proc.deliver() == (2, 0)  # the alert's message and its action
        proc.close()
        (act,) = query.alert_actions(db)
        assert (act[S.STATUS], act[S.ACKED_BY], act[S.ATTEMPTS]) == (store.ACKED, "op-3", 1)
        assert [k for k, _ in read_topic(bootstrap, actions)] == [act[S.ACTION_ID]]
        # acknowledging a delivered action makes it acked
        clock.advance(1)
        write_batch(db, 1, [verdict("obj-b", 6.5, True, explanation("CNV-L2-ASM"))], clock())
        proc = process.AlertProcess(load(db, *sets), kafka=True, clock=clock)
        proc.step()
        proc.close()
        (b,) = [r for r in query.alert_actions(db) if r[S.TARGET] == "obj-b"]
        assert b[S.STATUS] == store.DELIVERED
        assert cli.main(["alerts", "ack", b[S.ACTION_ID], "--action", *cli_args(db)]) == 0
        (b,) = [r for r in query.alert_actions(db) if r[S.TARGET] == "obj-b"]
        assert b[S.STATUS] == store.ACKED and b[S.ACKED_BY]
    finally:
        delete_topics(bootstrap, [topic, actions])


def test_a_send_kafka_did_not_acknowledge_is_looked_for_before_it_is_sent_again(db,
                                                                                 tmp_path):
    """A message Kafka wrote but whose acknowledgement never came (a timeout): the row stays
    pending with the attempt recorded; the next delivery finds it in the topic and marks it
    instead of sending it a second time."""
    from soads import services
    from soads.alerts import topics

    conf = services_conf("kafka")
    bootstrap = services.kafka_bootstrap(conf)
    tag = uuid.uuid4().hex[:10]
    topic, actions = f"soads-alerts-{tag}", f"soads-actions-{tag}"
    sets = (f"stream.kafka_bootstrap={bootstrap}", f"stream.topic=soads-none-{tag}",
            "stream.quarantine_topic=", f"stream.checkpoint_root={tmp_path}/checkpoints",
            f"alerts.alerts_topic={topic}", f"alerts.actions_topic={actions}")
    clock = Clock(lead=0)
    try:
        write_batch(db, 0, [verdict("obj-a", 6.5, True, explanation("CNV-L2-ASM"))], clock())
        proc = process.AlertProcess(load(db, *sets), kafka=True, clock=clock)
        proc.step(deliver=False)
        (n,) = query.alert_notifications(db)
        prod = topics.producer(bootstrap)
        try:  # it reached the topic ...
            assert topics.send(prod, topic, [(n[S.NOTIFICATION_ID], n[S.PAYLOAD].encode())]) \
                == [(n[S.NOTIFICATION_ID], None)]
        finally:
            prod.close()
        # ... but the process saw a timeout
        store.mark_notification(db, n[S.NOTIFICATION_ID], store.PENDING, 1,
                                "KafkaTimeoutError: Timeout after waiting for 10 secs.")
        assert proc.deliver() == (2, 0)
        proc.close()
        (n,) = query.alert_notifications(db)
        assert (n[S.STATUS], n[S.ATTEMPTS]) == (store.DELIVERED, 1)
        assert [k for k, _ in read_topic(bootstrap, topic)] == [n[S.NOTIFICATION_ID]]
        assert len(read_topic(bootstrap, actions)) == 1
    finally:
        delete_topics(bootstrap, [topic, actions])


def marking(db, oids):
    """Whether the alert process is marking the alerts topic's messages of these objects: some
    marked delivered, some still pending (they were all sent, and acknowledged, before the
    first mark)."""
    st = {r[S.STATUS] for r in query.alert_notifications(db)
          if json.loads(r[S.PAYLOAD])["labels"]["oid"] in oids}
    return st >= {store.PENDING, store.DELIVERED}


def test_exactly_once_when_the_job_is_killed_with_sigkill(place, tmp_path):
    """jobs/alerts.py on the real parts, killed with SIGKILL again and again while micro-batches
    of verdicts arrive: every flagged object ends with one alert, one message in the alerts
    topic and one action in the actions topic; nothing stays pending."""
    rnd = random.Random(13)
    db = place.db_url
    toml = tmp_path / "alerts-test.toml"
    toml.write_text(f"[storage]\ndb_url = {json.dumps(db)}\n")
    cmd = [sys.executable, "jobs/alerts.py", *[a for c in CONFS for a in ("--conf", c)],
           "--conf", str(toml)]
    for s in (*place.sets, "alerts.alertmanager_url=", "alerts.evaluation_seconds=0.2",
              "alerts.stream_stalled.enabled=false"):
        cmd += ["--set", s]
    # the tables exist before the job starts, as the event job made them (two processes
    # creating the same MySQL tables at once may fail: "Table ... already exists")
    eng = tables.engine(db)
    tables.create_tables(eng)
    eng.dispose()
    flagged, batches, kills, caught, bid = set(), 8, 0, 0, 0
    logs = open(tmp_path / "job.log", "a")
    job = start(cmd, logs)

    def batch(tag, n):
        """One micro-batch of n verdicts (2 in 3 flagged); the flagged oids."""
        nonlocal bid
        rows, batch_oids = [], set()
        for i in range(n):
            oid = f"o{tag}-{i:03d}"
            bad = i % 3 != 0
            rows.append(verdict(oid, 12.0 if i % 2 else 6.0, bad,
                                explanation(f"CNV-L{i % 4 + 1}-ASM") if bad else None))
            if bad:
                flagged.add(oid)
                batch_oids.add(oid)
        write_batch(db, bid, rows, dt.datetime.now(dt.timezone.utc))
        bid += 1
        return batch_oids

    try:
        for b in range(batches):
            if b in (1, 5):  # killed after its transaction, while it marks what Kafka took
                # big batches: their marks take long enough for the kill to land among them;
                # on a loaded machine a kill may still come too late: another batch, up to 4
                for attempt in range(4):
                    batch_oids = batch(f"{b:02d}{attempt}", 150)
                    wait_for(lambda: {r[S.LABELS]["oid"] for r in query.alerts(db)} >= flagged,
                             60, job, tmp_path, every=0.005)
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline and not marking(db, batch_oids):
                        pass
                    kill(job, signal.SIGKILL)
                    hit = marking(db, batch_oids)
                    job = start(cmd, logs)
                    if hit:
                        break
                caught += hit
                kills += 1
            elif b in (3, 7):  # killed at any moment
                batch(f"{b:02d}", 25)
                time.sleep(rnd.uniform(0.1, 2.5))
                kill(job, signal.SIGKILL)
                kills += 1
                job = start(cmd, logs)
            else:
                batch(f"{b:02d}", 25)
                time.sleep(rnd.uniform(0.2, 0.8))
        wait_for(lambda: {r[S.LABELS]["oid"] for r in query.alerts(db)} >= flagged and
                 not query.alert_notifications(db, store.PENDING) and
                 not query.alert_actions(db, store.PENDING), 90, job, tmp_path, every=0.5)
        kill(job)
    finally:
        if job.poll() is None:
            kill(job, signal.SIGKILL)
        logs.close()
    assert kills == batches // 2
    with open(tmp_path / "job.log") as fh:
        reconciled = fh.read().count("was already in topic")
    # a kill between Kafka's acknowledgement and the outbox mark left rows pending that were
    # in the topic: the restart found them there instead of sending them again
    assert reconciled >= caught, (caught, reconciled)
    assert caught >= 1, "no kill came while the process marked its outbox"
    alerts = query.alerts(db)
    per_oid = {}
    for r in alerts:
        per_oid.setdefault(r[S.LABELS]["oid"], []).append(r)
    assert set(per_oid) == flagged
    assert {k: len(v) for k, v in per_oid.items() if len(v) != 1} == {}
    assert all(r[S.STATE] == "firing" for r in alerts)
    ids = {r[S.ALERT_ID] for r in alerts}
    assert query.alert_notifications(db, store.PENDING) == []
    assert query.alert_actions(db, store.PENDING) == []
    msgs = read_topic(place.bootstrap, place.alerts_topic)
    keys = [k for k, _ in msgs]
    assert len(keys) == len(set(keys)), "a duplicate key in the alerts topic"
    assert sorted(m["alertId"] for _, m in msgs) == sorted(ids)
    assert all(m["status"] == "firing" for _, m in msgs)
    assert set(keys) == {r[S.NOTIFICATION_ID] for r in query.alert_notifications(db)}
    acts = query.alert_actions(db)
    assert sorted(r[S.ALERT_ID] for r in acts) == sorted(ids)  # one action per alert
    amsgs = read_topic(place.bootstrap, place.actions_topic)
    akeys = [k for k, _ in amsgs]
    assert len(akeys) == len(set(akeys)), "a duplicate key in the actions topic"
    assert set(akeys) == {r[S.ACTION_ID] for r in acts}
    assert all(r[S.STATUS] == store.DELIVERED for r in acts)


def test_a_first_start_reads_the_verdicts_of_recent_micro_batches_only(db):
    # a database with history: a first start alerts on the batches of the last
    # keep_firing_for_seconds (alerts that would still fire), not on every verdict ever made
    clock = Clock()
    cfg = load(db)
    keep = cfg.alerts.object_anomaly.keep_firing_for_seconds
    write_batch(db, 0, [verdict("old", 7.0, True, explanation("CNV-L2-ASM"))],
                clock() - dt.timedelta(seconds=keep + 60))
    write_batch(db, 1, [verdict("new", 7.0, True, explanation("CNV-L2-ASM"))],
                clock() - dt.timedelta(seconds=keep - 60))
    proc = process.AlertProcess(cfg, clock=clock)
    assert [a.labels["oid"] for a in proc.step().changed if a.rule == "object_anomaly"] == [
        "new"]
    assert query.alert_cursors(db) == {process.OBJECT_CURSOR: 1}
    proc.close()
