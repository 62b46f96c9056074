"""Anomaly Evaluator as a batch job: every object's sequence against the newest mining run's
patterns (Smith-Waterman) -> object_score and the per-window ALIGNMENT SCORE TABLE.

Usage: spark-submit jobs/score_objects.py --conf conf/soads.toml [--set scoring.maximal_only=true]
"""
import argparse
import logging
import sys

from soads import config, pipeline, schema as S, session
from soads.storage import tables


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conf", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    cfg = config.load(args.conf, args.set)
    run = tables.latest_run(cfg.storage.db_url)
    if run is None:
        sys.stderr.write("no mining run in the PATTERN TABLE: run jobs/mine_patterns.py first\n")
        return 2
    rows = tables.read_table(cfg.storage.db_url, "pattern", {S.RUN_ID: run[S.RUN_ID]})
    spark = session.build(cfg.spark)
    report = pipeline.Report()
    seqs, rel = pipeline.sequences_and_relations(spark, cfg, report)
    pipeline.score(spark, seqs, rel, pipeline.patterns_in_use(rows, cfg.scoring.maximal_only),
                   run[S.RUN_ID], cfg, report)
    sys.stdout.write(f"scored {report.counts['objects_scored']} objects, "
                     f"{report.counts['windows']} windows (run {run[S.RUN_ID]})\n")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
