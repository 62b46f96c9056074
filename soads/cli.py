"""``soads``: the command line over the SOADS library (thin: parse arguments, call soads.*).

Errors a user can fix (bad arguments, unreadable input, bad config) end with a one-line reason on
stderr and exit status 2; nothing else is caught here.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time

from soads import schema as S

logger = logging.getLogger("soads")

DEFAULT_CONF = "conf/soads.toml"

# Spark settings of the CLI's sessions: main() sets Spark's INFO log with -v. Spark's console
# progress bars stay off either way (soads.session.QUIET): the CLI prints its own progress lines.
_SPARK_EXTRA: dict[str, str] = {}


class UsageError(Exception):
    """A problem the user can fix; reported as one line, exit 2."""


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _err(line: str) -> None:
    from soads.config import redact

    sys.stderr.write(redact(line) + "\n")  # a db_url in a message carries the DB password
    sys.stderr.flush()


# -- shared options ------------------------------------------------------------------------

def _add_conf(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conf", action="append", default=None, metavar="TOML",
                   help=f"configuration file(s), later ones win (default: {DEFAULT_CONF} if present)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one configuration value, e.g. --set scoring.gap_open=-3")


def _config(args, **overrides):
    from soads import config

    paths = args.conf if args.conf else ([DEFAULT_CONF] if os.path.exists(DEFAULT_CONF) else [])
    extra = [f"{k}={v}" for k, v in overrides.items() if v is not None]
    try:
        return config.load(paths, list(args.set) + extra)
    except config.ConfigError as e:
        raise UsageError(str(e)) from e


# pyspark starts its JVM as a shell, and a shell's console drops Spark's INFO lines unless the
# gateway's logger is configured at INFO itself (org.apache.spark.internal.Logging): -v starts
# the JVM with this configuration (Spark's log4j2-defaults.properties, shell logger at INFO).
_VERBOSE_LOG4J2 = """\
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.shell.name = org.apache.spark.api.python.PythonGatewayServer
logger.shell.level = info
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = warn
"""


def _verbose_spark_launch() -> None:
    """Have the JVM pyspark launches print Spark's INFO lines (unless the user set
    PYSPARK_SUBMIT_ARGS; a session already running keeps its logging)."""
    import tempfile

    if "PYSPARK_SUBMIT_ARGS" in os.environ:
        return
    path = os.path.join(tempfile.gettempdir(), f"soads-log4j2-verbose-{os.getuid()}.properties")
    with open(path, "w") as fh:
        fh.write(_VERBOSE_LOG4J2)
    os.environ["PYSPARK_SUBMIT_ARGS"] = \
        f"--driver-java-options -Dlog4j2.configurationFile={path} pyspark-shell"


def _spark(cfg, quiet: bool = True, stream: bool = False):
    from soads.session import build

    t0 = time.perf_counter()
    extra = dict(_SPARK_EXTRA)
    if stream:  # the event job's state operator jar (the demo's live part)
        from soads.stream.job import spark_jars

        extra.update(spark_jars(cfg.stream))
    spark = build(cfg.spark, extra=extra)
    logger.info("spark %s up in %.1f s (%s)", spark.version, time.perf_counter() - t0,
                spark.sparkContext.master)
    return spark


def _fraction(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}")
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1]: {value}")
    return v


def _positive_int(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {value}")
    return v


def _minsup(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}")
    if not v > 0 or math.isinf(v) or (v > 1 and v != int(v)):
        raise argparse.ArgumentTypeError(
            f"minsup must be a fraction in (0, 1] or a whole count > 1: {value}")
    return v


def _expand(paths: list[str], suffixes=(".xml", ".json", ".jsonld")) -> list[str]:
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                files += [os.path.join(root, n) for n in sorted(names) if n.endswith(suffixes)]
        elif os.path.exists(p):
            files.append(p)
        else:
            raise UsageError(f"no such file or directory: {p}")
    return sorted(files)


def _short(rp: str) -> str:
    """Display form of a read point: the last segment of the URN."""
    return rp.rsplit(".", 1)[-1] if rp.startswith("urn:") else rp


def _progress(label: str):
    state = {"t": 0.0}

    def show(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - state["t"] >= 2.0 or done >= total:
            state["t"] = now
            _err(f"[soads] {label}: {done:,}/{total:,} ({100.0 * done / max(total, 1):.0f}%)")

    return show


# -- sub-commands ---------------------------------------------------------------------------

def _first_serial(args) -> int:
    from soads.simulator.generate import run_first_serial

    return args.first_serial if args.first_serial is not None else \
        run_first_serial(args.seed, args.start)


def cmd_simulate(args) -> int:
    from soads.simulator.generate import simulate

    if args.pace == "realtime":
        if not args.kafka:
            raise UsageError("--pace realtime publishes to Kafka: add --kafka TOPIC")
        if args.rate:
            raise UsageError("--pace realtime and --rate exclude each other")
    if args.kafka:
        return _simulate_kafka(args)
    if not args.out:
        raise UsageError("--out DIR or --kafka TOPIC is required")
    if args.events_per_file is None:
        args.events_per_file = 20000
    try:
        stats = simulate(args.out, n_objects=args.objects, seed=args.seed,
                         anomaly_rate=args.anomaly_rate, noise_rate=args.noise_rate,
                         fmt=args.format, events_per_file=args.events_per_file,
                         progress=_progress("simulate"), start=args.start,
                         first_serial=_first_serial(args),
                         attribute_anomaly_rate=args.attribute_anomaly_rate)
    except ValueError as e:
        raise UsageError(str(e)) from e
    except OSError as e:
        raise UsageError(f"cannot write to {args.out}: {e.strerror or e}") from e
    stats["first_serial"] = _first_serial(args)
    _out(json.dumps({k: v for k, v in stats.items()}, default=str))
    return 0


def _start_time(text: str):
    """``--start``: ``now`` or ISO-8601 -> an aware datetime (naive text is UTC)."""
    import argparse
    import datetime as dt

    if text.strip().lower() == "now":
        return dt.datetime.now(dt.timezone.utc)
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'now' or an ISO-8601 time (e.g. 2026-11-22T08:00:00+09:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _simulate_kafka(args) -> int:
    from soads.simulator.publish import simulate_to_kafka

    def show(st):
        _err(f"[soads] simulate -> {st['topic']}: {st['documents']:,} documents, "
             f"{st['events']:,} flat events, {st['events_per_s']:,.0f} events/s")

    realtime = args.pace == "realtime"
    if realtime and args.start is None:  # event time = wall time, from now on
        args.start = _start_time("now")
    try:
        stats = simulate_to_kafka(args.bootstrap, args.kafka, args.rate, args.objects, args.seed,
                                  args.anomaly_rate, args.noise_rate, args.format,
                                  args.events_per_file or 200, truth_dir=args.out, progress=show,
                                  start=args.start, first_serial=_first_serial(args),
                                  realtime=realtime,
                                  attribute_anomaly_rate=args.attribute_anomaly_rate)
    except ValueError as e:
        raise UsageError(str(e)) from e
    except OSError as e:
        raise UsageError(f"cannot write truth.csv to {args.out}: {e.strerror or e}") from e
    show(stats)
    stats["first_serial"] = _first_serial(args)
    _out(json.dumps(stats, default=str))
    return 0


def cmd_parse(args) -> int:
    from soads.epcis import parse_file

    n_events = n_quarantined = 0
    for path in _expand(args.paths):
        try:
            events, quarantine = parse_file(path, max_bytes=args.max_bytes)
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror or e}") from e
        for ev in events:
            if ev.get(S.SENSOR_REPORTS) is not None:  # stored as JSON text; shown as JSON
                ev = {**ev, S.SENSOR_REPORTS: json.loads(ev[S.SENSOR_REPORTS])}
            _out(json.dumps(ev, ensure_ascii=False))
        for q in quarantine:
            _err(f"quarantine {q[S.SOURCE]} {q[S.REASON]}: {q[S.DETAIL]}")
        n_events += len(events)
        n_quarantined += len(quarantine)
    _err(f"[soads] parse: {n_events} events, {n_quarantined} quarantined")
    return 0


def _read_patterns_jsonl(path: str) -> list[dict]:
    rows = []
    try:
        with open(path) as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                    pattern = r[S.PATTERN]
                    if not isinstance(pattern, list) or not all(isinstance(x, str) for x in pattern):
                        raise TypeError
                except (ValueError, KeyError, TypeError):
                    raise UsageError(f"{path}:{i}: not a pattern line "
                                     '(need {"pattern": [str, ...], "support": n, "maximal": bool})')
                rows.append({S.PATTERN: pattern, S.SUPPORT: r.get(S.SUPPORT),
                             S.MAXIMAL: bool(r.get(S.MAXIMAL, True))})
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from e
    return rows


def _check_readable(path: str) -> None:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise UsageError(f"cannot read {path}: no such readable file")


def cmd_mine(args) -> int:
    from soads import pipeline
    from soads.config import redact

    cfg = _config(args, **{"mining.minsup": args.minsup, "mining.max_length": args.max_length,
                           "mining.algorithm": args.algorithm})
    if cfg.mining.algorithm not in ("soads", "mllib", "no-relations"):
        raise UsageError(f"unknown algorithm {cfg.mining.algorithm!r} (soads, mllib, no-relations)")
    if args.input is None:
        spark = _spark(cfg)
        report = pipeline.Report()
        seqs, rel = pipeline.sequences_and_relations(spark, cfg, report)
        rows = pipeline.mine(spark, seqs, rel, cfg, report)
        _out(f"mining run {report.run_id}: {len(rows)} patterns from {report.counts['objects']:,} "
             f"objects in {report.seconds['mine']:.1f} s -> table pattern "
             f"({redact(cfg.storage.db_url)})")
        # the batch job that mines also fits the context detector on the same sequences
        pipeline.fit_detector(spark, seqs, rel, cfg, report)
        _out(_model_run_line(report))
        return 0
    if not args.out:
        raise UsageError("--out PATTERNS.jsonl is required with --input")
    _check_readable(args.input)
    from soads.mining import mine_patterns
    from soads.sequences import read_sequences_jsonl

    spark = _spark(cfg)
    try:
        seqs = read_sequences_jsonl(spark, args.input).cache()
    except ValueError as e:
        raise UsageError(str(e)) from e
    t0 = time.perf_counter()
    patterns, info = mine_patterns(spark, seqs, None, cfg.mining.minsup, cfg.mining.max_length,
                                   cfg.mining.algorithm)
    rows = [r.asDict() for r in patterns.collect()]
    rows.sort(key=lambda r: (-r[S.SUPPORT], -r[S.LENGTH], r[S.PATTERN]))
    with open(args.out, "w") as fh:
        for r in rows:
            fh.write(json.dumps({S.PATTERN: list(r[S.PATTERN]), S.SUPPORT: int(r[S.SUPPORT]),
                                 S.MAXIMAL: bool(r[S.MAXIMAL])}) + "\n")
    _err(f"[soads] mine ({cfg.mining.algorithm}): {len(rows)} patterns, minsup count "
         f"{info.get('minsup_count')}, {info.get('n_sequences')} sequences, "
         f"{time.perf_counter() - t0:.2f} s -> {args.out}")
    return 0


def _model_run_line(report) -> str:
    return (f"detector model run {report.model_run_id}: {report.counts['detector_rows']:,} count "
            f"rows from {report.counts['objects']:,} objects in {report.seconds['fit']:.1f} s "
            f"({report.counts['detector_skipped']} attributes left out as nearly unique) -> "
            f"tables detector_run, detector_count")


def cmd_fit_detector(args) -> int:
    from soads import pipeline

    cfg = _config(args)
    spark = _spark(cfg)
    report = pipeline.Report()
    seqs, rel = pipeline.sequences_and_relations(spark, cfg, report)
    pipeline.fit_detector(spark, seqs, rel, cfg, report)
    _out(_model_run_line(report))
    return 0


def cmd_score(args) -> int:
    from soads import pipeline

    over = {"scoring.match": args.match, "scoring.mismatch": args.mismatch,
            "scoring.gap_open": args.gap_open, "scoring.gap_extend": args.gap_extend}
    if args.maximal_only:
        over["scoring.maximal_only"] = "true"
    cfg = _config(args, **over)
    if args.input is None:
        report = pipeline.Report()
        try:
            _, run_id, pats = pipeline.score_newest_run(lambda: _spark(cfg), cfg, report,
                                                        args.model_run or "newest")
        except pipeline.NoMiningRun:
            raise UsageError(
                "no mining run in the PATTERN TABLE: run `soads mine` first") from None
        except pipeline.NoModelRun as e:
            raise UsageError(str(e)) from None
        _out(f"scored {report.counts['objects_scored']:,} objects against {len(pats)} patterns of "
             f"run {run_id} in {report.seconds['score']:.1f} s; "
             f"{report.counts['windows']} windows -> tables object_score, alignment_score")
        if report.model_run_id is None:
            _out("no detector model run yet (soads fit-detector): object_score's anomaly, "
                 "is_anomaly, explanation are null")
        else:
            _out(f"context detector: {report.counts['objects_flagged']:,} objects flagged "
                 f"against model run {report.model_run_id}; "
                 f"{report.counts['anomaly_rate_rows']:,} rows -> table anomaly_rate")
        return 0
    if not args.out:
        raise UsageError("--out SCORES.jsonl is required with --input")
    _check_readable(args.input)
    pats = None
    if args.patterns:
        rows = _read_patterns_jsonl(args.patterns)
        pats = pipeline.patterns_in_use(rows, cfg.scoring.maximal_only)
        if max(cfg.scoring.gap_open, cfg.scoring.gap_extend) > 0:  # as soads.scoring.score_batch
            raise UsageError(f"gap scores must be <= 0, got {cfg.scoring.gap_open}, "
                             f"{cfg.scoring.gap_extend}")
    from soads.cases import CaseError

    try:
        return _score_file(args, cfg, pats)
    except CaseError as e:  # a bad case in --input: file, line or trace, reason
        raise UsageError(str(e)) from None


# cases scored per step of `score --input`: the alignment scorer's batch (as the Spark scorer's
# arrow batches) and the output between two progress lines; memory is one chunk of cases
_SCORE_CHUNK = 4096


# events per chunk of the context detector's fit: a log up to this size is fitted in one call of
# the core, which holds the log's codes in memory; a longer one is counted chunk by chunk and the
# counts summed (memory: one chunk + the counts)
_FIT_CHUNK_EVENTS = 250_000


def _context_model(args, cfg, progress):
    """The context detector of `score --input`: fitted on the --input log itself (one pass over
    the file; memory: one chunk of cases and the model's counts, not the log).

    A stored model run (`--model-run RUN_ID|newest`, from [storage] db_url) is loaded instead
    of fitting.
    """
    from soads import cases, pipeline

    if getattr(args, "model_run", None) is not None:
        try:
            run = pipeline.stored_model_run(cfg, args.model_run)
        except pipeline.NoModelRun as e:
            raise UsageError(str(e)) from None
        if run is None:
            raise UsageError("--model-run newest: no detector model run in table detector_run "
                             "(soads fit-detector makes one)")
        return run.model

    def fit_cases():
        n = 0
        for c in cases.read_cases(args.input):
            n += 1
            progress(n)
            # an empty case counts too: its START -> END step is what the core scores for it
            yield c.sequence, c.attributes

    return fit_in_chunks(fit_cases(), cfg.detector, _FIT_CHUNK_EVENTS)


def fit_in_chunks(cases, conf, chunk_events: int):
    """``ContextModel.fit(cases, conf)`` in bounded memory: the same model (the same count rows)
    however long ``cases`` is.

    Chunks of about ``chunk_events`` events are counted one at a time with no attribute left out
    and their rows summed; the nearly unique attributes are then found on the sums, as the core
    finds them on the whole log (``unique_features``). A log of one chunk is fitted directly.
    """
    from collections import Counter

    from soads.detect import context

    chunk, n_events, sums = [], 0, None
    for case in cases:
        chunk.append(case)
        n_events += len(case[0]) + 1  # + 1: an empty case is one step too (START -> END)
        if n_events >= chunk_events:
            sums = Counter() if sums is None else sums
            for f, o, c, v, n in context.count_rows(chunk, conf, skipped=())[0]:
                sums[(f, o, c, v)] += n
            chunk, n_events = [], 0
    if sums is None:
        return context.ContextModel.fit(chunk, conf)
    for f, o, c, v, n in context.count_rows(chunk, conf, skipped=())[0]:
        sums[(f, o, c, v)] += n
    rows = [(f, o, c, v, n) for (f, o, c, v), n in sums.items()]
    return context.ContextModel.from_rows(rows, conf,
                                          context.unique_features(rows, conf.unique_ratio))


def _verdict_fields(v) -> dict:
    return {S.ANOMALY: float(v.anomaly), S.IS_ANOMALY: bool(v.is_anomaly),
            S.EXPLANATION: v.explanation}


def _score_file(args, cfg, pats) -> int:
    """`soads score --input FILE`: alignment fields (with --patterns) and the context detector's
    verdict for every case of a .jsonl/.jsonl.gz/.xes/.xes.gz file, in input order."""
    from soads import cases, scoring
    from soads.detect import context

    t0 = time.perf_counter()
    counted = {"fit": 0}

    def fit_progress(n: int) -> None:
        counted["fit"] = n
        now = time.perf_counter()
        if now - counted.get("t", t0) >= 2.0:
            counted["t"] = now
            _err(f"[soads] score: fitting the context detector: {n:,} cases read")

    model = _context_model(args, cfg, fit_progress)
    t_fit = time.perf_counter() - t0
    total, shown = counted["fit"], time.perf_counter()
    n = n_flagged = n_empty = n_events = 0
    # A regular file is written beside --out and renamed at the end, so a failed run leaves no
    # partial SCORES file; anything else (/dev/stdout, a pipe) is written as it goes.
    direct = os.path.exists(args.out) and not os.path.isfile(args.out)
    tmp = args.out if direct else f"{args.out}.part"
    try:
        fh = open(tmp, "w")
    except OSError as e:
        raise UsageError(f"cannot write {args.out}: {e.strerror or e}") from None
    try:
        with fh:
            for chunk in _batches(cases.read_cases(args.input), _SCORE_CHUNK):
                if pats is not None:
                    scores, raws, best = scoring.score_batch([c.sequence for c in chunk], pats,
                                                             cfg.scoring)
                verdicts = context.score_cases(model, [(c.sequence, c.attributes) for c in chunk])
                for i, c in enumerate(chunk):
                    row = {S.OID: c.oid}
                    if pats is not None:
                        k = int(best[i])
                        row.update({S.SCORE: float(scores[i]), S.RAW: float(raws[i]),
                                    S.PATTERN: pats[k] if k >= 0 else None})
                    row.update(_verdict_fields(verdicts[i]))
                    n_empty += not c.sequence
                    n_flagged += row[S.IS_ANOMALY]
                    n_events += len(c.sequence)
                    fh.write(json.dumps(row) + "\n")
                n += len(chunk)
                if time.perf_counter() - shown >= 2.0:  # long inputs only
                    shown = time.perf_counter()
                    _err(f"[soads] score: {n:,}/{max(total, n):,} cases scored "
                         f"({100.0 * n / max(total, n, 1):.0f}%), {n_flagged:,} flagged")
        if not direct:
            os.replace(tmp, args.out)
    except BaseException:
        if not direct:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise
    secs = time.perf_counter() - t0
    against = f", alignment against {len(pats)} patterns" if pats is not None else ""
    empty = f", {n_empty:,} without events (scored as START -> END)" if n_empty else ""
    _err(f"[soads] score: {n:,} cases ({n_events:,} events), {n_flagged:,} flagged "
         f"({100.0 * n_flagged / max(n, 1):.1f}%){empty}{against}; fit {t_fit:.2f} s, "
         f"total {secs:.2f} s -> {args.out}")
    return 0


def _batches(items, size: int):
    batch = []
    for x in items:
        batch.append(x)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def cmd_ingest(args) -> int:
    from soads import pipeline

    cfg = _config(args)
    files = _expand(args.paths)
    if not files:
        raise UsageError("no EPCIS files (.xml, .json, .jsonld) under the given paths")
    spark = _spark(cfg)
    report = pipeline.Report()
    from soads.storage.event_log import EventLogInUse

    try:
        pipeline.ingest(spark, files, cfg, report)
    except EventLogInUse as e:
        raise UsageError(str(e)) from e
    _out(json.dumps({"counts": report.counts, "quarantine": report.quarantine_by_reason,
                     "seconds": report.seconds}))
    return 0


def format_report(report, n_show: int = 10) -> str:
    """The demo's summary, as text."""
    c = report.counts
    lines = ["", "SOADS summary", "=" * 60,
             f"records read          {c.get('records_read', 0):>12,}",
             f"events stored         {c.get('events_stored', 0):>12,}",
             f"events quarantined    {c.get('events_quarantined', 0):>12,}"]
    for reason, n in report.quarantine_by_reason.items():
        lines.append(f"  {reason:<20}{n:>12,}")
    lines += [f"objects               {c.get('objects', 0):>12,}",
              f"relations             {c.get('relations', 0):>12,}",
              f"patterns              {c.get('patterns', 0):>12,}   "
              f"(maximal {c.get('maximal_patterns', 0):,}; minsup count "
              f"{report.mining.get('minsup_count')}; run {report.run_id})",
              f"windows scored        {c.get('windows', 0):>12,}", "",
              "top maximal patterns (support, length; by support x length):"]
    for r in report.top_patterns[:n_show]:
        lines.append(f"  {r[S.SUPPORT]:>7,}  {r[S.LENGTH]:>2}  "
                     + " > ".join(_short(x) for x in r[S.PATTERN]))
    lines += ["", "seconds per stage:"]
    lines += [f"  {k:<12}{v:>8.1f}" for k, v in report.seconds.items()]
    if report.quality:
        from soads.evaluate import quality_table

        lines += ["", "detection quality vs the simulator's ground truth (ROC-AUC, best F1;",
                  "P / R / F1: the detector's own label-free verdict):",
                  "  alignment = 1 - normalised Smith-Waterman score (the paper's evaluator);",
                  "  surprisal = max -log P(b|a) over the object's relations (soads.conformance);",
                  "  context   = the context detector's anomaly and is_anomaly (soads.detect;",
                  f"              model run {report.model_run_id})"]
        lines += ["  " + line for line in quality_table(report.quality, report.noise)]
    if report.anomaly_rates:
        lines += ["", "where objects were flagged (the worst step's read point; per hour: "
                  "table anomaly_rate):"]
        for r in report.anomaly_rates:
            pct = 100.0 * r[S.FLAGGED] / r[S.N_OBJECTS]
            lines.append(f"  {r[S.FLAGGED]:>6,} of {r[S.N_OBJECTS]:>7,} ({pct:4.1f}%)  "
                         f"{_short(r[S.READ_POINT])}")
    return "\n".join(lines)


def cmd_demo(args) -> int:
    from soads import config, pipeline
    from soads.simulator.generate import simulate

    cfg = _config(args)
    objects = args.objects or cfg.simulator.objects
    root = os.path.abspath(cfg.storage.root)
    epcis_dir = os.path.join(root, "epcis")
    t0 = time.perf_counter()
    _err(f"[soads] demo: simulating a battery plant, {objects:,} objects (seed "
         f"{cfg.simulator.seed}) -> {epcis_dir}")
    import shutil
    shutil.rmtree(epcis_dir, ignore_errors=True)
    stats = simulate(epcis_dir, n_objects=objects, seed=cfg.simulator.seed,
                     anomaly_rate=cfg.simulator.anomaly_rate, noise_rate=cfg.simulator.noise_rate,
                     attribute_anomaly_rate=cfg.simulator.attribute_anomaly_rate,
                     fmt=cfg.simulator.format, events_per_file=cfg.simulator.events_per_file,
                     progress=_progress("simulate"))
    report = pipeline.Report()
    report.seconds["simulate"] = time.perf_counter() - t0
    if os.path.exists(cfg.storage.db_url.replace("sqlite:///", "")) and \
            cfg.storage.db_url.startswith("sqlite:///"):
        os.remove(cfg.storage.db_url.replace("sqlite:///", ""))  # a demo starts from scratch
    import shutil as _sh
    for d in (cfg.stream.checkpoint_root, cfg.stream.input_path):
        _sh.rmtree(d, ignore_errors=True)  # the live part's stream starts from scratch too
    spark = _spark(cfg, stream=args.live > 0)
    _err("[soads] demo: ingesting EPCIS -> event log (Parquet) + quarantine")
    pipeline.ingest(spark, [epcis_dir], cfg, report, replace=True)  # from scratch
    _err("[soads] demo: sequences and the relational dependency table")
    seqs, rel = pipeline.sequences_and_relations(spark, cfg, report)
    _err(f"[soads] demo: mining ({cfg.mining.algorithm}, minsup {cfg.mining.minsup})")
    rows = pipeline.mine(spark, seqs, rel, cfg, report)
    pats = pipeline.patterns_in_use(rows, cfg.scoring.maximal_only)
    _err("[soads] demo: fitting the context detector (a model run)")
    detector = pipeline.fit_detector(spark, seqs, rel, cfg, report)
    _err(f"[soads] demo: scoring {report.counts['objects']:,} objects against {len(pats)} patterns"
         f" and model run {detector.run_id}")
    scored = pipeline.score(spark, seqs, rel, pats, report.run_id, cfg, report, detector)
    pipeline.evaluate(spark, scored, os.path.join(epcis_dir, "truth.csv"), report)
    live = _demo_live(spark, cfg, args.live, objects) if args.live > 0 else None
    report.seconds["total"] = time.perf_counter() - t0
    _out(format_report(report))
    if live:
        _out("")
        _out(live)
    _out(f"\ntables in {config.redact(cfg.storage.db_url)}; event log in "
         f"{config.event_log_location(cfg)}; "
         f"simulated {stats.get('events', '?'):,} reads")
    return 0


def _demo_live(spark, cfg, n_live: int, n_batch: int) -> str:
    """The demo's live part: a further stretch of the plant through the event job (the file
    stream, embedded default) scored against the model run just fitted, then the alert process
    over what it wrote. Returns the report's lines."""
    import dataclasses
    import datetime as dt
    import glob
    import shutil

    from soads import query
    from soads.alerts.process import AlertProcess
    from soads.simulator.generate import default_start, simulate
    from soads.stream.job import start_event_queries

    root = os.path.abspath(cfg.storage.root)
    live_dir = os.path.join(root, "live")
    _err(f"[soads] demo: live: {n_live:,} more objects through the event job (file stream) "
         "and the alert process")
    t0 = time.perf_counter()
    shutil.rmtree(live_dir, ignore_errors=True)
    stats = simulate(live_dir, n_objects=n_live, seed=cfg.simulator.seed + 1,
                     anomaly_rate=cfg.simulator.anomaly_rate,
                     noise_rate=cfg.simulator.noise_rate,
                     attribute_anomaly_rate=cfg.simulator.attribute_anomaly_rate,
                     fmt=cfg.simulator.format, events_per_file=2000,
                     start=default_start() + dt.timedelta(days=7), first_serial=n_batch + 1)
    incoming = os.path.abspath(cfg.stream.input_path)
    os.makedirs(incoming, exist_ok=True)
    for f in sorted(glob.glob(os.path.join(live_dir, "events-*"))):
        os.replace(f, os.path.join(incoming, os.path.basename(f)))  # whole files only
    queries = start_event_queries(spark, cfg, trigger=False)
    try:
        queries.process_all_available()
    finally:
        queries.stop()
    t_stream = time.perf_counter() - t0
    # no Kafka and (maybe) no Alertmanager here: the alerts go to the table
    acfg = dataclasses.replace(cfg, alerts=dataclasses.replace(cfg.alerts, alertmanager_url=""))
    proc = AlertProcess(acfg, kafka=False)
    try:
        proc.step()
        proc.step()
    finally:
        proc.close()
    truth = {}
    with open(os.path.join(live_dir, "truth.csv")) as fh:
        next(fh)
        for line in fh:
            oid, label, kind, _ = line.rstrip("\n").split(",")
            truth[oid] = (label == "1", kind)
    alerts = query.alerts(cfg.storage.db_url)
    objects = [a for a in alerts if a[S.ALERTNAME] == "ObjectAnomaly"]
    flagged = {a[S.LABELS].get("oid") for a in objects}
    judged = {r[S.OID] for r in query.verdicts_since(cfg.storage.db_url, -1)}
    tp = sum(1 for o in flagged if truth.get(o, (False,))[0])
    anomalous = {o for o in judged if truth.get(o, (False,))[0]}
    by = {}
    for a in alerts:
        k = (a[S.ALERTNAME], a[S.SEVERITY], a[S.STATE])
        by[k] = by.get(k, 0) + 1
    actions = query.alert_actions(cfg.storage.db_url)
    kinds = {}
    for r in actions:
        kinds[r[S.ACTION_TYPE]] = kinds.get(r[S.ACTION_TYPE], 0) + 1
    lines = [f"live: {stats.get('events', 0):,} reads of {n_live:,} more objects through the "
             f"event job (file stream, {t_stream:.0f} s): {len(judged):,} objects judged "
             "against the model run above; the alert process raised "
             f"{len(alerts)} alerts (pending: waiting out their rule's `for`):"]
    lines += [f"  {n:5d}  {name} {sev}, {state}" for (name, sev, state), n in sorted(by.items())]
    if flagged:
        lines.append(f"  ObjectAnomaly vs the simulator's labels: precision "
                     f"{tp / len(flagged):.3f}, recall {tp / max(len(anomalous), 1):.3f} "
                     f"({tp} of {len(anomalous)} anomalous objects judged so far)")
    for a in sorted(objects, key=lambda a: -(a[S.VALUE] or 0))[:3]:
        kind = truth.get(a[S.LABELS].get("oid"), (False, ""))[1] or "normal"
        lines.append(f"  e.g. [{a[S.SEVERITY]}] {(a[S.ANNOTATIONS] or {}).get('summary', '')}"
                     f"  (truth: {kind})")
    if actions:
        lines.append("  actions: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
                     + " (recorded in alert_action; without Kafka on the embedded default they "
                     "are not sent: `soads alerts actions`)")
    lines.append("  soads alerts list  shows them (docs/alerts.md)")
    return "\n".join(lines)


SKAB_PUBLISHED = [  # SKAB's published outlier-detection table (github.com/waico/SKAB), recomputed
    # on the 20 files of the valve1 / valve2 / anomaly-free subset
    ("MSET", 0.77, 40.72, 14.96), ("Conv-AE", 0.76, 14.94, 31.33),
    ("T-squared + Q (PCA)", 0.75, 26.83, 26.19), ("LSTM-AE (SKAB)", 0.70, 30.09, 31.92),
    ("T-squared", 0.61, 19.20, 48.76), ("Vanilla LSTM", 0.42, 10.10, 71.47),
    ("MSCRED", 0.24, 57.65, 80.42), ("Isolation forest", 0.20, 1.17, 88.61),
    ("Vanilla AE", 0.14, 0.33, 92.54),
]


def _sensor_conf(path: str):
    """The ``[sensor]`` section of ``path`` (:class:`soads.config.SensorConf`)."""
    from soads import config

    try:
        return config.load([path]).sensor
    except config.ConfigError as e:
        raise UsageError(str(e)) from e


def cmd_sensor_evaluate(args) -> int:
    from soads.sensor.skab import evaluate_skab

    if not os.path.isdir(args.data):
        raise UsageError(f"no such directory: {args.data}")
    conf = _sensor_conf(args.sensor_conf)
    preset = args.preset or conf.preset
    if preset not in conf.presets:
        raise UsageError(f"unknown preset {preset!r} in {args.sensor_conf}")
    if args.select:
        return _sensor_select(args, conf, preset)
    t0 = time.perf_counter()
    r = evaluate_skab(args.data, params=conf.params(preset), **conf.skab.kwargs())
    seconds = time.perf_counter() - t0
    if not r.get("files"):
        raise UsageError(f"no SKAB csv files with an 'anomaly' column under {args.data}")
    _out(f"SKAB outlier-detection protocol: {r['files']} files, {r['points']:,} test points, "
         f"{seconds:.1f} s")
    _out(f"  {'algorithm':<24}{'F1':>6}{'FAR %':>9}{'MAR %':>9}")
    _out(f"  {'SOADS LSTM-AE (' + preset + ')':<24}{r['f1']:>6.2f}{r['far']:>9.2f}{r['mar']:>9.2f}")
    for name, f1, far, mar in SKAB_PUBLISHED:
        _out(f"  {name:<24}{f1:>6.2f}{far:>9.2f}{mar:>9.2f}")
    if args.json:
        _out(json.dumps({k: r[k] for k in ("f1", "far", "mar", "files", "points")}))
    return 0


def _sensor_select(args, conf, preset: str) -> int:
    """The label-free choice of pretrain / inflate_scale (soads.sensor.skab docstring)."""
    from soads.sensor.skab import read_anomaly_free, select_design

    try:
        read_anomaly_free(args.data)
    except OSError as e:
        raise UsageError(f"--select needs {args.data}/anomaly-free/anomaly-free.csv: {e}") from e
    t0 = time.perf_counter()
    r = select_design(args.data, params=conf.params(preset), **conf.skab.kwargs())
    _out(f"Label-free selection ({preset} preset): protocol replayed on the anomaly-free file, "
         f"two-fold, {time.perf_counter() - t0:.1f} s; no labelled file read")
    _out(f"  {'pretrain':<10}{'scaling':<10}{'FAR %':>8}{'alarms':>9}{'rows':>8}")
    for i, c in enumerate(r["candidates"]):
        mark = "  <- chosen" if i == r["chosen"] else ""
        _out(f"  {str(c['pretrain']).lower():<10}{str(c['inflate_scale']).lower():<10}"
             f"{c['far']:>8.2f}{c['fp']:>9}{c['test_rows']:>8}{mark}")
    if args.json:
        keep = ("pretrain", "inflate_scale", "far", "fp", "test_rows", "chunks")
        _out(json.dumps({"chosen": r["chosen"],
                         "candidates": [{k: c[k] for k in keep} for c in r["candidates"]]}))
    return 0


def _registry_dir(args) -> str:
    return args.registry or _sensor_conf(args.sensor_conf).stream.registry


def cmd_sensor_train(args) -> int:
    from soads.sensor import train

    conf = _sensor_conf(args.sensor_conf)
    try:
        params = conf.params(args.preset)
    except KeyError as e:
        raise UsageError(str(e)) from e
    if args.epochs:
        params["epochs"] = args.epochs
    if not os.path.exists(args.data):
        raise UsageError(f"no such file or directory: {args.data}")
    root = _registry_dir(args)
    if args.every is None:
        v = train.train_version(train.read_history(args.data), params, root,
                                promote=args.promote, drift_conf=conf.drift, source=args.data)
        info = _training_line(root, v)
        _out(f"{v} in {root}: {info}{' (promoted)' if args.promote else ''}")
        return 0
    for v in train.run_schedule(args.data, params, root, args.every, conf.train.check_seconds,
                                args.promote, conf.drift, args.db):
        _out(v)
    return 0


def _training_line(root: str, version: str) -> str:
    from soads.sensor import registry

    info = registry.training_info(root, version)
    if not info:
        return "(no training.json)"
    m, d = info["metrics"], info["data"]
    return (f"{d['rows']:,} rows {d['first_ts']} .. {d['last_ts']}, "
            f"{len(m['epoch_seconds'])} epochs, {m['fit_seconds']:.1f} s, "
            f"threshold {m['threshold']:.4g}, reason {info.get('reason', '?')}")


def cmd_sensor_models(args) -> int:
    from soads.sensor import registry

    root = _registry_dir(args)
    current = registry.current_version(root)
    versions = registry.list_versions(root)
    if not versions:
        _out(f"no models in {root}")
    for v in versions:
        _out(f"{'*' if v == current else ' '} {v}  {_training_line(root, v)}")
    return 0


def cmd_sensor_promote(args) -> int:
    from soads.sensor import registry

    root = _registry_dir(args)
    try:
        registry.promote(root, args.version)
    except KeyError as e:
        raise UsageError(str(e)) from e
    _out(f"current model: {args.version}")
    return 0


def cmd_sensor_rollback(args) -> int:
    from soads.sensor import registry

    try:
        v = registry.rollback(_registry_dir(args))
    except ValueError as e:
        raise UsageError(str(e)) from e
    _out(f"current model: {v}")
    return 0


def cmd_sensor_robot_arm(args) -> int:
    from soads.sensor.robot_arm import evaluate_robot_arm

    params = _sensor_conf(args.sensor_conf).params("paper")
    r = evaluate_robot_arm(params=params, seed=args.seed)
    _out(f"robot arm (paper 000 Table 4 setting, preset 'paper', seed {args.seed}): "
         f"{r['test_rows']:,} test rows, {r['test_abnormal_rows']:,} abnormal")
    _out(f"  {'':<14}{'accuracy %':>11}{'precision':>10}{'recall':>8}{'F1':>8}{'fall-out':>10}")
    for name, m in (("SOADS", r), ("SOADS (normal+)", r["normal_positive"])):
        _out(f"  {name:<14}{m['accuracy']:>11.2f}{m['precision']:>10.4f}{m['recall']:>8.4f}"
             f"{m['f1']:>8.4f}{m['fall_out']:>10.4f}")
    _out(f"  {'paper':<14}{'':>11}{'':>10}{'':>8}{0.9915:>8.4f}{0.0060:>10.4f}")
    _out("  (the paper takes NORMAL as the positive class: compare its row with 'normal+')")
    return 0


def cmd_bench(args) -> int:
    if args.bench == "parse":
        from soads.benchmarks.parse import run
        lines = run(n_objects=args.objects)
    elif args.bench == "mine":
        from soads.benchmarks.mine import run
        lines = []
        for ev in (args.events or [1_000_000, 9_000_000]):
            lines += run(events=ev, minsup=args.minsup, mllib_timeout=args.mllib_timeout,
                         repeat=args.repeat,
                         algorithms=tuple(args.algorithm or ("soads", "no-relations", "mllib")))
    elif args.bench == "score":
        from soads.benchmarks.score import run
        lines = run(n_sequences=args.sequences, big=args.big, repeat=args.repeat,
                    spark=not args.no_spark)
    elif args.bench == "simulate":
        from soads.benchmarks.simulate import run
        lines = run(n_objects=args.objects)
    elif args.bench == "stream":
        from soads.benchmarks.stream import run

        if not args.conf:
            args.conf = [p for p in (DEFAULT_CONF, "conf/services-stream.toml")
                         if os.path.exists(p)]
        job = _config(args)
        lines = run(events=args.events, rate=args.rate, seconds=args.seconds,
                    maximal_only=args.maximal_only, spark_conf=job.spark, job=job.stream,
                    operators=tuple(args.operator or ("jvm", "python")))
    elif args.bench == "alerts":
        from soads.benchmarks.alerts import run

        if not args.conf:
            args.conf = [p for p in (DEFAULT_CONF, "conf/services-stream.toml")
                         if os.path.exists(p)]
        job = _config(args)
        lines = run(rate=args.rate, seconds=args.seconds, events=args.events,
                    spark_conf=job.spark, job=job.stream)
    elif args.bench == "detect":
        from soads.benchmarks.detect import TruthError, run
        from soads.cases import CaseError

        if not args.conf and os.path.exists(DEFAULT_CONF):
            args.conf = [DEFAULT_CONF]
        if not os.path.isdir(args.logs):
            raise UsageError(f"--logs {args.logs}: no such directory")
        try:
            lines = run(args.logs, _config(args),
                        detectors=tuple(args.detector or ("alignment", "surprisal", "context")))
        except (CaseError, TruthError, FileNotFoundError) as e:  # a bad log or truth file: name it
            raise UsageError(str(e)) from None
    else:  # sensor (argparse restricts the choices)
        from soads.benchmarks.sensor import run
        lines = run(skab_dir=args.skab, sensor_conf=args.sensor_conf,
                    rate=args.readings_per_s, seconds=args.seconds,
                    trigger_seconds=args.trigger, latency_only=args.latency_only)
    for line in lines:
        _out(line)
    return 0


def _add_bench(sub) -> None:
    s = sub.add_parser("bench", help="benchmarks that print figures (one sub-command each)")
    bsub = s.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")

    b = bsub.add_parser("parse", help="EPCIS parsing: pure parser and Spark ingest")
    b.add_argument("--objects", type=_positive_int, default=20000,
                   help="simulated objects (default 20,000)")
    b.set_defaults(func=cmd_bench)

    b = bsub.add_parser("mine", help="soads vs no-relations vs MLlib PrefixSpan (paper Fig. 14)")
    b.add_argument("--events", type=_positive_int, action="append",
                   help="event-log size (repeatable; default 1,000,000 and 9,000,000)")
    b.add_argument("--minsup", type=_minsup, default=0.01)
    b.add_argument("--algorithm", action="append", choices=("soads", "no-relations", "mllib"),
                   help="miners to time (repeatable; default all three)")
    b.add_argument("--repeat", type=_positive_int, default=2,
                   help="runs per miner, the same for each; the best is shown (default 2)")
    b.add_argument("--mllib-timeout", type=float, default=1800.0, metavar="SECONDS",
                   help="cancel an MLlib run after this long (its ratio is then a lower bound)")
    b.set_defaults(func=cmd_bench)

    b = bsub.add_parser("score", help="fast Smith-Waterman scorer vs Biopython (paper 4.5)")
    b.add_argument("--sequences", type=_positive_int, default=10_000,
                   help="sequences of the stress test (default 10,000)")
    b.add_argument("--big", type=int, default=1_000_000,
                   help="sequences of the large run (default 1,000,000; 0 skips it)")
    b.add_argument("--repeat", type=_positive_int, default=3,
                   help="runs per scorer, the same for each; the best is shown (default 3)")
    b.add_argument("--no-spark", action="store_true", help="skip the large run's Spark part")
    b.set_defaults(func=cmd_bench)

    b = bsub.add_parser("simulate", help="simulator throughput (the paper's 10 GB log)")
    b.add_argument("--objects", type=_positive_int, default=500_000,
                   help="simulated objects (default 500,000)")
    b.set_defaults(func=cmd_bench)

    b = bsub.add_parser("stream", help="Kafka -> event job -> HBase + MariaDB: throughput, "
                                       "latency")
    b.add_argument("--events", type=_positive_int, default=1_300_000,
                   help="flat events of the sustained run (default 1,300,000)")
    b.add_argument("--rate", type=float, default=2000.0, metavar="EVENTS_PER_S",
                   help="publishing rate of the latency run (flat events/s)")
    b.add_argument("--seconds", type=float, default=60.0, help="latency run length")
    b.add_argument("--maximal-only", action="store_true",
                   help="score against the mining run's maximal patterns only")
    b.add_argument("--operator", action="append", choices=("jvm", "python"),
                   help="state operator(s) of the sustained run, side by side (repeatable; "
                        "default jvm and python; the latency run uses the first)")
    b.add_argument("--conf", action="append", metavar="TOML",
                   help="the job's config files for its [spark] and [stream] sections "
                        "(repeatable; default conf/soads.toml and conf/services-stream.toml)")
    b.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    b.set_defaults(func=cmd_bench)

    b = bsub.add_parser("alerts", help="Kafka -> event job -> alert process -> alerts and "
                                       "actions topics: latency, quality, throughput")
    b.add_argument("--rate", type=float, default=2000.0, metavar="EVENTS_PER_S",
                   help="publishing rate of the latency run (flat events/s, default 2000)")
    b.add_argument("--seconds", type=float, default=60.0, help="latency run length (default 60)")
    b.add_argument("--events", type=_positive_int, default=1_300_000,
                   help="flat events of the sustained run (default 1,300,000, as bench stream)")
    b.add_argument("--conf", action="append", metavar="TOML",
                   help="the event job's config files for its [spark] and [stream] sections "
                        "(repeatable; default conf/soads.toml and conf/services-stream.toml)")
    b.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    b.set_defaults(func=cmd_bench)

    b = bsub.add_parser("detect", help="detection quality on labelled process logs: the paper's "
                                       "evaluator, relation surprisal, context detector")
    b.add_argument("--logs", required=True, metavar="DIR",
                   help="a folder of labelled logs: NAME.jsonl.gz (or .jsonl, .xes, .xes.gz) "
                        "beside NAME.truth.jsonl.gz (docs/detection.md says where to get them)")
    b.add_argument("--detector", action="append", choices=("alignment", "surprisal", "context"),
                   help="detectors to run (repeatable; default all three)")
    b.add_argument("--conf", action="append", metavar="TOML",
                   help="config files for [mining], [scoring] and [detector] "
                        "(default conf/soads.toml)")
    b.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    b.set_defaults(func=cmd_bench)

    b = bsub.add_parser("sensor", help="sensor model: training, SKAB figures, stream latency")
    b.add_argument("--skab", default="", metavar="DIR",
                   help="SKAB data (github.com/waico/SKAB, its data/ folder) for the end-to-end "
                        "evaluation; without it that part is skipped and says so")
    b.add_argument("--sensor-conf", default="conf/sensor.toml", metavar="TOML")
    b.add_argument("--readings-per-s", type=float, default=100.0, metavar="RATE",
                   help="publishing rate of the streaming latency run")
    b.add_argument("--seconds", "--sensor-seconds", type=float, default=60.0,
                   dest="seconds", help="length of the streaming latency run")
    b.add_argument("--trigger", type=float, default=0.5, metavar="SECONDS",
                   help="trigger interval of the streaming latency run")
    b.add_argument("--latency-only", action="store_true",
                   help="only the streaming latency run (no training/SKAB figures)")
    b.set_defaults(func=cmd_bench)


def _service_errors() -> tuple:
    """What an unreachable HBase Thrift server, Kafka broker or database raises."""
    import sqlalchemy as sa

    errors = [OSError, sa.exc.OperationalError]
    try:
        from thriftpy2.transport import TTransportException
        errors.append(TTransportException)
    except ImportError:  # without the hbase extra, the HBase backend is not in use
        pass
    try:
        from kafka.errors import KafkaError
        errors.append(KafkaError)
    except ImportError:  # without the kafka extra, there is no quarantine topic to read
        pass
    return tuple(errors)


def _cell(value, width: int | None = None) -> str:
    text = "-" if value is None else str(value).replace("\n", " ")
    return text if width is None or len(text) <= width else text[:width - 1] + "~"


def cmd_quarantine(args) -> int:
    from soads import config, query

    cfg = _config(args)
    if args.sensor:
        db = cfg.storage.db_url  # the sensor job's tables are in the database of every job
        try:
            rows = query.sensor_quarantine(db, args.limit)
        except _service_errors() as e:
            raise UsageError(f"cannot read sensor_quarantine from {db}: {e}") from e
        for r in rows:
            if args.json:
                _out(json.dumps({**r, S.TS: r[S.TS] and r[S.TS].isoformat()}))
            else:
                _out(f"{_cell(r[S.TS])}  {r[S.REASON]:<18} {_cell(r[S.MACHINE_ID]):<10} "
                     f"{r[S.SOURCE]}  {_cell(r[S.DETAIL], 80)}")
        _err(f"[soads] quarantine: {len(rows)} newest quarantined readings (sensor job, {db})")
        return 0
    if args.topic:
        topic, bootstrap = cfg.stream.quarantine_topic, cfg.stream.kafka_bootstrap
        if not topic:
            raise UsageError("[stream] quarantine_topic is empty: the job publishes none")
        try:
            rows = query.topic_quarantine(bootstrap, topic, args.limit)
        except _service_errors() as e:
            raise UsageError(f"cannot read {topic} from {bootstrap}: {e}") from e
        for r in rows:
            if args.json:
                _out(json.dumps({**r, query.STORED_AT: r[query.STORED_AT].isoformat()}))
            else:
                _out(f"{r[query.STORED_AT]:%Y-%m-%d %H:%M:%S}  topic  {_cell(r[S.REASON]):<20} "
                     f"{_cell(r[S.SOURCE])}  {_cell(r[S.DETAIL], 80)}")
        _err(f"[soads] quarantine: {len(rows)} newest records of topic {topic} ({bootstrap})")
        return 0
    # one event log: soads ingest / soads demo and the event job write the same one
    location = config.event_log_location(cfg)
    try:
        rows = query.event_quarantine(location, args.limit)
    except _service_errors() as e:
        raise UsageError(f"cannot read the quarantine of {location}: {e}") from e
    for r in rows:
        if args.json:
            _out(json.dumps({**r, query.STORED_AT: r[query.STORED_AT].isoformat(),
                             "event_log": location}))
        else:
            _out(f"{r[query.STORED_AT]:%Y-%m-%d %H:%M:%S}  {r[S.REASON]:<20} "
                 f"{r[S.SOURCE]}  {_cell(r[S.DETAIL], 80)}")
    _err(f"[soads] quarantine: {len(rows)} newest records of {location}")
    return 0


def cmd_jobs(args) -> int:
    from soads import job_status

    directory = args.dir or job_status.default_dir()
    jobs = job_status.list_jobs(directory, clean=True)
    if not jobs:
        _out(f"no jobs running (pid files in {directory})")
    for j in jobs:
        state = "running" if j["alive"] else "dead (pid file removed)"
        if j.get("error"):
            state = f"dead ({j['error']}; removed)"
        _out(f"{j['name']:<16} pid {_cell(j['pid']):<8} {state:<24} since {_cell(j['started'])}"
             f"  conf {' '.join(j.get('conf') or []) or '-'}  in {j.get('cwd', '-')}")
    return 0


# -- alerts (soads.alerts) -----------------------------------------------------------------

ALERTS_CONF = ("conf/alerts.toml", "conf/actions.toml")


def _alerts_config(args):
    """conf/soads.toml, conf/alerts.toml and conf/actions.toml by default (those present)."""
    if not args.conf:
        args.conf = [p for p in (DEFAULT_CONF,) + ALERTS_CONF if os.path.exists(p)]
    return _config(args)


def _duration(text: str) -> float:
    """Seconds of ``90s``, ``30m``, ``2h``, ``1d`` (a bare number is seconds)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text and text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: use 90s, 30m, 2h or 1d")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: must be > 0")
    return value


def _who(args) -> str:
    return args.by or os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"


def cmd_alerts_run(args) -> int:
    from soads.alerts.process import AlertProcess
    from soads.job_status import job_started

    cfg = _alerts_config(args)
    job_started("alerts", args.conf)  # pid file (soads jobs)
    proc = AlertProcess(cfg, kafka=None if args.kafka is None else args.kafka == "on")
    _err(f"[soads] alerts: evaluating every {cfg.alerts.evaluation_seconds:g} s over "
         f"{cfg.storage.db_url}; Kafka topics "
         f"{'on' if proc.kafka else 'off'}; Alertmanager "
         f"{cfg.alerts.alertmanager_url or 'off'}; webhooks {len(cfg.alerts.webhook_urls)}")
    try:
        proc.run(steps=args.steps)
    except KeyboardInterrupt:
        pass
    finally:
        proc.close()
    return 0


def _alert_line(r: dict) -> str:
    lab = r[S.LABELS] or {}
    what = " ".join(f"{k}={lab[k]}" for k in ("line", "read_point", "machine_id", "oid", "job")
                    if k in lab)
    muted = ("silenced" if r[S.SILENCED_BY] else "") + ("inhibited" if r[S.INHIBITED_BY] else "")
    flags = ", ".join(x for x in (muted, f"acked by {r[S.ACKED_BY]}" if r[S.ACKED_BY] else "")
                      if x)
    return (f"{r[S.ALERT_ID]}  {r[S.STATE]:<8} {r[S.SEVERITY] or '-':<8} {r[S.ALERTNAME]:<20} "
            f"{what}  since {_cell(r[S.STARTS_AT] or r[S.ACTIVE_AT])}"
            + (f"  ended {_cell(r[S.ENDS_AT])}" if r[S.ENDS_AT] else "")
            + (f"  [{flags}]" if flags else "")
            + f"\n    {(r[S.ANNOTATIONS] or {}).get('summary', '')}")


def cmd_alerts_list(args) -> int:
    from soads import query

    cfg = _alerts_config(args)
    states = None if args.state == "all" else [args.state]
    rows = query.alerts(cfg.storage.db_url, states=states, limit=args.limit)
    for r in rows:
        _out(json.dumps(r, default=str) if args.json else _alert_line(r))
    if not rows and not args.json:
        _out(f"no {'' if args.state == 'all' else args.state + ' '}alerts")
    return 0


def cmd_alerts_ack(args) -> int:
    from soads.storage import alerts as store

    cfg = _alerts_config(args)
    if args.action:
        ok = store.ack_action(cfg.storage.db_url, args.id, _who(args))
    else:
        ok = store.ack_alert(cfg.storage.db_url, args.id, _who(args))
    if not ok:
        raise UsageError(f"no {'action' if args.action else 'alert'} {args.id!r} "
                         f"(soads alerts {'actions' if args.action else 'list'} shows the ids)")
    _out(f"acknowledged {'action' if args.action else 'alert'} {args.id} by {_who(args)}")
    return 0


def cmd_alerts_silence(args) -> int:
    import datetime as dt

    from soads.alerts import core
    from soads.storage import alerts as store

    cfg = _alerts_config(args)
    now = dt.datetime.now(dt.timezone.utc)
    try:
        sil = core.Silence.create(args.matchers, now, now + dt.timedelta(seconds=args.duration),
                                  created_by=_who(args), comment=args.comment or "")
    except ValueError as e:
        raise UsageError(str(e)) from e
    store.add_silence(cfg.storage.db_url, {**sil.to_dict(), S.CREATED_AT: now})
    _out(f"silence {sil.id}: {' '.join(str(m) for m in sil.matchers)} until "
         f"{sil.ends_at:%Y-%m-%d %H:%M:%S} UTC (soads alerts unsilence {sil.id} ends it)")
    return 0


def cmd_alerts_unsilence(args) -> int:
    from soads.storage import alerts as store

    cfg = _alerts_config(args)
    if not store.expire_silence(cfg.storage.db_url, args.id):
        raise UsageError(f"no silence {args.id!r} (soads alerts silences shows the ids)")
    _out(f"silence {args.id} ended")
    return 0


def cmd_alerts_silences(args) -> int:
    import datetime as dt

    from soads import query

    cfg = _alerts_config(args)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows = query.silences(cfg.storage.db_url)
    for r in rows:
        state = "active" if r[S.STARTS_AT] <= now < r[S.ENDS_AT] else \
            "pending" if now < r[S.STARTS_AT] else "expired"
        _out(f"{r[S.SILENCE_ID]}  {state:<8} {' '.join(r[S.MATCHERS])}  until "
             f"{_cell(r[S.ENDS_AT])}  by {r[S.CREATED_BY] or '-'}"
             + (f"  ({r[S.COMMENT]})" if r[S.COMMENT] else ""))
    if not rows:
        _out("no silences")
    return 0


def cmd_alerts_actions(args) -> int:
    from soads import query

    cfg = _alerts_config(args)
    rows = query.alert_actions(cfg.storage.db_url, status=args.status)[-args.limit:]
    for r in rows:
        if args.json:
            _out(json.dumps(r, default=str))
            continue
        _out(f"{r[S.ACTION_ID]}  {r[S.STATUS]:<9} {r[S.ACTION_TYPE]:<17} target {r[S.TARGET]}  "
             f"via {r[S.CHANNEL]}  alert {r[S.ALERT_ID]}  at {_cell(r[S.CREATED_AT])}"
             + (f"  attempts {r[S.ATTEMPTS]}" if r[S.ATTEMPTS] else "")
             + (f"  error: {r[S.ERROR]}" if r[S.ERROR] else "")
             + (f"  acked by {r[S.ACKED_BY]}" if r[S.ACKED_BY] else ""))
    if not rows and not args.json:
        _out("no actions")
    return 0


def cmd_sensor_publish(args) -> int:
    import datetime as dt

    from soads.sensor import publish

    stream = _sensor_conf(args.sensor_conf).stream
    topic = args.kafka or stream.topic
    bootstrap = args.bootstrap or stream.kafka_bootstrap
    if args.csv:
        _check_readable(args.csv)
        readings = publish.csv_readings(args.csv)
        rate = args.rate or 0.0
    else:
        start = args.start or dt.datetime.now(dt.timezone.utc)
        readings = publish.synthetic_readings(args.machines, stream.sensors, args.seed, start,
                                              args.step)
        # default: each machine reads once per step of event time, in step with the wall clock
        rate = args.machines / args.step if args.rate is None else args.rate
    count = args.count
    if count is None and args.seconds is None and not args.csv:
        count = 60 * args.machines

    def show(st):
        _err(f"[soads] sensor publish -> {topic}: {st['readings']:,} readings of "
             f"{st['machines']} machines, {st['readings_per_s']:,.1f} readings/s")

    try:
        stats = publish.publish_readings(readings, bootstrap, topic, rate, count, args.seconds,
                                         progress=show)
    except ValueError as e:
        raise UsageError(str(e)) from e
    show(stats)
    _out(json.dumps(stats))
    return 0


# -- parser ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="soads", description="SOADS: Scalable Online Anomaly Detection System (batch path).")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug logging, and Spark's and the libraries' INFO lines")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("simulate", help="battery-plant EPCIS documents + truth.csv")
    s.add_argument("--objects", type=_positive_int, required=True)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--out", metavar="DIR", help="documents + truth.csv (with --kafka: truth.csv)")
    s.add_argument("--anomaly-rate", type=_fraction, default=0.04,
                   help="fraction of objects with a process anomaly (default 0.04)")
    s.add_argument("--attribute-anomaly-rate", type=_fraction, default=0.04,
                   help="fraction of the other objects with an attribute anomaly: a normal path "
                        "with one wrong bizStep, disposition, bizLocation or action (default 0.04)")
    s.add_argument("--noise-rate", type=_fraction, default=0.05)
    s.add_argument("--format", choices=("xml", "jsonld"), default="xml")
    s.add_argument("--events-per-file", type=_positive_int,
                   help="ObjectEvents per document (default 20000; 200 with --kafka)")
    s.add_argument("--kafka", metavar="TOPIC", help="publish one document per Kafka record")
    s.add_argument("--bootstrap", default="127.0.0.1:9092", metavar="HOST:PORT")
    s.add_argument("--rate", type=float, default=0.0, metavar="EVENTS_PER_S",
                   help="--kafka: flat events per second (0: as fast as possible)")
    s.add_argument("--start", type=_start_time, default=None, metavar="WHEN",
                   help="event time of the plant's start: 'now' or ISO-8601 (no offset = UTC); "
                        "default 2024-03-04T08:00+09:00. A second log published into a running "
                        "stream needs a later start, or its events arrive late")
    s.add_argument("--pace", choices=("fast", "realtime"), default="fast",
                   help="--kafka: 'fast' (default) runs as fast as possible (or at --rate) "
                        "from the start time, so event time runs ahead of the wall clock (a "
                        "plant day in minutes); 'realtime' sends each document when its "
                        "events' time comes, so event time keeps with the wall clock (start: "
                        "now unless --start)")
    s.add_argument("--first-serial", type=_positive_int, metavar="N",
                   help="SGTIN serial of the first object (default: 1 for seed 7 from the "
                        "default start, as `make demo`; another seed or start gets its own "
                        "range, so two runs never share object ids)")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("parse", help="EPCIS files -> one JSON flat event per line")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("--max-bytes", type=_positive_int, default=64 * 1024 * 1024)
    s.set_defaults(func=cmd_parse)

    s = sub.add_parser("ingest", help="EPCIS files -> EVENT LOG TABLE + quarantine")
    s.add_argument("paths", nargs="+", metavar="PATH")
    _add_conf(s)
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("mine", help="frequent contiguous patterns (modified PrefixSpan)")
    s.add_argument("--input", metavar="SEQUENCES.jsonl",
                   help='lines {"oid": ..., "sequence": [...]}; default: the stored event log')
    s.add_argument("--out", metavar="PATTERNS.jsonl")
    s.add_argument("--minsup", type=_minsup)
    s.add_argument("--max-length", type=_positive_int)
    s.add_argument("--algorithm", choices=("soads", "mllib", "no-relations"))
    _add_conf(s)
    s.set_defaults(func=cmd_mine)

    s = sub.add_parser(
        "score", help="alignment scores against mined patterns; context detector verdicts",
        description="Without --input: the stored event log's objects, scored against the newest "
        "mining run -> tables object_score, alignment_score. With --input FILE: one JSON line per "
        'case of FILE in --out: {"oid", "anomaly", "is_anomaly", "explanation"} from the context '
        "detector fitted on FILE itself, plus the alignment fields score, raw, pattern when "
        "--patterns is given.")
    s.add_argument("--input", metavar="FILE",
                   help='cases: JSON lines {"oid": ..., "sequence": [...], "attributes": '
                        '[{key: value}, ...], "times": [...]} (.jsonl, .jsonl.gz; attributes and '
                        "times optional, one per step) or an XES log (.xes, .xes.gz; activity = "
                        "concept:name, time = time:timestamp, other event attributes kept). "
                        "Default: the stored event log, scored against the latest mining run")
    s.add_argument("--patterns", metavar="PATTERNS.jsonl",
                   help="with --input: also the alignment score against these patterns "
                        "(soads mine --out)")
    s.add_argument("--out", metavar="SCORES.jsonl",
                   help="with --input (required): one JSON line per case, in input order")
    s.add_argument("--match", type=float)
    s.add_argument("--mismatch", type=float)
    s.add_argument("--gap-open", type=float)
    s.add_argument("--gap-extend", type=float)
    s.add_argument("--maximal-only", action="store_true")
    s.add_argument("--model-run", metavar="RUN_ID|newest",
                   help="the context detector's model run to score against (soads fit-detector "
                        "makes one). Default: the newest; with --input: fitted on the file")
    _add_conf(s)
    s.set_defaults(func=cmd_score)

    s = sub.add_parser("fit-detector",
                       help="fit the context detector on the stored event log -> a model run",
                       description="Fit the context detector (counts of read points given the "
                       "preceding ones, and of event attributes given the read point) on the "
                       "stored event log's sequences and store it as a model run (tables "
                       "detector_run, detector_count), which `soads score` and the event job "
                       "score against. `soads mine` fits one as well.")
    _add_conf(s)
    s.set_defaults(func=cmd_fit_detector)

    s = sub.add_parser("demo", help="simulate, ingest, mine, score and evaluate, then a live "
                                     "part through the event job and the alert process "
                                     "(embedded default)")
    s.add_argument("--objects", type=_positive_int, help="default: [simulator] objects in conf")
    s.add_argument("--live", type=int, default=2000, metavar="N",
                   help="then N more objects through the event job (file stream) and the "
                        "alert process (default 2000; 0: batch only)")
    _add_conf(s)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("quarantine", help="newest quarantined records, with reason and source")
    s.add_argument("--limit", type=_positive_int, default=20, metavar="N",
                   help="newest records to show (default 20)")
    s.add_argument("--sensor", action="store_true",
                   help="the sensor job's quarantined readings instead ([storage] db_url)")
    s.add_argument("--topic", action="store_true",
                   help="the event job's quarantine topic instead ([stream] quarantine_topic)")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_conf(s)
    s.set_defaults(func=cmd_quarantine)

    s = sub.add_parser("alerts", help="alerts and actions over the live scores (Alertmanager "
                                      "semantics): run the process, list, ack, silence")
    asub = s.add_subparsers(dest="alerts_command", required=True, metavar="ALERTS_COMMAND")
    a = asub.add_parser("run", help="the long-running alert process (conf/alerts.toml, "
                                    "conf/actions.toml)")
    a.add_argument("--steps", type=_positive_int, default=None, metavar="N",
                   help="stop after N evaluations (default: run until interrupted)")
    a.add_argument("--kafka", choices=("on", "off"), default=None,
                   help="alerts and actions topics (default: on when [stream] source = kafka)")
    a.set_defaults(func=cmd_alerts_run)
    a = asub.add_parser("list", help="alerts, newest change first")
    a.add_argument("--state", choices=("firing", "pending", "resolved", "inactive", "all"),
                   default="firing", help="default firing")
    a.add_argument("--limit", type=_positive_int, default=50, metavar="N")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a.set_defaults(func=cmd_alerts_list)
    a = asub.add_parser("ack", help="acknowledge an alert (or, with --action, an action)")
    a.add_argument("id", metavar="ID", help="alert id (soads alerts list) or action id")
    a.add_argument("--action", action="store_true", help="ID is an action's")
    a.add_argument("--by", metavar="NAME", help="who acknowledges (default $USER)")
    a.set_defaults(func=cmd_alerts_ack)
    a = asub.add_parser("silence", help="mute the alerts matching every matcher for a while")
    a.add_argument("matchers", nargs="+", metavar="MATCHER",
                   help="label matchers: name=value, name!=value, name=~regex, name!~regex")
    a.add_argument("--for", dest="duration", type=_duration, default=3600.0, metavar="DURATION",
                   help="how long: 90s, 30m, 2h, 1d (default 1h)")
    a.add_argument("--by", metavar="NAME", help="who silences (default $USER)")
    a.add_argument("--comment", metavar="TEXT", help="why")
    a.set_defaults(func=cmd_alerts_silence)
    a = asub.add_parser("unsilence", help="end a silence now")
    a.add_argument("id", metavar="SILENCE_ID")
    a.set_defaults(func=cmd_alerts_unsilence)
    a = asub.add_parser("silences", help="silences, newest first")
    a.set_defaults(func=cmd_alerts_silences)
    a = asub.add_parser("actions", help="the actions alerts started, oldest first")
    a.add_argument("--status", choices=("pending", "delivered", "failed", "acked"), default=None)
    a.add_argument("--limit", type=_positive_int, default=50, metavar="N", help="newest N")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a.set_defaults(func=cmd_alerts_actions)
    for a in asub.choices.values():
        _add_conf(a)

    s = sub.add_parser("jobs", help="which jobs (jobs/*.py) are running, from their pid files")
    s.add_argument("--dir", metavar="DIR",
                   help="pid file directory (default $SOADS_CACHE/jobs, ~/.cache/soads/jobs)")
    s.set_defaults(func=cmd_jobs)

    s = sub.add_parser("sensor", help="sensor anomaly model (LSTM-AE)")
    ssub = s.add_subparsers(dest="sensor_command", required=True, metavar="SENSOR_COMMAND")
    e = ssub.add_parser("evaluate", help="SKAB protocol evaluation beside the published numbers")
    e.add_argument("--data", required=True, metavar="DIR",
                   help="SKAB-layout folders of CSV files (github.com/waico/SKAB: its data/ folder)")
    e.add_argument("--sensor-conf", default="conf/sensor.toml", metavar="TOML")
    e.add_argument("--preset", help="preset in the sensor conf (default: its [sensor] preset)")
    e.add_argument("--json", action="store_true", help="last line: one JSON object")
    e.add_argument("--select", action="store_true",
                   help="instead: the label-free choice of pretrain / drift scaling (false "
                        "alarms when the protocol is replayed on the anomaly-free file)")
    e.set_defaults(func=cmd_sensor_evaluate)

    def _reg(p):
        p.add_argument("--sensor-conf", default="conf/sensor.toml", metavar="TOML")
        p.add_argument("--registry", metavar="DIR", help="default: [sensor.stream] registry")

    e = ssub.add_parser("train", help="train an LSTM-AE on sensor history -> new registry version")
    e.add_argument("--data", required=True, metavar="FILE_OR_DIR",
                   help="CSV/Parquet readings (machine_id, ts, sensors) or SKAB CSV files")
    _reg(e)
    e.add_argument("--preset", help="preset in the sensor conf (default: its [sensor] preset)")
    e.add_argument("--epochs", type=_positive_int)
    e.add_argument("--promote", action="store_true", help="make the new version current")
    e.add_argument("--every", type=float, metavar="SECONDS",
                   help="loop: retrain every SECONDS (and on drift when --db is given)")
    e.add_argument("--db", metavar="URL", help="with --every: record drift from this database")
    e.set_defaults(func=cmd_sensor_train)
    e = ssub.add_parser("models", help="registry versions (* = in use)")
    _reg(e)
    e.set_defaults(func=cmd_sensor_models)
    e = ssub.add_parser("promote", help="switch the version in use")
    e.add_argument("version")
    _reg(e)
    e.set_defaults(func=cmd_sensor_promote)
    e = ssub.add_parser("rollback", help="back to the version promoted before the current one")
    _reg(e)
    e.set_defaults(func=cmd_sensor_rollback)
    e = ssub.add_parser("publish", help="publish readings to the sensor job's Kafka topic",
                        description="Publish sensor readings as the sensor job reads them: one "
                        'JSON record per reading, {"machine_id": "m1", "ts": ISO-8601 UTC, '
                        '"values": {sensor: number}}, keyed by machine_id. Synthetic readings '
                        "(sine + noise per machine and sensor, the same for the same --seed) "
                        "or the rows of a CSV file.")
    e.add_argument("--kafka", metavar="TOPIC", help="default: [sensor.stream] topic")
    e.add_argument("--bootstrap", metavar="HOST:PORT",
                   help="default: [sensor.stream] kafka_bootstrap")
    e.add_argument("--machines", type=_positive_int, default=3)
    e.add_argument("--rate", type=float, metavar="READINGS_PER_S",
                   help="readings per second, all machines together (0: as fast as possible; "
                        "default: one per machine per --step, so event time keeps with the "
                        "wall clock; a CSV file: as fast as possible)")
    limit = e.add_mutually_exclusive_group()
    limit.add_argument("--seconds", type=float, help="stop after this many seconds")
    limit.add_argument("--count", type=_positive_int,
                       help="stop after this many readings (default: 60 per machine)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--step", type=float, default=1.0, metavar="SECONDS",
                   help="event time between two readings of a machine (default 1)")
    e.add_argument("--start", type=_start_time, default=None, metavar="WHEN",
                   help="ts of the first readings: 'now' (default) or ISO-8601")
    e.add_argument("--csv", metavar="FILE",
                   help="publish this file's rows: ts (or SKAB's datetime), machine_id "
                        "(default: the file's name), sensor columns")
    e.add_argument("--sensor-conf", default="conf/sensor.toml", metavar="TOML",
                   help="its [sensor.stream] gives the sensors, topic and broker")
    e.set_defaults(func=cmd_sensor_publish)
    e = ssub.add_parser("robot-arm", help="robot-arm simulation vs the paper's Table 4")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--sensor-conf", default="conf/sensor.toml", metavar="TOML")
    e.set_defaults(func=cmd_sensor_robot_arm)

    _add_bench(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="[%(name)s] %(message)s", stream=sys.stderr)
    for noisy in ("py4j", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kafka-python logs every connection at INFO; Spark its start-up: both with -v only
    logging.getLogger("kafka").setLevel(logging.INFO if args.verbose else logging.WARNING)
    _SPARK_EXTRA.clear()
    if args.verbose:
        _SPARK_EXTRA["spark.log.level"] = "INFO"
        _verbose_spark_launch()
    try:
        return args.func(args)
    except UsageError as e:
        _err(f"soads {args.command}: {e}")
        return 2
    except BrokenPipeError:
        return 0
    except _service_errors() as e:  # a broker, database or HBase that does not answer, a bad path
        first = str(e).splitlines()[0] if str(e) else repr(e)
        _err(f"soads {args.command}: {type(e).__name__}: {first}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
