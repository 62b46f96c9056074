"""What the alert process writes (:mod:`soads.alerts`): alerts, silences, the notification and
action outbox and its read positions, in the tables of :mod:`soads.schema`.

One evaluation of the rules is ONE transaction (:func:`write_step`): the alerts it changed, the
notifications and actions those changes make (status ``pending``) and how far it has read each
source. A process killed before the commit leaves nothing, and its restart reads the same inputs
again and makes the same ids, so nothing is written twice; killed after it, it delivers what is
still pending (:func:`mark_notification`, :func:`mark_action`).
"""
from __future__ import annotations

import datetime as dt
from typing import Mapping, Sequence

import sqlalchemy as sa

from soads import schema as S
from soads.storage import tables

PENDING, DELIVERED, FAILED, ACKED = "pending", "delivered", "failed", "acked"
"""Delivery status of a notification or an action (an action someone acknowledged: acked)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _engine(db):
    return (tables.engine(db), True) if isinstance(db, str) else (db, False)


def write_step(db, alerts: Sequence[dict] = (), notifications: Sequence[dict] = (),
               actions: Sequence[dict] = (), cursors: Mapping[str, int] | None = None,
               groups: Sequence[dict] = ()) -> None:
    """Upsert changed alert rows and notification-log rows (``groups``), insert new outbox
    rows (a notification or action id already there is kept as it is: its delivery state is
    not reset) and set the read positions, in one transaction. Rows are dicts keyed by the
    tables' columns."""
    eng, own = _engine(db)
    try:
        with eng.begin() as conn:
            if alerts:
                # an acknowledgement is written by whoever acks (ack_alert), never undone here
                tables.upsert(conn, "alert", [tables._to_row("alert", a) for a in alerts],
                              keep=(S.ACKED_BY, S.ACKED_AT))
            if groups:
                tables.upsert(conn, "alert_group", [tables._to_row("alert_group", g)
                                                    for g in groups])
            for name, rows in (("alert_notification", notifications), ("alert_action", actions)):
                if rows:
                    _insert_new(conn, name, [tables._to_row(name, r) for r in rows])
            if cursors:
                now = _now()
                tables.upsert(conn, "alert_cursor", [
                    {S.SOURCE: k, S.POSITION: int(v), S.UPDATED_AT: now}
                    for k, v in sorted(cursors.items())])
    finally:
        if own:
            eng.dispose()


def _insert_new(conn, name: str, rows: list[dict]) -> None:
    key = S.PRIMARY_KEYS[name][0]
    t = tables.TABLE[name]
    have = {r[0] for r in conn.execute(sa.select(t.c[key]).where(
        t.c[key].in_([r[key] for r in rows])))}
    new = [r for r in rows if r[key] not in have]
    if new:
        conn.execute(t.insert(), new)


def _update(db, name: str, key: str, value: str, values: dict) -> int:
    """Update one row; ``db`` may be a connection inside the caller's transaction."""
    if isinstance(db, sa.Connection):
        t = tables.TABLE[name]
        return db.execute(t.update().where(t.c[key] == value).values(values)).rowcount
    eng, own = _engine(db)
    try:
        with eng.begin() as conn:
            t = tables.TABLE[name]
            return conn.execute(t.update().where(t.c[key] == value).values(values)).rowcount
    finally:
        if own:
            eng.dispose()


def mark_notification(db, notification_id: str, status: str, attempts: int,
                      error: str | None = None, sent_at: dt.datetime | None = None) -> None:
    """Record a delivery attempt's outcome (delivered or failed, how many attempts, the last
    error). ``db``: a URL, an engine, or a connection inside the caller's transaction (many
    marks, one commit)."""
    _update(db, "alert_notification", S.NOTIFICATION_ID, notification_id, {
        S.STATUS: status, S.ATTEMPTS: int(attempts), S.ERROR: error,
        S.SENT_AT: sent_at or _now()})


def mark_action(db, action_id: str, status: str, attempts: int, error: str | None = None,
                sent_at: dt.datetime | None = None) -> None:
    """Record an action's delivery outcome (as :func:`mark_notification`); one acknowledged
    while it was pending is acked once delivered."""
    t = tables.TABLE["alert_action"]
    if status == DELIVERED:
        status = sa.case((t.c[S.ACKED_BY].is_not(None), ACKED), else_=DELIVERED)
    _update(db, "alert_action", S.ACTION_ID, action_id, {
        S.STATUS: status, S.ATTEMPTS: int(attempts), S.ERROR: error,
        S.SENT_AT: sent_at or _now()})


def ack_alert(db, alert_id: str, who: str, when: dt.datetime | None = None) -> bool:
    """Acknowledge an alert; False when there is no such alert."""
    return _update(db, "alert", S.ALERT_ID, alert_id,
                   {S.ACKED_BY: who, S.ACKED_AT: when or _now()}) > 0


def ack_action(db, action_id: str, who: str, when: dt.datetime | None = None) -> bool:
    """Acknowledge an action: who and when are recorded; a delivered action's status becomes
    acked, a pending or failed one keeps its status (acknowledging it must not stop its
    delivery, nor hide that it failed). False when there is no such action."""
    eng, own = _engine(db)
    t = tables.TABLE["alert_action"]
    try:
        with eng.begin() as conn:
            return conn.execute(t.update().where(t.c[S.ACTION_ID] == action_id).values({
                S.STATUS: sa.case((t.c[S.STATUS] == DELIVERED, ACKED), else_=t.c[S.STATUS]),
                S.ACKED_BY: who, S.ACKED_AT: when or _now()})).rowcount > 0
    finally:
        if own:
            eng.dispose()


def add_silence(db, row: dict) -> None:
    """Store a silence (a dict keyed by the silence table's columns)."""
    eng, own = _engine(db)
    try:
        tables.create_tables(eng)
        with eng.begin() as conn:
            tables.upsert(conn, "silence", [tables._to_row("silence", row)])
    finally:
        if own:
            eng.dispose()


def expire_silence(db, silence_id: str, when: dt.datetime | None = None) -> bool:
    """End a silence now (Alertmanager "expire", as :meth:`soads.alerts.core.Silence.expire`:
    it stays listed, no longer in force): an active one ends now, a pending one starts and ends
    now, an expired one stays as it was (safe to repeat). False when there is no such
    silence."""
    now = when or _now()
    eng, own = _engine(db)
    t = tables.TABLE["silence"]
    try:
        with eng.begin() as conn:
            found = conn.execute(sa.select(t.c[S.SILENCE_ID]).where(
                t.c[S.SILENCE_ID] == silence_id)).first() is not None
            conn.execute(t.update().where(t.c[S.SILENCE_ID] == silence_id,
                                          t.c[S.ENDS_AT] > now).values({
                S.STARTS_AT: sa.case((t.c[S.STARTS_AT] > now, now), else_=t.c[S.STARTS_AT]),
                S.ENDS_AT: now}))
            return found
    finally:
        if own:
            eng.dispose()
