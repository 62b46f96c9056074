"""The alerts/actions topics against the real Kafka: an id sent is found again by
published_ids (how a restarted alert process knows not to send it twice)."""
import datetime as dt
import uuid

from streamtools import services_conf

from soads import services
from soads.alerts import topics


def test_sent_ids_are_found_after_a_restart():
    conf = services_conf("kafka")
    bootstrap = services.kafka_bootstrap(conf)
    topic = f"soads-alerts-test-{uuid.uuid4().hex[:10]}"
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    topics.ensure_topics(bootstrap, [topic])
    topics.ensure_topics(bootstrap, [topic])  # a second time: nothing to do, no error
    assert topics.published_ids(bootstrap, topic, before) == set()
    prod = topics.producer(bootstrap)
    try:
        got = topics.send(prod, topic, [("a-1", b'{"x": 1}'), ("a-2", b'{"x": 2}')])
    finally:
        prod.close()
    assert got == [("a-1", None), ("a-2", None)]
    assert topics.published_ids(bootstrap, topic, before) == {"a-1", "a-2"}
    # a reader starting after the messages were written finds none of them
    later = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(minutes=5)
    assert topics.published_ids(bootstrap, topic, later) == set()
    assert topics.published_ids(bootstrap, f"{topic}-missing", before) == set()
