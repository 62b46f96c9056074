"""Alerts (DESIGN.md "Alert"): the pure core, with Prometheus Alertmanager's semantics.

Each piece follows the Prometheus/Alertmanager code it names, with the time passed in (``now``,
an aware UTC datetime) instead of read from a clock:

- :func:`fingerprint`: prometheus/common ``model.LabelSet.Fingerprint`` (FNV-1a 64).
- :class:`Matcher`, :class:`Silence`: Alertmanager ``pkg/labels`` matchers (regexes anchored at
  both ends) and ``silence`` (active from ``starts_at`` until ``ends_at``).
- :class:`Engine`: Prometheus ``rules/alerting.go`` ``Eval`` (pending for ``for``, then firing;
  a pending alert that clears is dropped; a firing one is resolved, after ``keep_firing_for``;
  one alert per fingerprint) plus Alertmanager's mute stage: ``inhibit/inhibit.go`` ``Mutes``
  and silences. Muted alerts keep their state but are neither notified nor actioned.
- :class:`Grouper`: Alertmanager ``dispatch/dispatch.go`` aggregation groups (group_by,
  group_wait, group_interval) and ``notify.DedupStage.needsUpdate`` (repeat_interval; the same
  group is never notified twice unchanged).
- :func:`alert_json`, :func:`webhook_payload`: the alert and the webhook payload (version "4")
  as Alertmanager sends them (``notify/webhook``, ``template.Data``).
- :func:`action_specs`: the actions ``[actions]`` maps a firing alert to (paper 003, section 3.7:
  an automated action a few seconds after the alert), each with an id that a replay remakes.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable, Mapping, Sequence

from soads import schema as S
from soads.config import split_matcher

logger = logging.getLogger(__name__)

PENDING, FIRING, RESOLVED, INACTIVE = "pending", "firing", "resolved", "inactive"
"""Alert states. ``inactive``: a pending alert whose condition cleared before ``for`` (dropped;
storage may delete it)."""
ZERO_TIME = "0001-01-01T00:00:00Z"
"""``endsAt`` of a firing alert in Alertmanager's JSON (Go's zero time)."""

_FNV_OFFSET, _FNV_PRIME, _MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def fingerprint(labels: Mapping[str, str]) -> str:
    """Prometheus' ``model.LabelSet.Fingerprint()``: FNV-1a 64 over the labels sorted by name,
    each as name, 0xff, value, 0xff; 16 lowercase hex digits.

    >>> fingerprint({})
    'cbf29ce484222325'
    >>> fingerprint({"alertname": "A", "line": "2"}) == fingerprint({"line": "2", "alertname": "A"})
    True
    """
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name.encode(), b"\xff", str(labels[name]).encode(), b"\xff"):
            for byte in part:
                h = ((h ^ byte) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


def rfc3339(t: datetime | None) -> str:
    """``t`` in UTC as Go's RFC 3339 (nanosecond form, trailing zeros of the fraction dropped);
    None is Go's zero time.

    >>> rfc3339(datetime(2026, 11, 30, 1, 2, 3, 500000, tzinfo=timezone.utc)), rfc3339(None)
    ('2026-11-30T01:02:03.5Z', '0001-01-01T00:00:00Z')
    """
    if t is None:
        return ZERO_TIME
    t = as_utc(t)
    frac = f"{t.microsecond:06d}".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def as_utc(t: datetime | str | None) -> datetime | None:
    """An aware UTC datetime from a datetime (naive: taken as UTC, as the tables store it) or an
    ISO-8601 string; None stays None."""
    if t is None:
        return None
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _seconds(s: float) -> timedelta:
    return timedelta(seconds=s)


# ---------------------------------------------------------------------------------------------
# matchers and silences


@functools.lru_cache(maxsize=1024)
def _anchored(regex: str) -> re.Pattern:
    return re.compile(f"^(?:{regex})$")  # Alertmanager anchors every matcher regex


@dataclass(frozen=True)
class Matcher:
    """A label matcher: ``name`` ``op`` (``=``, ``!=``, ``=~``, ``!~``) ``value``. A missing label
    is the empty string (Alertmanager).

    >>> m = Matcher.parse("line=~2|3")
    >>> m.matches({"line": "2"}), m.matches({"line": "23"}), m.matches({})
    (True, False, False)
    >>> Matcher.parse('oid!=""').matches({}), str(m)
    (False, 'line=~"2|3"')
    """

    name: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        return cls(*split_matcher(text))

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = _anchored(self.value).match(v) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value, ensure_ascii=False)}"


@functools.lru_cache(maxsize=1024)
def matchers(texts: tuple[str, ...]) -> tuple[Matcher, ...]:
    """Parsed matchers of config text (cached: the config is read once)."""
    return tuple(Matcher.parse(t) for t in texts)


def match_all(ms: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in ms)


@dataclass(frozen=True)
class Silence:
    """Alertmanager's silence: mutes the alerts matching every matcher from ``starts_at`` until
    ``ends_at``. :meth:`create` refuses what Alertmanager's ``validateSilence`` refuses (no
    matcher, every matcher matching the empty string, an end not after the start)."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str = ""
    comment: str = ""

    @classmethod
    def create(cls, texts: Sequence[str], starts_at: datetime, ends_at: datetime,
               created_by: str = "", comment: str = "", id: str | None = None) -> Silence:
        """A silence from matcher text; ``id`` (default: a hash of its content). ValueError
        (one line) for a bad one."""
        ms = tuple(Matcher.parse(t) for t in texts)
        if not ms:
            raise ValueError("a silence needs at least one matcher")
        if all(m.matches({}) for m in ms):
            raise ValueError("at least one matcher must not match the empty string "
                             "(the silence would mute every alert)")
        starts_at, ends_at = as_utc(starts_at), as_utc(ends_at)
        if ends_at <= starts_at:
            raise ValueError(f"the silence ends ({rfc3339(ends_at)}) before it starts "
                             f"({rfc3339(starts_at)})")
        if id is None:
            text = "|".join([*map(str, ms), rfc3339(starts_at), rfc3339(ends_at), created_by])
            id = hashlib.sha256(text.encode()).hexdigest()[:16]
        return cls(id, ms, starts_at, ends_at, created_by, comment)

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def state(self, now: datetime) -> str:
        """``pending`` (not started), ``active`` or ``expired`` (Alertmanager ``getState``)."""
        return "pending" if now < self.starts_at else "active" if now < self.ends_at else "expired"

    def expire(self, now: datetime) -> Silence:
        """The silence ended at ``now`` (``soads alerts unsilence``): an active one ends now, a
        pending one starts and ends now, an expired one stays as it was (safe to repeat)."""
        now = as_utc(now)
        if now >= self.ends_at:
            return self
        return dataclasses.replace(self, starts_at=min(self.starts_at, now), ends_at=now)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return match_all(self.matchers, labels)

    def to_dict(self) -> dict:
        """A row of the ``silence`` table (matchers: a list of text)."""
        return {S.SILENCE_ID: self.id, S.MATCHERS: [str(m) for m in self.matchers],
                S.STARTS_AT: self.starts_at, S.ENDS_AT: self.ends_at,
                S.CREATED_BY: self.created_by, S.COMMENT: self.comment}

    @classmethod
    def from_dict(cls, d: Mapping) -> Silence:
        ms = d[S.MATCHERS]
        ms = json.loads(ms) if isinstance(ms, str) else ms
        return cls(d[S.SILENCE_ID], tuple(Matcher.parse(m) for m in ms),
                   as_utc(d[S.STARTS_AT]), as_utc(d[S.ENDS_AT]), d.get(S.CREATED_BY) or "",
                   d.get(S.COMMENT) or "")


# ---------------------------------------------------------------------------------------------
# candidates and alerts


@dataclass(frozen=True)
class Candidate:
    """What a rule saw: its condition holds for ``labels`` now. ``value`` is the number it
    compared; ``at`` the data time the condition refers to (a row's ``last_time`` or
    ``window_end``; informational: ``for`` counts evaluation time, as in Prometheus)."""

    rule: str
    labels: dict
    annotations: dict
    value: float | None = None
    at: datetime | None = None


def alert_id(fp: str, active_at: datetime) -> str:
    """The id of one alert: its fingerprint and when its condition first held (microseconds).
    Made once, when the alert is new, and stored with it (a database may keep times to the
    second only).

    >>> alert_id("7458d0950ea9e2b5", datetime(2026, 11, 30, 8, 0, 1, 250000, tzinfo=timezone.utc))
    '7458d0950ea9e2b5-20261130T080001.250000Z'
    """
    return f"{fp}-{as_utc(active_at):%Y%m%dT%H%M%S.%fZ}"


def _ids(v) -> tuple[str, ...]:
    """silenced_by / inhibited_by from a row: comma-joined text, JSON list text, a list, None."""
    if v is None or v == "":
        return ()
    if isinstance(v, str):
        v = json.loads(v) if v.startswith("[") else v.split(",")
    return tuple(v)


@dataclass(frozen=True)
class Alert:
    """One alert: an instance of a fingerprint from when its condition was first seen
    (``active_at``) until it is resolved; ``alert_id`` names it (:func:`alert_id`: a fingerprint
    that comes back after it resolved is a new alert). ``starts_at`` is when it fired,
    ``ends_at`` when it was resolved or dropped; ``keep_firing_since`` when its condition was
    last missed while it kept firing. ``silenced_by`` holds silence ids, ``inhibited_by`` the
    fingerprints of the firing alerts muting it."""

    fingerprint: str
    rule: str
    labels: dict
    annotations: dict
    state: str
    active_at: datetime
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    updated_at: datetime | None = None
    value: float | None = None
    keep_firing_since: datetime | None = None
    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()
    acked_by: str | None = None
    acked_at: datetime | None = None
    alert_id: str = ""

    def __post_init__(self):
        if not self.alert_id:
            object.__setattr__(self, "alert_id", alert_id(self.fingerprint, self.active_at))

    @property
    def muted(self) -> bool:
        return bool(self.silenced_by or self.inhibited_by)

    def to_dict(self) -> dict:
        """A row of the ``alert`` table (:data:`soads.schema.TABLES`): alert_id, fingerprint,
        rule, alertname, severity, labels, annotations (dicts), state, active_at, starts_at,
        ends_at, updated_at (aware UTC or None), value, keep_firing_since (for a restart to go
        on exactly where it stopped), silenced_by, inhibited_by (lists of ids), acked_by,
        acked_at."""
        return {S.ALERT_ID: self.alert_id, S.FINGERPRINT: self.fingerprint, S.RULE: self.rule,
                S.ALERTNAME: self.labels.get("alertname"),
                S.SEVERITY: self.labels.get("severity"), S.LABELS: dict(self.labels),
                S.ANNOTATIONS: dict(self.annotations), S.STATE: self.state,
                S.ACTIVE_AT: self.active_at, S.STARTS_AT: self.starts_at,
                S.ENDS_AT: self.ends_at, S.UPDATED_AT: self.updated_at, S.VALUE: self.value,
                S.KEEP_FIRING_SINCE: self.keep_firing_since,
                S.SILENCED_BY: list(self.silenced_by), S.INHIBITED_BY: list(self.inhibited_by),
                S.ACKED_BY: self.acked_by, S.ACKED_AT: self.acked_at}

    @classmethod
    def from_dict(cls, d: Mapping) -> Alert:
        """The alert of a :meth:`to_dict` row (JSON text accepted for labels, annotations and
        the id lists, naive times taken as UTC; a row without value / keep_firing_since has
        none)."""
        def loads(v):
            v = json.loads(v) if isinstance(v, str) else v
            return {} if v is None else dict(v)

        value = d.get(S.VALUE)
        return cls(
            fingerprint=d[S.FINGERPRINT], rule=d[S.RULE], labels=loads(d[S.LABELS]),
            annotations=loads(d[S.ANNOTATIONS]), state=d[S.STATE],
            active_at=as_utc(d[S.ACTIVE_AT]), starts_at=as_utc(d.get(S.STARTS_AT)),
            ends_at=as_utc(d.get(S.ENDS_AT)), updated_at=as_utc(d.get(S.UPDATED_AT)),
            value=None if value is None else float(value),
            keep_firing_since=as_utc(d.get(S.KEEP_FIRING_SINCE)),
            silenced_by=_ids(d.get(S.SILENCED_BY)), inhibited_by=_ids(d.get(S.INHIBITED_BY)),
            acked_by=d.get(S.ACKED_BY), acked_at=as_utc(d.get(S.ACKED_AT)),
            alert_id=d.get(S.ALERT_ID) or "")


def ack(alert: Alert, who: str, when: datetime) -> Alert:
    """``alert`` acknowledged by ``who`` at ``when`` (an ack changes no state: the alert still
    resolves when its condition clears)."""
    if not who:
        raise ValueError("an acknowledgement needs a name (who)")
    return dataclasses.replace(alert, acked_by=who, acked_at=as_utc(when), updated_at=as_utc(when))


class Engine:
    """The alerts of the rules, evaluation after evaluation (Prometheus ``rules/alerting.go``
    ``Eval`` plus Alertmanager's inhibition and silences).

    ``conf`` is the ``[alerts]`` section (``for_seconds`` / ``keep_firing_for_seconds`` per rule,
    ``inhibit``); ``alerts`` the stored pending and firing alerts to go on from (a restart).
    :meth:`evaluate` returns what changed; resolved and inactive alerts leave the engine.

    >>> from soads.config import AlertsConf
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> eng = Engine(AlertsConf())
    >>> c = Candidate("stream_stalled", {"alertname": "StreamStalled", "job": "events"}, {})
    >>> [a.state for a in eng.evaluate(t0, [c], ["stream_stalled"])]
    ['firing']
    >>> eng.evaluate(t0 + timedelta(seconds=1), [c], ["stream_stalled"])  # no repeat
    []
    >>> [(a.state, a.ends_at.second) for a in eng.evaluate(t0 + timedelta(seconds=2), [],
    ...                                                     ["stream_stalled"])]
    [('resolved', 2)]
    """

    def __init__(self, conf, alerts: Iterable[Alert] = ()):
        self.conf = conf
        self.alerts: dict[str, Alert] = {a.fingerprint: a for a in alerts
                                         if a.state in (PENDING, FIRING)}
        self._inhibit = [(matchers(r.source_matchers), matchers(r.target_matchers),
                          tuple(r.equal)) for r in conf.inhibit]

    def _timing(self, rule: str) -> tuple[float, float]:
        rc = self.conf.rule(rule)
        return (rc.for_seconds, rc.keep_firing_for_seconds) if rc is not None else (0.0, 0.0)

    def evaluate(self, now: datetime, candidates: Iterable[Candidate],
                 evaluated_rules: Iterable[str] = (),
                 silences: Iterable[Silence] = ()) -> list[Alert]:
        """One evaluation at ``now``: ``candidates`` are the conditions that hold; a rule in
        ``evaluated_rules`` (or with a candidate) that no longer yields an alert clears it (a rule
        not evaluated this time leaves its alerts as they are). Returns the alerts that changed
        (new pending, fired, kept firing or seen again, resolved, dropped as ``inactive``,
        muted or unmuted), ordered by rule and fingerprint; each carries the newest annotations
        and value of its rule."""
        now = as_utc(now)
        changed: dict[str, Alert] = {}
        seen: dict[str, Candidate] = {}
        for c in candidates:
            seen[fingerprint(c.labels)] = c  # one alert per fingerprint: the last one wins
        rules = set(evaluated_rules) | {c.rule for c in seen.values()}

        for fp, c in seen.items():
            hold, _ = self._timing(c.rule)
            a = self.alerts.get(fp)
            if a is None:
                a = Alert(fp, c.rule, dict(c.labels), dict(c.annotations), PENDING, now,
                          updated_at=now, value=c.value)
                changed[fp] = a
            else:
                # seen again: the same alert. Its annotations and value are refreshed (carried
                # by its next change) but are no change themselves: a lag or an age moves at
                # every evaluation, and an alert is news only when its state or muting moves
                if a.keep_firing_since is not None:
                    changed[fp] = a = dataclasses.replace(a, keep_firing_since=None,
                                                          updated_at=now)
                a = dataclasses.replace(a, annotations=dict(c.annotations), value=c.value)
                if fp in changed:
                    changed[fp] = a
            if a.state == PENDING and now - a.active_at >= _seconds(hold):
                a = dataclasses.replace(a, state=FIRING, starts_at=now, updated_at=now)
                changed[fp] = a
            self.alerts[fp] = a

        for fp, a in list(self.alerts.items()):
            if fp in seen or a.rule not in rules:
                continue
            _, keep = self._timing(a.rule)
            if a.state == PENDING:  # cleared before `for`: dropped, never notified
                changed[fp] = dataclasses.replace(a, state=INACTIVE, ends_at=now, updated_at=now)
                del self.alerts[fp]
                continue
            since = a.keep_firing_since or now
            if keep > 0 and now - since < _seconds(keep):
                if a.keep_firing_since is None:
                    self.alerts[fp] = changed[fp] = dataclasses.replace(
                        a, keep_firing_since=now, updated_at=now)
                continue
            changed[fp] = dataclasses.replace(a, state=RESOLVED, ends_at=now, updated_at=now,
                                              keep_firing_since=None)
            del self.alerts[fp]

        for fp, a in self._mute(now, list(silences)).items():
            changed[fp] = a
        return sorted(changed.values(), key=lambda a: (a.rule, a.fingerprint))

    def _mute(self, now: datetime, silences: list[Silence]) -> dict[str, Alert]:
        """Recompute silenced_by / inhibited_by of every alert; the alerts whose muting changed."""
        active = [s for s in silences if s.active(now)]
        firing = [a for a in self.alerts.values() if a.state == FIRING]
        # per inhibit rule: equal-label values -> sources (fingerprint, also matches the target)
        index = []
        for src, tgt, equal in self._inhibit:
            by_key: dict[tuple, list[tuple[str, bool]]] = {}
            for s in firing:
                if match_all(src, s.labels):
                    key = tuple(s.labels.get(n, "") for n in equal)
                    by_key.setdefault(key, []).append((s.fingerprint, match_all(tgt, s.labels)))
            index.append((src, tgt, equal, by_key))
        out = {}
        for fp, a in self.alerts.items():
            inhibited = set()
            for src, tgt, equal, by_key in index:
                if not by_key or not match_all(tgt, a.labels):
                    continue
                # an alert matching both sides is not muted by sources that also match both
                two_sided = match_all(src, a.labels)
                for sfp, s_is_target in by_key.get(tuple(a.labels.get(n, "") for n in equal), ()):
                    if sfp != fp and not (two_sided and s_is_target):
                        inhibited.add(sfp)
            silenced = tuple(sorted(s.id for s in active if s.matches(a.labels)))
            inhibited = tuple(sorted(inhibited))
            if (silenced, inhibited) != (a.silenced_by, a.inhibited_by):
                self.alerts[fp] = out[fp] = dataclasses.replace(
                    a, silenced_by=silenced, inhibited_by=inhibited, updated_at=now)
        return out

    def ack(self, fp: str, who: str, now: datetime) -> Alert:
        """Acknowledge the pending or firing alert of fingerprint ``fp`` (KeyError if none)."""
        self.alerts[fp] = ack(self.alerts[fp], who, now)
        return self.alerts[fp]


# ---------------------------------------------------------------------------------------------
# grouping and notification (Alertmanager's dispatcher)


def group_labels(labels: Mapping[str, str], group_by: Sequence[str]) -> dict:
    """The ``group_by`` labels an alert has (Alertmanager ``getGroupLabels``)."""
    return {n: labels[n] for n in group_by if n in labels}


def group_key(glabels: Mapping[str, str], route: str = "{}") -> str:
    """Alertmanager's group key ``routeKey:{name="value", ...}`` (the root route's key: ``{}``).

    >>> group_key({"line": "2", "alertname": "LineAnomalyRate"})
    '{}:{alertname="LineAnomalyRate", line="2"}'
    """
    inner = ", ".join(f"{n}={json.dumps(glabels[n], ensure_ascii=False)}" for n in sorted(glabels))
    return f"{route}:{{{inner}}}"


@dataclass(frozen=True)
class NotifyLog:
    """The last notification of a group (Alertmanager's nflog entry): the firing and resolved
    fingerprints it carried, and when. The :class:`Grouper` is restored from these."""

    group_key: str
    firing: tuple[str, ...]
    resolved: tuple[str, ...]
    notified_at: datetime

    def to_dict(self) -> dict:
        return {S.GROUP_KEY: self.group_key, S.FIRING: list(self.firing),
                S.RESOLVED: list(self.resolved), S.NOTIFIED_AT: self.notified_at}

    @classmethod
    def from_dict(cls, d: Mapping) -> NotifyLog:
        def ls(v):
            return tuple(json.loads(v) if isinstance(v, str) else v or ())
        return cls(d[S.GROUP_KEY], ls(d[S.FIRING]), ls(d[S.RESOLVED]), as_utc(d[S.NOTIFIED_AT]))


@dataclass(frozen=True)
class Notification:
    """A due notification of one group: its firing and newly resolved (unmuted) alerts."""

    group_key: str
    group_labels: dict
    alerts: tuple[Alert, ...]
    status: str
    at: datetime

    def payload(self, receiver: str, external_url: str, generator_url: str = "") -> dict:
        """The webhook body of this notification (:func:`webhook_payload`)."""
        return webhook_payload(receiver, self.group_key, self.group_labels, self.alerts,
                               external_url, generator_url)

    def to_dict(self, channel: str, target: str, receiver: str, external_url: str) -> dict:
        """A row of the ``alert_notification`` outbox (without its delivery columns):
        notification_id (group key, time and target: made once, stored), channel, target,
        group_key, payload (the webhook body as JSON text)."""
        nid = hashlib.sha256(f"{self.group_key}|{rfc3339(self.at)}|{channel}|{target}".encode())
        return {S.NOTIFICATION_ID: nid.hexdigest()[:32], S.CHANNEL: channel, S.TARGET: target,
                S.GROUP_KEY: self.group_key, S.PAYLOAD: json.dumps(
                    self.payload(receiver, external_url), ensure_ascii=False)}


@dataclass
class _Group:
    labels: dict
    alerts: dict = field(default_factory=dict)
    next_flush: datetime | None = None
    flushed: bool = False


def _sort_key(a: Alert):
    # Alertmanager's types.AlertSlice order: job, instance, then the labels
    return (a.labels.get("job", ""), a.labels.get("instance", ""), sorted(a.labels.items()))


def needs_update(entry: NotifyLog | None, firing: set, resolved: set, now: datetime,
                 repeat: timedelta) -> bool:
    """Alertmanager ``DedupStage.needsUpdate`` (send_resolved on; ``repeat`` 0: never repeat)."""
    if entry is None:
        return bool(firing)
    if not firing <= set(entry.firing):
        return True
    if not firing:
        return bool(entry.firing)
    if not resolved <= set(entry.resolved):
        return True
    return repeat > timedelta(0) and entry.notified_at < now - repeat


class Grouper:
    """Alertmanager's dispatcher for one route: alerts grouped by ``group_by``; a new group is
    flushed ``group_wait`` after its first alert (at once when that alert started longer ago),
    then every ``group_interval``; a flush notifies only when the group's firing or resolved set
    changed since its last notification, or ``repeat_interval`` passed (0: never).

    Feed it the engine's changed alerts (:meth:`feed`), ask what is due (:meth:`due`). Restore
    it from :meth:`log` rows and the stored firing alerts plus the resolved ones not yet notified.
    """

    def __init__(self, conf, log: Iterable[NotifyLog] = (), alerts: Iterable[Alert] = ()):
        self.group_by = tuple(conf.group_by)
        self.wait = _seconds(conf.group_wait_seconds)
        self.interval = _seconds(conf.group_interval_seconds)
        self.repeat = _seconds(conf.repeat_interval_seconds)
        self.entries: dict[str, NotifyLog] = {e.group_key: e for e in log}
        self.groups: dict[str, _Group] = {}
        for a in alerts:
            self._add(a, None)

    def _add(self, a: Alert, now: datetime | None) -> None:
        if a.state not in (FIRING, RESOLVED):
            return  # pending and dropped alerts are never sent (Prometheus needsSending)
        glabels = group_labels(a.labels, self.group_by)
        key = group_key(glabels)
        g = self.groups.get(key)
        if a.state == RESOLVED and a.fingerprint not in (g.alerts if g else ()) and \
                a.fingerprint not in (self.entries[key].firing if key in self.entries else ()):
            return  # resolved before anyone was told it fired: nothing to say
        if g is None:
            g = self.groups[key] = _Group(glabels)
            if now is not None:
                g.next_flush = now + self.wait
        g.alerts[a.fingerprint] = a
        start = a.starts_at or a.active_at
        if now is not None and not g.flushed and start + self.wait < now:
            g.next_flush = now  # an alert older than group_wait is flushed at once
        # (restored, now is None: the group is timed at the first due())

    def feed(self, alerts: Iterable[Alert], now: datetime) -> None:
        now = as_utc(now)
        for a in alerts:
            self._add(a, now)

    def due(self, now: datetime) -> list[Notification]:
        """The notifications due at ``now``; each is recorded in the log as sent."""
        now = as_utc(now)
        out = []
        for key in sorted(self.groups):
            g = self.groups[key]
            if g.next_flush is None:  # restored group
                e = self.entries.get(key)
                g.flushed = e is not None
                g.next_flush = (e.notified_at + self.interval if e else
                                min(a.starts_at or a.active_at for a in g.alerts.values())
                                + self.wait)
            if g.next_flush > now:
                continue
            g.flushed, g.next_flush = True, now + self.interval
            shown = sorted((a for a in g.alerts.values() if not a.muted), key=_sort_key)
            firing = {a.fingerprint for a in shown if a.state == FIRING}
            resolved = {a.fingerprint for a in shown if a.state == RESOLVED}
            # every alert muted: Alertmanager's pipeline stops at its mute stages, before the
            # dedup stage, so nothing is sent and the notification log stays as it was
            if shown and needs_update(self.entries.get(key), firing, resolved, now, self.repeat):
                out.append(Notification(key, dict(g.labels), tuple(shown),
                                        FIRING if firing else RESOLVED, now))
                self.entries[key] = NotifyLog(key, tuple(sorted(firing)),
                                              tuple(sorted(resolved)), now)
            # after a flush Alertmanager forgets the resolved alerts, and empty groups
            g.alerts = {fp: a for fp, a in g.alerts.items() if a.state != RESOLVED}
            if not g.alerts:
                del self.groups[key]
        return out

    def log(self) -> list[NotifyLog]:
        return [self.entries[k] for k in sorted(self.entries)]


# ---------------------------------------------------------------------------------------------
# JSON


def alert_json(alert: Alert, generator_url: str = "") -> dict:
    """The alert as Alertmanager's webhook and API show it (the alerts topic's message)."""
    return {"labels": dict(alert.labels), "annotations": dict(alert.annotations),
            "startsAt": rfc3339(alert.starts_at or alert.active_at),
            "endsAt": rfc3339(alert.ends_at if alert.state == RESOLVED else None),
            "generatorURL": generator_url, "fingerprint": alert.fingerprint,
            "status": RESOLVED if alert.state == RESOLVED else FIRING}


def alertmanager_item(alert: Alert, generator_url: str = "",
                      valid_until: datetime | None = None) -> dict:
    """One item of Alertmanager's ``POST /api/v2/alerts`` body. A firing alert may carry
    ``valid_until`` as its end (Prometheus sends ``now + 4 x max(interval, resend delay)`` and
    re-sends it), so Alertmanager resolves it itself if the sender stops."""
    j = alert_json(alert, generator_url)
    item = {k: j[k] for k in ("labels", "annotations", "startsAt", "endsAt", "generatorURL")}
    if alert.state != RESOLVED and valid_until is not None:
        item["endsAt"] = rfc3339(valid_until)
    return item


def _common(dicts: list[dict]) -> dict:
    if not dicts:
        return {}
    first = dicts[0]
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in dicts[1:])}


def webhook_payload(receiver: str, group_key: str, group_labels: Mapping[str, str],
                    alerts: Sequence[Alert], external_url: str, generator_url: str = "",
                    max_alerts: int = 0) -> dict:
    """Alertmanager's webhook body, version "4": ``status`` firing when any alert fires;
    ``commonLabels`` / ``commonAnnotations`` those equal in every alert; at most ``max_alerts``
    alerts (0: all), the rest counted in ``truncatedAlerts``."""
    items = [alert_json(a, generator_url) for a in alerts]
    kept = items[:max_alerts] if max_alerts > 0 else items
    return {
        "version": "4", "groupKey": group_key, "truncatedAlerts": len(items) - len(kept),
        "status": FIRING if any(i["status"] == FIRING for i in items) else RESOLVED,
        "receiver": receiver, "groupLabels": dict(group_labels),
        "commonLabels": _common([i["labels"] for i in items]),
        "commonAnnotations": _common([i["annotations"] for i in items]),
        "externalURL": external_url, "alerts": kept,
    }


# ---------------------------------------------------------------------------------------------
# actions


def action_id(alert_id_: str, name: str) -> str:
    """Deterministic id of action ``name`` of one alert (its :func:`alert_id`: fingerprint and
    when it began; stored, so a database keeping times to the second changes nothing): a replay
    or a restart makes the same id, so the action is recorded and sent once.

    >>> action_id("7458d0950ea9e2b5-20261130T080001.250000Z", "hold_object")
    '488a272b00636966e6f92d10d311edb8'
    """
    return hashlib.sha256(f"{alert_id_}|{name}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ActionSpec:
    """One action an alert starts: ``type`` on ``target`` (the alert's ``target_label`` value),
    sent on ``channel`` (kafka: the actions topic; webhook: ``url``)."""

    action_id: str
    alert_id: str
    fingerprint: str
    name: str
    type: str
    channel: str
    url: str
    target_label: str
    target: str
    starts_at: datetime
    labels: dict
    summary: str = ""

    def message(self) -> dict:
        """The action as JSON (the actions topic's message, the webhook's body)."""
        return {"actionId": self.action_id, "alertId": self.alert_id, "action": self.name,
                "type": self.type,
                "target": {self.target_label: self.target} if self.target_label else {},
                "fingerprint": self.fingerprint, "startsAt": rfc3339(self.starts_at),
                "labels": dict(self.labels), "summary": self.summary}

    def to_dict(self) -> dict:
        """A row of the ``alert_action`` table (without its delivery columns): action_id,
        alert_id, fingerprint, action_name, action_type, target, channel, payload (the
        :meth:`message` as JSON text), and url (a webhook action's)."""
        return {S.ACTION_ID: self.action_id, S.ALERT_ID: self.alert_id,
                S.FINGERPRINT: self.fingerprint, S.ACTION_NAME: self.name,
                S.ACTION_TYPE: self.type, S.TARGET: self.target, S.CHANNEL: self.channel,
                S.PAYLOAD: json.dumps(self.message(), ensure_ascii=False), "url": self.url}


def action_specs(alert: Alert, actions_conf) -> list[ActionSpec]:
    """The actions ``[actions]`` maps ``alert`` to: every rule whose matchers all match and
    whose ``target_label`` the alert has. Only a firing alert that is not muted starts actions
    (one muted when it fired starts them when it is unmuted: the same ids)."""
    if not actions_conf.enabled or alert.state != FIRING or alert.muted:
        return []
    out = []
    for r in actions_conf.rules:
        if r.target_label and r.target_label not in alert.labels:
            continue
        if match_all(matchers(tuple(r.matchers)), alert.labels):
            out.append(ActionSpec(
                action_id(alert.alert_id, r.name), alert.alert_id, alert.fingerprint, r.name,
                r.type, r.channel, r.url, r.target_label, alert.labels.get(r.target_label, ""),
                alert.starts_at, dict(alert.labels), alert.annotations.get("summary", "")))
    return out
