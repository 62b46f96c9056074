"""The long-running sensor job: Kafka topic of JSON readings {"machine_id", "ts", "values"} ->
per-machine windows in Spark state -> LSTM-AE score with the registry's promoted model (re-read
every micro-batch: promote/rollback take effect within one trigger) -> SENSOR ANOMALY TABLE,
exactly once (soads.sensor.streaming).

Its tables go to ``[storage] db_url``, the database of every job: --conf conf/soads.toml (the
default) or, on the real services, --conf conf/soads.toml --conf conf/services-stream.toml.

Usage: spark-submit --jars $(python -m soads.jars) \
    jobs/stream_sensors.py [--conf conf/soads.toml --conf conf/services-stream.toml] \
    --sensor-conf conf/sensor.toml \
    [--set sensor.stream.topic=soads-sensor-readings] \
    [--set sensor.stream.registry=soads-data/sensor-models]
   or: python jobs/stream_sensors.py ... (adds the Kafka connector jars itself)
"""
import argparse
import logging
import os
import sys

from soads import config, jars, session
from soads.sensor.streaming import start_sensor_query

CONF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conf")
SERVICES_CONF = os.path.join(CONF_DIR, "services.toml")
DEFAULT_CONF = os.path.join(CONF_DIR, "soads.toml")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conf", action="append", default=[],
                   help="[spark] and [storage] db_url (default: conf/soads.toml)")
    p.add_argument("--sensor-conf", default="conf/sensor.toml")
    p.add_argument("--set", action="append", default=[], help="e.g. sensor.stream.topic=x")
    p.add_argument("--services-conf", default=SERVICES_CONF,
                   help="[kafka] and [services]: the Kafka connector's version and jar cache")
    args = p.parse_args(argv)
    args.conf = args.conf or [DEFAULT_CONF]
    from soads.job_status import job_started
    job_started("stream_sensors", args.conf + [args.sensor_conf])  # pid file (soads jobs)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cfg = config.load(args.conf + [args.sensor_conf, args.services_conf], args.set)
    stream = cfg.sensor.stream
    extra = {}
    if stream.source == "kafka":
        extra["spark.jars"] = ",".join(jars.spark_kafka_jars(
            cfg.kafka.spark_connector_version, cfg.services.jars))
    spark = session.build(cfg.spark, extra=extra)
    query = start_sensor_query(spark, stream, cfg.storage.db_url)
    query.awaitTermination()  # until killed, or the query's exception ends the job
    return 0


if __name__ == "__main__":
    sys.exit(main())
