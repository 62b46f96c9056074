"""Anomaly Evaluator as a batch job: every object's sequence against the newest mining run's
patterns (Smith-Waterman) -> object_score and the per-window ALIGNMENT SCORE TABLE; and against
the context detector's newest model run (or --model-run RUN_ID) -> object_score's anomaly,
is_anomaly, explanation, model_run_id and the anomaly_rate table.

Usage: spark-submit jobs/score_objects.py --conf conf/soads.toml [--set scoring.maximal_only=true]
       [--model-run RUN_ID]
"""
import argparse
import logging
import sys

from soads import config, pipeline, session


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conf", action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--model-run", default="newest")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    cfg = config.load(args.conf, args.set)
    report = pipeline.Report()
    try:
        # the same steps as `soads score` (patterns in pattern_id order: ties break the same way)
        spark, run_id, _ = pipeline.score_newest_run(lambda: session.build(cfg.spark), cfg,
                                                     report, args.model_run)
    except (pipeline.NoMiningRun, pipeline.NoModelRun) as e:
        sys.stderr.write(f"{e}\n")
        return 2
    sys.stdout.write(f"scored {report.counts['objects_scored']} objects, "
                     f"{report.counts['windows']} windows (run {run_id}; detector model run "
                     f"{report.model_run_id})\n")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
