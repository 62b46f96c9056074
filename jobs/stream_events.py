"""The long-running event job: Kafka (or a file directory) -> EVENT LOG TABLE + quarantine,
per-oid Relational Dependency Updater -> RELATIONAL DEPENDENCY TABLE, Anomaly Evaluator ->
object_score and ALIGNMENT SCORE TABLE; checkpointed, exactly-once tables (soads.stream).

Usage: spark-submit --jars $(python -m soads.jars),$(python -m soads.jvm) \
    jobs/stream_events.py --conf conf/soads.toml --stream-conf conf/services-stream.toml \
    [--set stream.topic=soads-events] [--set sequences.dwell_seconds=60]
   or: python jobs/stream_events.py ... (adds the Kafka connector and the state operator's jars itself)
"""
import argparse
import logging
import os
import sys

from soads import config, jars, session
from soads.stream.job import spark_jars, start_event_queries

SERVICES_CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conf",
                             "services.toml")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conf", action="append", default=[])
    p.add_argument("--stream-conf", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--services-conf", default=SERVICES_CONF,
                   help="[kafka] and [services]: the Kafka connector's version and jar cache")
    args = p.parse_args(argv)
    from soads.job_status import job_started
    job_started("stream_events", args.conf + args.stream_conf)  # pid file (soads jobs)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cfg = config.load(args.conf + args.stream_conf + [args.services_conf], args.set)
    stream = cfg.stream
    kafka_jars = (jars.spark_kafka_jars(cfg.kafka.spark_connector_version, cfg.services.jars)
                  if stream.source == "kafka" else ())
    spark = session.build(cfg.spark, extra=spark_jars(stream, kafka_jars))
    queries = start_event_queries(spark, cfg)
    # runs until killed or until a query fails (its exception ends the job with a non-zero code)
    spark.streams.awaitAnyTermination()
    queries.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
