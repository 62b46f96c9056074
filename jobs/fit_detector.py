"""The context detector's fit as a batch job: EVENT LOG TABLE -> sequences -> RELATIONAL
DEPENDENCY TABLE -> counts of read points and event attributes in their contexts -> a model run
(detector_run, detector_count) that `soads score`, jobs/score_objects.py and the event job score
against. (jobs/mine_patterns.py fits one as well.)

Usage: spark-submit jobs/fit_detector.py --conf conf/soads.toml [--set detector.max_context=2]
"""
import argparse
import logging
import sys

from soads import config, pipeline, session


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conf", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    cfg = config.load(args.conf, args.set)
    spark = session.build(cfg.spark)
    report = pipeline.Report()
    seqs, rel = pipeline.sequences_and_relations(spark, cfg, report)
    pipeline.fit_detector(spark, seqs, rel, cfg, report)
    sys.stdout.write(f"detector model run {report.model_run_id}: "
                     f"{report.counts['detector_rows']} count rows from "
                     f"{report.counts['objects']} objects ({report.seconds['fit']:.1f} s)\n")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
