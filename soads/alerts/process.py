"""The alert process (``soads alerts run``, ``jobs/alerts.py``): the rules of ``[alerts]``
evaluated continuously over what the jobs write, with Alertmanager's semantics
(:mod:`soads.alerts.core`), and the alerts and actions delivered exactly once.

One evaluation (:meth:`AlertProcess.step`):

1. reads through the read module (:mod:`soads.query`; no Spark, no torch): the object_score rows
   the event job wrote after the last micro-batch seen, the newest anomaly-rate, alignment and
   sensor windows, the ledger's newest micro-batch per sink, and (with Kafka) the event job's
   consumer lag and quarantine rate;
2. turns them into candidates (:mod:`soads.alerts.rules`) and the engine's changes (pending,
   firing, resolved, muted by silences and inhibition);
3. writes, in ONE transaction (:func:`soads.storage.alerts.write_step`), the changed alerts,
   the outbox (one message per fired or resolved alert for the alerts topic, the grouped webhook
   notifications that came due, the actions of every alert that fired) and how far it read;
4. delivers what is pending in the outbox and marks it (Kafka: acknowledged; webhooks: retried
   with backoff, recorded as failed when they never succeed), and pushes the changed alerts to
   Prometheus Alertmanager (which deduplicates by fingerprint, so a repeat is harmless; firing
   alerts are re-pushed before its ``resolve_timeout``).

Restart: the engine, the grouping and the read positions come back from the tables; an outbox
row left pending is delivered then, and one a killed process had already put in its Kafka topic
is found there and not sent again (:func:`soads.alerts.topics.published_ids`). Ids are made
from the alert (fingerprint, time its condition first held, state), so nothing repeats.

An object's alert keeps the labels it fired with while it fires (one alert per object): a later
micro-batch that finds a worse step refreshes its annotations (summary, explanation).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field

from soads import query, schema as S
from soads.alerts import core, delivery, rules, topics
from soads.storage import alerts as store, tables

logger = logging.getLogger(__name__)

OBJECT_CURSOR = "object_score"
"""Read position of the object verdicts: the last micro-batch id seen."""
KAFKA, WEBHOOK = "kafka", "webhook"
AM_REPUSH_SECONDS = 60.0
"""Firing alerts are pushed to Alertmanager again this often (its resolve_timeout is 5 min)."""
QUARANTINE_SPAN_SECONDS = 300.0
"""The quarantine rate is measured over the last five minutes of the Kafka topics."""
MARK_CHUNK = 50
"""Outbox rows marked delivered per transaction."""
KAFKA_RULES_SECONDS = 5.0
"""The consumer-lag and quarantine-rate rules read Kafka's offsets this often (not at every
evaluation: asking the broker costs tens of milliseconds; between two reads they are not
evaluated, so their alerts stay as they are)."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _naive(t: dt.datetime | None) -> dt.datetime | None:
    return None if t is None else t.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


@dataclass
class StepReport:
    """What one evaluation did (the process logs it; tests and the benchmark read it)."""

    at: dt.datetime
    candidates: int = 0
    changed: list = field(default_factory=list)
    notifications: int = 0
    actions: int = 0
    delivered: int = 0
    failed: int = 0
    seconds: float = 0.0


class AlertProcess:
    """The alert process over ``cfg`` (``[storage] db_url``; ``[alerts]``, ``[actions]``;
    ``[stream]`` for the event job's Kafka topics and checkpoint). ``kafka`` says whether the
    alerts and actions topics are written (and the lag / quarantine rules read Kafka); by
    default when the event job reads Kafka."""

    def __init__(self, cfg, kafka: bool | None = None, clock=utcnow):
        self.cfg = cfg
        self.conf = cfg.alerts
        self.db = cfg.storage.db_url
        self.clock = clock
        self.kafka = cfg.stream.source == "kafka" if kafka is None else kafka
        self.bootstrap = cfg.stream.kafka_bootstrap
        self.eng = tables.engine(self.db)
        tables.create_tables(self.eng)
        self._producer = None
        self._consumer = None
        self._last_kafka_rules = -KAFKA_RULES_SECONDS
        self._last_push = 0.0
        self._offsets: list[tuple[float, int, int]] = []  # (time, events end, quarantine end)
        self.restore()

    # -- state -------------------------------------------------------------------------------

    def restore(self) -> None:
        """Engine, grouping and read positions from the tables (a start or a restart)."""
        live = [core.Alert.from_dict(r)
                for r in query.alerts(self.eng, states=[core.PENDING, core.FIRING])]
        self.engine = core.Engine(self.conf, live)
        logs = [core.NotifyLog.from_dict(r) for r in query.alert_groups(self.eng)]
        self.grouper = core.Grouper(self.conf, logs, [a for a in live if a.state == core.FIRING]
                                    + self._resolved_untold(logs, live))
        self.cursors = query.alert_cursors(self.eng)
        if OBJECT_CURSOR not in self.cursors:
            # a first start reads the verdicts of the micro-batches committed within the last
            # keep_firing_for_seconds (those whose alerts would still fire), not a database's
            # whole history
            since = _naive(self.clock()) - dt.timedelta(
                seconds=self.conf.rule("object_anomaly").keep_firing_for_seconds)
            self.cursors[OBJECT_CURSOR] = query.last_batch_before(self.eng, "events", since)
        if self.kafka:
            topics.ensure_topics(self.bootstrap, [self.conf.alerts_topic,
                                                  self.conf.actions_topic])
        # rows a killed process left pending may be in their topic already (Kafka took them,
        # the mark did not happen): the next deliver() looks for them there first
        self._unsure = {r[S.NOTIFICATION_ID] for r in query.alert_notifications(
            self.eng, store.PENDING) if r[S.CHANNEL] == KAFKA} | {
            r[S.ACTION_ID] for r in query.alert_actions(self.eng, store.PENDING)
            if r[S.CHANNEL] == KAFKA}

    def _resolved_untold(self, logs, live) -> list[core.Alert]:
        """Resolved alerts whose group was last notified while they fired: their resolution
        is still to be notified (the grouper held them until its next flush when the process
        stopped), so the restored grouper gets them back (Grouper's restore contract)."""
        told = sorted({fp for e in logs for fp in e.firing} - {a.fingerprint for a in live})
        out: dict[str, core.Alert] = {}
        for i in range(0, len(told), 500):
            for r in query.alerts(self.eng, states=[core.RESOLVED],
                                  fingerprints=told[i:i + 500]):
                out.setdefault(r[S.FINGERPRINT], core.Alert.from_dict(r))  # newest first
        return [out[fp] for fp in sorted(out)]

    # -- one evaluation ----------------------------------------------------------------------

    def _inputs(self, now: dt.datetime) -> dict:
        c = self.conf
        since = self.cursors.get(OBJECT_CURSOR, -1)
        verdicts = query.verdicts_since(self.eng, since)
        if verdicts:
            self.cursors[OBJECT_CURSOR] = max(r[S.BATCH_ID] for r in verdicts)
        n_rate = max(c.rule(n).recent_windows + c.rule(n).baseline_windows
                     for n in ("read_point_rate", "line_rate"))
        n_align = c.rule("alignment_drop").recent_windows + \
            c.rule("alignment_drop").baseline_windows
        inputs = {
            "object_scores": verdicts,
            "anomaly_rates": query.anomaly_rates(self.eng, writer=S.WRITER_STREAM,
                                                 newest_windows=n_rate),
            "alignment_scores": query.alignment_windows(self.eng, newest_windows=n_align),
            "sensor_anomalies": query.sensor_anomalies(
                self.eng, limit=max(1, c.rule("sensor_anomaly").critical_consecutive) * 200),
            "sensor_drifts": query.sensor_drifts(self.eng, limit=50),
            "sink_batches": [{S.SINK: k, **v} for k, v in query.newest_batches(self.eng).items()],
        }
        if self.cfg.stream.source == "files":
            # the file stream is stalled only when files wait that arrived after its newest
            # micro-batch (an idle one, nothing arriving, is not)
            newest = {r[S.SINK]: r[S.CREATED_AT] for r in inputs["sink_batches"]}
            inputs["backlog"] = {rules.JOB_EVENTS: _files_after(
                self.cfg.stream.input_path, newest.get(rules.JOB_EVENTS))}
        if self.kafka and time.monotonic() - self._last_kafka_rules >= KAFKA_RULES_SECONDS:
            self._last_kafka_rules = time.monotonic()
            try:
                lag = self._lag()
                inputs["lags"] = {rules.JOB_EVENTS: lag}
                inputs["backlog"] = {rules.JOB_EVENTS: lag}
                q = self._quarantine()
                if q is not None:
                    inputs["quarantine"] = {rules.JOB_EVENTS: q}
            except Exception as e:  # Kafka unreachable: those rules wait, the others go on
                logger.warning("Kafka lag/quarantine not read (%s): those rules wait", e)
                if self._consumer is not None:
                    self._consumer.close()
                    self._consumer = None
        return inputs

    def _lag(self) -> int:
        st = self.cfg.stream
        ck = os.path.join(os.path.expanduser(st.checkpoint_root), "events")
        done = query.stream_offsets(ck)
        ends = query.topic_end_offsets(self.bootstrap, st.topic, consumer=self._offsets_reader())
        return sum(max(0, end - done.get((st.topic, p), 0)) for p, end in ends.items())

    def _quarantine(self) -> tuple[int, int] | None:
        st = self.cfg.stream
        if not st.quarantine_topic:
            return None
        t = time.monotonic()
        reader = self._offsets_reader()
        ev = sum(query.topic_end_offsets(self.bootstrap, st.topic, consumer=reader).values())
        qu = sum(query.topic_end_offsets(self.bootstrap, st.quarantine_topic,
                                         consumer=reader).values())
        self._offsets.append((t, ev, qu))
        while len(self._offsets) > 2 and self._offsets[1][0] < t - QUARANTINE_SPAN_SECONDS:
            self._offsets.pop(0)
        t0, ev0, qu0 = self._offsets[0]
        return qu - qu0, ev - ev0

    def _offsets_reader(self):
        if self._consumer is None:
            from kafka import KafkaConsumer

            self._consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                           enable_auto_commit=False)
        return self._consumer

    def _sticky(self, candidates: list[core.Candidate]) -> list[core.Candidate]:
        """An object's candidate takes the labels of its firing alert (one alert per object)."""
        firing = {a.labels.get("oid"): a for a in self.engine.alerts.values()
                  if a.rule == "object_anomaly"}
        out = []
        for c in candidates:
            a = firing.get(c.labels.get("oid")) if c.rule == "object_anomaly" else None
            out.append(c if a is None or a.labels == c.labels else core.Candidate(
                c.rule, dict(a.labels), c.annotations, c.value, c.at))
        return out

    def step(self, deliver: bool = True) -> StepReport:
        """One evaluation: read, evaluate, write (one transaction), deliver."""
        t0 = time.perf_counter()
        now = self.clock()
        report = StepReport(now)
        cursors_before = dict(self.cursors)
        try:
            inputs = self._inputs(now)
            candidates, evaluated = rules.evaluate_rules(self.conf, now, **inputs)
            candidates = self._sticky(candidates)
            silences = [core.Silence.from_dict(r)
                        for r in query.silences(self.eng, active_at=_naive(now))]
            changed = self.engine.evaluate(now, candidates, evaluated, silences)
        except Exception:
            self.cursors = cursors_before
            raise
        report.candidates = len(candidates)
        report.changed = changed
        self.grouper.feed(changed, now)
        due = self.grouper.due(now)
        notifications = self._notifications(changed, due, now)
        actions = self._actions(changed, now)
        store.write_step(self.eng, [a.to_dict() for a in changed], notifications, actions,
                         self.cursors,
                         [self.grouper.entries[n.group_key].to_dict() for n in due])
        report.notifications, report.actions = len(notifications), len(actions)
        if deliver:
            report.delivered, report.failed = self.deliver()
            self._push(changed)
        report.seconds = time.perf_counter() - t0
        if changed:
            logger.info("evaluation: %d candidates, %d alerts changed (%s), %d notifications, "
                        "%d actions; %.2f s", len(candidates), len(changed),
                        ", ".join(f"{a.labels.get('alertname')} {a.state}" for a in changed[:5])
                        + (" ..." if len(changed) > 5 else ""), len(notifications),
                        len(actions), report.seconds)
        return report

    def _notifications(self, changed, due, now) -> list[dict]:
        """Outbox rows: a message on the alerts topic per alert that fires or resolves
        unmuted (its id from the alert and the state: a refresh or a replay makes the same id,
        which the outbox keeps once), and each due group notification per webhook."""
        rows = []
        pending = {S.STATUS: store.PENDING, S.ATTEMPTS: 0, S.CREATED_AT: _naive(now)}
        if self.kafka:
            told = self._fired_told(a for a in changed if a.state == core.RESOLVED and a.muted)
            for a in changed:
                if a.state not in (core.FIRING, core.RESOLVED) or \
                        (a.muted and a.alert_id not in told):
                    continue
                rows.append({S.NOTIFICATION_ID: _digest(a.alert_id, a.state), S.CHANNEL: KAFKA,
                             S.TARGET: self.conf.alerts_topic, S.GROUP_KEY: None,
                             S.PAYLOAD: json.dumps({"alertId": a.alert_id, **core.alert_json(
                                 a, self.conf.external_url)}, ensure_ascii=False), **pending})
        for n in due:
            if not n.alerts:  # every alert of the group muted: nothing to say (Alertmanager's
                continue      # pipeline stops when its mute stage leaves no alert)
            for url in self.conf.webhook_urls:
                rows.append({**n.to_dict(WEBHOOK, url, self.conf.receiver,
                                         self.conf.external_url), **pending})
        return rows

    def _fired_told(self, alerts) -> set[str]:
        """The alert ids among ``alerts`` whose firing is on the alerts topic (or on its way:
        its outbox row): a muted alert that resolves is announced resolved if its firing was
        (a consumer of the topic must not be left with an alert that never ends); one muted
        from the start stays unannounced."""
        by_id = {_digest(a.alert_id, core.FIRING): a.alert_id for a in alerts}
        if not by_id:
            return set()
        ids = sorted(by_id)
        found = set()
        for i in range(0, len(ids), 500):
            found |= {by_id[r[S.NOTIFICATION_ID]] for r in query.alert_notifications(
                self.eng, notification_ids=ids[i:i + 500])}
        return found

    def _actions(self, changed, now) -> list[dict]:
        """Outbox rows of the actions of every firing, unmuted alert: their ids come from the
        alert, so a refresh, a replay or a restart starts none twice (the outbox keeps an id
        once). Without Kafka an action meant for the actions topic is recorded as failed."""
        rows = []
        for a in changed:
            for spec in core.action_specs(a, self.cfg.actions):
                row = {**spec.to_dict(), **{S.STATUS: store.PENDING, S.ATTEMPTS: 0,
                                            S.CREATED_AT: _naive(now)}}
                if spec.channel == KAFKA and not self.kafka:
                    row.update({S.STATUS: store.FAILED,
                                S.ERROR: "no Kafka: the alert process runs without the "
                                         "actions topic"})
                rows.append(row)
        return rows

    # -- delivery ----------------------------------------------------------------------------

    def _prod(self):
        if self._producer is None:
            self._producer = topics.producer(self.bootstrap)
        return self._producer

    def deliver(self) -> tuple[int, int]:
        """Send every pending outbox row; ``(delivered, failed)``."""
        ok = bad = 0
        pending_n = query.alert_notifications(self.eng, store.PENDING)
        pending_a = query.alert_actions(self.eng, store.PENDING)
        for rows, topic_of, key, mark in (
                (pending_n, lambda r: r[S.TARGET], S.NOTIFICATION_ID, store.mark_notification),
                (pending_a, lambda r: self.conf.actions_topic, S.ACTION_ID, store.mark_action)):
            kafka_rows = [r for r in rows if r[S.CHANNEL] == KAFKA]
            by_topic: dict[str, list] = {}
            for r in kafka_rows:
                by_topic.setdefault(topic_of(r), []).append(r)
            for topic, rs in by_topic.items():
                # a row sent before without an acknowledgement (a timeout), or left pending by
                # a killed process, may be in the topic all the same: looked for there first,
                # so it is never in it twice
                tried = [r for r in rs if (r[S.ATTEMPTS] or 0) > 0 or r[key] in self._unsure]
                found = topics.published_ids(self.bootstrap, topic, min(
                    r[S.CREATED_AT] for r in tried)) if tried else set()
                for r in tried:
                    if r[key] in found:
                        mark(self.eng, r[key], store.DELIVERED, r[S.ATTEMPTS] or 1)
                        ok += 1
                        logger.info("%s was already in topic %s: marked delivered", r[key], topic)
                rs = [r for r in rs if r[key] not in found]
                if not rs:
                    continue
                results = list(zip(topics.send(
                    self._prod(), topic, [(r[key], r[S.PAYLOAD].encode()) for r in rs]), rs))
                # the marks go MARK_CHUNK rows to a transaction (a commit per row cost the
                # database more than the sends); a kill between Kafka's acknowledgement and a
                # mark leaves rows pending that the restarted deliver() finds in the topic
                for c in range(0, len(results), MARK_CHUNK):
                    with self.eng.begin() as conn:
                        for (i, err), r in results[c:c + MARK_CHUNK]:
                            if err is None:
                                mark(conn, i, store.DELIVERED, (r[S.ATTEMPTS] or 0) + 1)
                                ok += 1
                            else:  # stays pending, the attempt and its error recorded: sent
                                # again next evaluation, unless it is in the topic after all
                                mark(conn, i, store.PENDING, (r[S.ATTEMPTS] or 0) + 1, err)
                                logger.warning("%s to topic %s not acknowledged: %s", i, topic,
                                               err)
            for r in rows:
                if r[S.CHANNEL] != WEBHOOK:
                    continue
                url = r[S.TARGET] if key == S.NOTIFICATION_ID else self._action_url(r)
                res = delivery.send_webhook(url, json.loads(r[S.PAYLOAD]),
                                            headers={"Idempotency-Key": r[key]},
                                            retries=self.conf.webhook_retries,
                                            backoff_seconds=self.conf.webhook_backoff_seconds,
                                            timeout=self.conf.webhook_timeout_seconds)
                # a failed webhook is recorded as failed with its error, never dropped
                mark(self.eng, r[key], store.DELIVERED if res.delivered else store.FAILED,
                     res.attempts, None if res.delivered else res.error)
                ok, bad = (ok + 1, bad) if res.delivered else (ok, bad + 1)
        self._unsure = set()
        return ok, bad

    def _action_url(self, row: dict) -> str:
        for r in self.cfg.actions.rules:
            if r.name == row[S.ACTION_NAME]:
                return r.url
        return ""

    def _push(self, changed) -> None:
        """Changed alerts (and, every AM_REPUSH_SECONDS, every firing one) to Alertmanager."""
        url = self.conf.alertmanager_url
        if not url:
            return
        now_m = time.monotonic()
        # a resolution is pushed muted or not: Alertmanager may have the alert from before it
        # was muted (one it never had is stored resolved and notifies nobody)
        send = [a for a in changed if (a.state == core.FIRING and not a.muted)
                or a.state == core.RESOLVED]
        if now_m - self._last_push >= AM_REPUSH_SECONDS:
            send = [a for a in self.engine.alerts.values()
                    if a.state == core.FIRING and not a.muted] + \
                [a for a in send if a.state == core.RESOLVED]
            self._last_push = now_m
        if not send:
            return
        res = delivery.post_alerts(url, [core.alertmanager_item(a, self.conf.external_url)
                                         for a in send])
        if not res.ok:
            logger.warning("Alertmanager push failed (tried again later): %s", res.error)
            self._last_push = 0.0

    # -- the loop ----------------------------------------------------------------------------

    def run(self, steps: int | None = None, stop=None) -> None:
        """Evaluate every ``evaluation_seconds`` until ``stop()`` says so (or ``steps`` ran)."""
        n = 0
        while (steps is None or n < steps) and not (stop and stop()):
            t = time.monotonic()
            try:
                self.step()
            except Exception as e:  # a database or Kafka outage: logged, tried again
                logger.error("evaluation failed (tried again in %.1f s): %s",
                             self.conf.evaluation_seconds, e)
                self.restore_after_error()
            n += 1
            time.sleep(max(0.0, self.conf.evaluation_seconds - (time.monotonic() - t)))

    def restore_after_error(self) -> None:
        try:
            self.restore()
        except Exception as e:  # still down: the next round tries again
            logger.error("restore failed: %s", e)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
        if self._consumer is not None:
            self._consumer.close()
        self.eng.dispose()



def _files_after(directory: str, since: dt.datetime | None) -> int:
    """Files in ``directory`` modified after ``since`` (naive UTC; None: every file)."""
    try:
        entries = [e for e in os.scandir(directory) if e.is_file()
                   and not e.name.startswith((".", "_"))]
    except FileNotFoundError:
        return 0
    if since is None:
        return len(entries)
    cut = since.replace(tzinfo=dt.timezone.utc).timestamp()
    return sum(1 for e in entries if e.stat().st_mtime > cut)
