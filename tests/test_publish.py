"""soads.simulator.publish: simulator -> Kafka, one EPCIS document per record, paced in flat
events per second. The integration test needs the real broker (python -m soads.services up)."""
import json
import os
import time
import uuid

import pytest

from soads import epcis, services
from soads.simulator.generate import iter_documents
from soads.simulator.publish import flat_events, publish
import streamtools as st  # services_conf: fail under CI=true, skip elsewhere



def test_flat_events_counts_every_epc_in_xml_and_jsonld():
    for fmt in ("xml", "jsonld"):
        for _, doc in iter_documents(40, seed=2, fmt=fmt, events_per_file=30):
            events, quarantine = epcis.parse_document(doc, "t", 1 << 24)
            assert quarantine == []
            assert flat_events(doc) == len(events)


@pytest.fixture(scope="module")
def bootstrap():
    return services.kafka_bootstrap(st.services_conf("kafka"))


@pytest.mark.integration
def test_publish_sends_every_document_once_at_the_asked_rate(bootstrap):
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = f"soads-pub-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    try:
        docs = list(iter_documents(300, seed=5, events_per_file=100))
        total = sum(flat_events(d) for _, d in docs)
        rate = 3000.0
        seen = []
        t0 = time.monotonic()
        stats = publish(iter(docs), bootstrap, topic, rate,
                        on_sent=lambda name, n, t: seen.append(n))
        wall = time.monotonic() - t0
        assert (stats["documents"], stats["events"]) == (len(docs), total)
        assert seen == [flat_events(d) for _, d in docs]
        # paced: the last document is due at (total - its events) / rate; a loaded machine may
        # add a little, never take it away
        due = (total - seen[-1]) / rate
        assert due <= wall <= due + 3.0, (due, wall)
        assert 0.8 * rate <= stats["events_per_s"] <= 1.2 * rate, stats
        assert (stats["first_offset"], stats["last_offset"]) == (0, len(docs) - 1)

        consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=10_000, max_partition_fetch_bytes=1 << 24)
        got = [m.value for m in consumer]
        consumer.close()
        assert got == [d for _, d in docs]  # every document once, in order
    finally:
        admin.delete_topics([topic])
        admin.close()


@pytest.mark.integration
def test_cli_simulate_kafka_prints_stats_and_writes_truth_only_with_out(bootstrap, tmp_path,
                                                                      capsys):
    from kafka.admin import KafkaAdminClient

    from soads.cli import main

    topic = f"soads-pub-{uuid.uuid4().hex[:10]}"
    try:
        assert main(["simulate", "--kafka", topic, "--bootstrap", bootstrap, "--objects", "50",
                     "--seed", "4", "--out", str(tmp_path)]) == 0
        out, err = capsys.readouterr()
        stats = json.loads(out.strip().splitlines()[-1])
        assert stats["objects"] == 50 and stats["documents"] >= 1
        assert "flat events" in err
        assert sorted(os.listdir(tmp_path)) == ["truth.csv"]
        assert len((tmp_path / "truth.csv").read_text().splitlines()) == 51
    finally:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.delete_topics([topic])
        admin.close()


@pytest.mark.integration
def test_ensure_topics_creates_only_the_missing_ones(bootstrap):
    # the streaming job's first step: started before anything was published (README order:
    # make up, the job, soads simulate), it must not fail on a topic that does not exist yet
    from kafka.admin import KafkaAdminClient

    from soads import ingest

    new = [f"soads-test-ensure-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        assert ingest.ensure_topics(bootstrap, [new[0], "", new[1], new[0]]) == new
        assert set(new) <= set(admin.list_topics())
        # one partition: the broker's num.partitions (conf/services.toml's Kafka)
        assert [len(t["partitions"]) for t in admin.describe_topics(new)] == [1, 1]
        assert ingest.ensure_topics(bootstrap, new) == []
    finally:
        admin.delete_topics(new)
        admin.close()
