"""The long-running alert process: the rules of conf/alerts.toml over what the event and sensor
jobs write, Alertmanager semantics, alerts and actions (conf/actions.toml) to the alert table,
the Kafka topics, webhooks and Prometheus Alertmanager, exactly once (soads.alerts.process).

Usage: python jobs/alerts.py --conf conf/soads.toml --conf conf/alerts.toml \
    --conf conf/actions.toml [--conf conf/services-stream.toml] [--set alerts.webhook_urls=[...]]
   (= soads alerts run; no Spark, no JVM: it reads the tables through soads.query)
"""
import argparse
import logging
import sys

from soads import config
from soads.alerts.process import AlertProcess


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conf", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--steps", type=int, default=None, help="stop after N evaluations")
    args = p.parse_args(argv)
    from soads.job_status import NOISY_LOGGERS, job_started
    job_started("alerts", args.conf)  # pid file (soads jobs)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = config.load(args.conf, args.set)
    proc = AlertProcess(cfg)
    try:
        proc.run(steps=args.steps)
    finally:
        proc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
