"""Event Log Preprocessor as a batch job: EPCIS files -> EVENT LOG TABLE + quarantine.

Usage: spark-submit jobs/ingest_events.py --conf conf/soads.toml PATH [PATH ...] [--set storage.root=/data/soads]
"""
import argparse
import json
import sys

from soads import config, pipeline, session


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+")
    p.add_argument("--conf", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args(argv)
    cfg = config.load(args.conf, args.set)
    spark = session.build(cfg.spark)
    report = pipeline.Report()
    pipeline.ingest(spark, args.paths, cfg, report)
    sys.stdout.write(json.dumps({"counts": report.counts, "quarantine": report.quarantine_by_reason,
                                 "seconds": report.seconds}) + "\n")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
