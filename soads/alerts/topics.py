"""Alerts and actions on Kafka topics, exactly once.

A message's key is its outbox id (an alert change's notification id, an action id), made the
same by a replay. The outbox row is marked delivered after Kafka acknowledged the message; a
process killed between the two finds, when it restarts, the ids already in the topic
(:func:`published_ids`, read from the time the oldest pending row was written) and marks them
delivered instead of sending them again. So every id is in its topic once.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Iterable, Sequence

logger = logging.getLogger(__name__)

ID_HEADER = "soads-id"
"""Message header holding the outbox id (also the message key)."""


def producer(bootstrap: str):
    """An idempotent producer (the broker drops a retried duplicate of a send)."""
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                         enable_idempotence=True, retries=5)


def ensure_topics(bootstrap: str, topics: Sequence[str], partitions: int = 1) -> None:
    """Create the topics that do not exist yet (one partition keeps the messages in order)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        have = set(admin.list_topics())
        new = [NewTopic(t, partitions, 1) for t in topics if t not in have]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def send(prod, topic: str, items: Iterable[tuple[str, bytes]], timeout_s: float = 10.0
         ) -> list[tuple[str, str | None]]:
    """Send ``(id, value)`` messages and wait for Kafka's acknowledgement: ``[(id, error or
    None)]`` in order."""
    futures = [(i, prod.send(topic, key=i.encode(), value=value,
                             headers=[(ID_HEADER, i.encode())])) for i, value in items]
    prod.flush(timeout=timeout_s)
    out = []
    for i, fut in futures:
        try:
            fut.get(timeout=timeout_s)
            out.append((i, None))
        except Exception as exc:  # delivery failed: the row stays pending, retried next round
            out.append((i, f"{type(exc).__name__}: {exc}"))
    return out


def published_ids(bootstrap: str, topic: str, since: dt.datetime, timeout_s: float = 10.0
                  ) -> set[str]:
    """The outbox ids of the messages in ``topic`` written at or after ``since`` (naive UTC,
    less a minute for clock skew); an empty set when the topic does not exist."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=int(timeout_s * 1000))
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        ms = int((since.replace(tzinfo=dt.timezone.utc) - dt.timedelta(minutes=1)).timestamp()
                 * 1000)
        starts = consumer.offsets_for_times({tp: ms for tp in tps})
        left = 0
        for tp in tps:
            at = starts.get(tp)
            offset = at.offset if at is not None else ends[tp]
            consumer.seek(tp, offset)
            left += ends[tp] - offset
        ids: set[str] = set()
        if left <= 0:
            return ids
        for msg in consumer:
            ids.add(msg.key.decode() if msg.key else "")
            left -= 1
            if left <= 0:
                break
        return ids
    finally:
        consumer.close()
