"""Simulator -> Kafka: publish EPCIS documents (one per record) paced in flat events per second.

The DESIGN's "RFID readers / middleware --EPCIS--> Kafka topic (events)" for local runs,
benchmarks and tests; ``soads simulate --kafka TOPIC`` is the command line over :func:`publish`.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Callable, Iterable, Iterator

logger = logging.getLogger(__name__)

_JSON_EPC_LIST = re.compile(rb'"epcList":\[([^\]]*)\]')


def flat_events(document: bytes) -> int:
    """Number of flat events (EPC reads) in a simulator document, XML or JSON-LD.

    Counts the EPCs of ``epcList`` (the only list the simulator writes); an EPCIS event with
    n EPCs is n flat events (DESIGN "Event").

    Examples
    --------
    >>> flat_events(b"<ObjectEvent><epcList><epc>a</epc><epc>b</epc></epcList></ObjectEvent>")
    2
    >>> flat_events(b'{"eventList":[{"epcList":["a","b","c"]},{"epcList":[]}]}')
    3
    """
    n = document.count(b"<epc>")
    if n:
        return n
    return sum(m.group(1).count(b",") + 1 for m in _JSON_EPC_LIST.finditer(document)
               if m.group(1).strip())


def publish(documents: Iterable[tuple[str, bytes]], bootstrap: str, topic: str,
            rate: float = 0.0, progress: Callable[[dict], None] | None = None,
            on_sent: Callable[[str, int, float], None] | None = None,
            progress_seconds: float = 2.0) -> dict:
    """Send each document as one Kafka record (kafka-python), paced to ``rate`` flat events/s.

    Parameters
    ----------
    documents : iterable of ``(name, bytes)``
        E.g. :func:`soads.simulator.generate.iter_documents` with a small ``events_per_file``
        (a few hundred ObjectEvents), so the pacing is smooth.
    bootstrap : str
        ``host:port`` of the Kafka broker.
    topic : str
    rate : float
        Flat events per second; 0 sends as fast as the producer can.
    progress : callable, optional
        Called with the running stats (as returned) about every ``progress_seconds``.
    on_sent : callable, optional
        ``on_sent(name, flat events, wall time of the send)`` per document (latency benchmarks).

    Returns
    -------
    dict
        ``topic, documents, events`` (flat), ``bytes, seconds, events_per_s`` (achieved),
        ``rate`` (asked), ``first_offset, last_offset`` (partition-wise min/max of the records).
    """
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             max_request_size=16 * 1024 * 1024, retries=5)
    stats = {"topic": topic, "documents": 0, "events": 0, "bytes": 0, "seconds": 0.0,
             "events_per_s": 0.0, "rate": rate, "first_offset": None, "last_offset": None}
    offsets: list[int] = []

    def sent(meta):
        offsets.append(meta.offset)

    start = time.monotonic()
    shown = start
    try:
        for name, data in documents:
            n = flat_events(data)
            if rate > 0:
                # pace on the cumulative count: due time of this document's first event
                delay = start + stats["events"] / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            producer.send(topic, value=data).add_callback(sent)
            if on_sent is not None:
                on_sent(name, n, time.time())
            stats["documents"] += 1
            stats["events"] += n
            stats["bytes"] += len(data)
            now = time.monotonic()
            if progress is not None and now - shown >= progress_seconds:
                shown = now
                progress(_finish(stats, start, now))
        producer.flush()
    finally:
        producer.close()
    _finish(stats, start, time.monotonic())
    if len(offsets) != stats["documents"]:
        raise RuntimeError(f"{stats['documents'] - len(offsets)} of {stats['documents']} "
                           f"records were not acknowledged by {bootstrap}")
    stats["first_offset"], stats["last_offset"] = min(offsets, default=None), max(offsets,
                                                                                   default=None)
    logger.info("published %d documents, %d flat events to %s in %.1f s", stats["documents"],
                stats["events"], topic, stats["seconds"])
    return stats


def _finish(stats: dict, start: float, now: float) -> dict:
    stats["seconds"] = round(now - start, 3)
    stats["events_per_s"] = round(stats["events"] / max(now - start, 1e-9), 1)
    return stats


def keep_with_clock(documents: Iterable[tuple[str, bytes, int]], clock=time.monotonic,
                    sleep=time.sleep) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes, time_ms)`` -> ``(name, bytes)``, each released once ``time_ms`` (event
    time since the log's start) has passed on the wall clock since the first was asked for.

    >>> now = [0.0]
    >>> docs = [("a", b"", 0), ("b", b"", 1500), ("c", b"", 1500)]
    >>> out = [(n, now[0]) for n, _ in keep_with_clock(
    ...     docs, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))]
    >>> out
    [('a', 0.0), ('b', 1.5), ('c', 1.5)]
    """
    t0 = clock()
    for name, data, time_ms in documents:
        delay = t0 + time_ms / 1000.0 - clock()
        if delay > 0:
            sleep(delay)
        yield name, data


def simulate_to_kafka(bootstrap: str, topic: str, rate: float, n_objects: int, seed: int = 7,
                      anomaly_rate: float = 0.04, noise_rate: float = 0.05, fmt: str = "xml",
                      events_per_file: int = 200, truth_dir: str | None = None,
                      progress: Callable[[dict], None] | None = None, start=None,
                      first_serial: int = 1, realtime: bool = False,
                      attribute_anomaly_rate: float = 0.0) -> dict:
    """Simulate ``n_objects`` cells and :func:`publish` their documents to ``topic``.

    ``realtime``: event time keeps with the wall clock -- each document is sent when the wall
    clock has moved as far from the call as its last event is from ``start`` (``rate`` must be
    0). Otherwise documents go as fast as ``rate`` allows, so the log's event time runs ahead of
    the wall clock (a plant day in minutes). ``first_serial``: as in
    :func:`soads.simulator.generate.iter_objects`.

    With ``truth_dir``, the ground truth goes to ``truth_dir/truth.csv`` (header
    ``oid,label,anomaly_type,noise``, as :func:`soads.simulator.generate.simulate` writes it).
    ``attribute_anomaly_rate``: as in :func:`soads.simulator.generate.iter_objects`.
    ``start`` (an aware datetime) moves the plant's start in event time
    (:func:`soads.simulator.generate.iter_documents`).

    Returns
    -------
    dict
        :func:`publish`'s stats plus ``objects`` and ``truth`` (the path or None).
    """
    import os

    from soads.simulator.generate import TRUTH_FILE, iter_documents, truth_header, truth_row

    truth, path, count = None, None, [0]
    if truth_dir is not None:
        os.makedirs(truth_dir, exist_ok=True)
        path = os.path.join(truth_dir, TRUTH_FILE)
        truth = open(path, "w", encoding="utf-8", newline="")
        truth.write(truth_header())

    def on_object(obj):
        count[0] += 1
        if truth is not None:
            truth.write(truth_row(obj))

    try:
        docs = iter_documents(n_objects, seed=seed, anomaly_rate=anomaly_rate,
                              noise_rate=noise_rate, fmt=fmt, events_per_file=events_per_file,
                              on_object=on_object, start=start, first_serial=first_serial,
                              timed=True, attribute_anomaly_rate=attribute_anomaly_rate)
        if realtime:
            if rate > 0:
                raise ValueError("a rate and real-time pace exclude each other")
            docs = keep_with_clock(docs)
        else:
            docs = ((name, data) for name, data, _ in docs)
        stats = publish(docs, bootstrap, topic, rate, progress)
    finally:
        if truth is not None:
            truth.close()
    stats["objects"] = count[0]
    stats["truth"] = path
    return stats
