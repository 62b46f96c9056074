"""Frequent Subsequence Miner as a batch job: EVENT LOG TABLE -> sequences -> RELATIONAL
DEPENDENCY TABLE -> modified PrefixSpan (paper Alg. 1) -> PATTERN TABLE + a mining-run record;
then the context detector fitted on the same sequences -> a model run (detector_run,
detector_count).

Usage: spark-submit jobs/mine_patterns.py --conf conf/soads.toml [--set mining.minsup=0.02]
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
    rows = pipeline.mine(spark, seqs, rel, cfg, report)
    sys.stdout.write(f"mining run {report.run_id}: {len(rows)} patterns "
                     f"({report.counts['objects']} objects, {report.seconds['mine']:.1f} s)\n")
    pipeline.fit_detector(spark, seqs, rel, cfg, report)
    sys.stdout.write(f"detector model run {report.model_run_id}: "
                     f"{report.counts['detector_rows']} count rows "
                     f"({report.seconds['fit']:.1f} s)\n")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
