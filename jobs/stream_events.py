"""The long-running event job: Kafka (or a file directory) -> EVENT LOG TABLE + quarantine,
per-oid Relational Dependency Updater -> RELATIONAL DEPENDENCY TABLE, Anomaly Evaluator ->
object_score and ALIGNMENT SCORE TABLE; checkpointed, exactly-once tables (soads.stream).

Usage: spark-submit --jars $(python -c 'from soads import services as s; print(",".join(s.spark_kafka_jars(s.load_conf())))'),$(python -m soads.jvm) \
    jobs/stream_events.py --conf conf/soads.toml --stream-conf conf/services-stream.toml \
    [--set stream.topic=soads-events] [--set sequences.dwell_seconds=60]
   or: python jobs/stream_events.py ... (adds the Kafka connector and the state operator's jars itself)
"""
import argparse
import logging
import sys

from soads import config, services, session
from soads.stream.job import spark_jars, start_event_queries


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conf", action="append", default=[])
    p.add_argument("--stream-conf", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--services-conf", default=None, help="conf/services.toml (Kafka jar cache)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cfg = config.load(args.conf + args.stream_conf, args.set)
    stream = cfg.stream
    kafka_jars = (services.spark_kafka_jars(services.load_conf(args.services_conf))
                  if stream.source == "kafka" else ())
    spark = session.build(cfg.spark, extra=spark_jars(stream, kafka_jars))
    queries = start_event_queries(spark, cfg)
    # runs until killed or until a query fails (its exception ends the job with a non-zero code)
    spark.streams.awaitAnyTermination()
    queries.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
