"""Alert rules (DESIGN.md "Alert"): one pure function per rule kind, rows -> candidates.

Each takes plain rows (dicts keyed by the column names of :data:`soads.schema.TABLES`) or the
numbers the caller measured, and the rule's ``[alerts]`` table; it returns the
:class:`~soads.alerts.core.Candidate` s whose condition holds now, with the standard labels
(``alertname``, ``severity``, ``job``, and ``oid`` / ``read_point`` / ``line`` / ``machine_id``
where one) and a ``summary`` a person can read. Timing (``for``, resolve) is the engine's.

Tiers follow the pipeline paper (004: above one cut an automatic work order, above a lower one
an inspection, below it a log line): an object's verdict is ``warning`` from the detector's
threshold and ``critical`` from ``critical_above``; rates and sensor runs have a critical cut
too. :func:`evaluate_rules` runs every enabled rule whose input was given.
"""
from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from datetime import datetime
from typing import Iterable, Mapping

from soads import schema as S
from soads.alerts.core import Candidate, as_utc

logger = logging.getLogger(__name__)

JOB_EVENTS = "events"
"""``job`` label of the event job's alerts: its sink name in sink_batch."""
JOB_SENSORS = "sensor_anomaly"
"""``job`` label of the sensor job's alerts: its sink name in sink_batch."""


def short(read_point: str | None) -> str:
    """A read point as a person reads it: an SGLN URN's extension.

    >>> short("urn:epc:id:sgln:8801234.00001.CNV-L2-ASM"), short("Pack")
    ('CNV-L2-ASM', 'Pack')
    """
    if read_point and read_point.startswith("urn:epc:id:sgln:"):
        return read_point.rsplit(".", 1)[-1]
    return read_point or ""


def line_of(read_points: Iterable[str | None], pattern: str) -> str | None:
    """The line of the first read point ``pattern`` (group 1) finds one in, else None.

    >>> line_of(["urn:epc:id:sgln:8801234.00001.WND-07", "x.CNV-L2-ASM"], r"-L(\\d+)-")
    '2'
    """
    rx = re.compile(pattern)
    for rp in read_points:
        m = rx.search(rp) if rp else None
        if m:
            return m.group(1)
    return None


def _labels(alertname: str, severity: str, job: str, **more) -> dict:
    labels = {"alertname": alertname, "severity": severity, "job": job}
    labels.update({k: str(v) for k, v in more.items() if v not in (None, "")})
    return labels


def _explanation(value) -> tuple[dict | None, str | None]:
    """(dict, JSON text) of an object_score explanation (JSON text or already a dict)."""
    if value is None:
        return None, None
    if isinstance(value, dict):
        return value, json.dumps(value, ensure_ascii=False)
    try:
        d = json.loads(value)
    except ValueError:
        return None, str(value)  # carried as given; the summary then says only the score
    return (d if isinstance(d, dict) else None), value


def _explain(oid: str, anomaly: float, e: dict | None) -> str:
    if not e:
        return f"Object {oid} is anomalous (score {anomaly:.2f})"
    rp, ctx = short(e.get("read_point")), [short(c) for c in e.get("context") or []]
    # "<start>": the explanation's marker before an object's first read (soads.detect.context)
    after = "" if not ctx else " as the first read" if ctx[0] == "<start>" else f" after {ctx[0]}"
    p, exp = e.get("probability"), e.get("expected")
    notes = ([f"p={p:.2g}"] if isinstance(p, (int, float)) else []) + \
        ([f"expected {short(exp) if isinstance(exp, str) else exp}"] if exp else [])
    tail = f" ({', '.join(notes)})" if notes else ""
    if e.get("kind") == "attribute":
        return f"Object {oid}: {e.get('attribute')}={e.get('value')} at {rp} is unlikely{tail}"
    if e.get("kind") == "end":
        return f"Object {oid}: its path ended{after}, where objects do not end{tail}"
    return f"Object {oid}: a read at {rp}{after} is unlikely{tail}"


def object_anomaly(rows: Iterable[Mapping], rule, line_pattern: str) -> list[Candidate]:
    """An alert per object whose verdict is anomalous (object_score rows with ``is_anomaly``).

    Labels: oid, read_point (the explanation's worst step), line (of that read point or of the
    nearest read point before it ``line_pattern`` finds one in), severity ``critical`` from
    ``rule.critical_above`` else ``rule.severity``. Annotations: summary, description,
    explanation (its JSON text). Feed it each micro-batch's new rows: the alert keeps firing
    ``keep_firing_for_seconds`` after its object was last seen.
    """
    out = []
    for r in rows:
        if not r.get(S.IS_ANOMALY):  # False, or None: no model run scored it
            continue
        oid, anomaly = r[S.OID], float(r[S.ANOMALY] or 0.0)
        e, text = _explanation(r.get(S.EXPLANATION))
        rp = e.get("read_point") if e else None
        line = line_of([rp, *((e or {}).get("context") or [])], line_pattern)
        severity = "critical" if anomaly >= rule.critical_above else rule.severity
        annotations = {
            "summary": _explain(oid, anomaly, e),
            "description": f"Context detector score {anomaly:.2f} ({severity} from "
                           f"{rule.critical_above:.2f} up); model run {r.get(S.MODEL_RUN_ID)}.",
        }
        if text is not None:
            annotations["explanation"] = text
        out.append(Candidate("object_anomaly", _labels("ObjectAnomaly", severity, JOB_EVENTS,
                                                       oid=oid, read_point=rp, line=line),
                             annotations, anomaly, as_utc(r.get(S.LAST_TIME))))
    return out


def _split_windows(windows: dict, recent: int, baseline: int):
    """(recent windows, baseline windows before them), each a list of the values, by start."""
    order = sorted(windows)
    return ([windows[w] for w in order[-recent:]],
            [windows[w] for w in order[-recent - baseline:-recent]])


def anomaly_rate(rows: Iterable[Mapping], rule, line_pattern: str,
                 by: str = S.READ_POINT) -> list[Candidate]:
    """An alert per read point (``by="read_point"``) or per line (``by="line"``) whose anomaly
    rate (flagged / objects, anomaly_rate rows) in its newest ``recent_windows`` windows is at
    least ``factor`` x, and ``min_increase`` above, the rate of the ``baseline_windows`` before
    them; critical from ``critical_factor`` x. Both parts need ``min_objects`` objects, so a
    quiet read point does not fire.

    Give it one writer's rows (an object both jobs saw is in both). A line's rate sums its read
    points' rows (an object counts at each read point it passed): diluted alike in both parts,
    so the ratio still compares like with like.
    """
    rule_name = "read_point_rate" if by == S.READ_POINT else "line_rate"
    sums: dict = defaultdict(lambda: defaultdict(lambda: [0, 0, None]))
    for r in rows:
        rp = r[S.READ_POINT]
        key = rp if by == S.READ_POINT else line_of([rp], line_pattern)
        if key is None:
            continue
        w = sums[key][r[S.WINDOW_START]]
        w[0] += int(r[S.N_OBJECTS] or 0)
        w[1] += int(r[S.FLAGGED] or 0)
        w[2] = r[S.WINDOW_END]
    out = []
    for key, windows in sorted(sums.items()):
        recent, base = _split_windows(windows, rule.recent_windows, rule.baseline_windows)
        n, flagged = sum(w[0] for w in recent), sum(w[1] for w in recent)
        bn, bflagged = sum(w[0] for w in base), sum(w[1] for w in base)
        if n < rule.min_objects or bn < rule.min_objects:
            continue
        rate, brate = flagged / n, bflagged / bn
        if rate < brate * rule.factor or rate - brate < rule.min_increase:
            continue
        severity = "critical" if rate >= brate * rule.critical_factor else rule.severity
        where = (f"read point {short(key)}" if by == S.READ_POINT else f"line {key}")
        ratio = f"{rate / brate:.1f}x" if brate else "up from 0"
        labels = (_labels("ReadPointAnomalyRate", severity, JOB_EVENTS, read_point=key,
                          line=line_of([key], line_pattern)) if by == S.READ_POINT else
                  _labels("LineAnomalyRate", severity, JOB_EVENTS, line=key))
        out.append(Candidate(rule_name, labels, {
            "summary": f"Anomaly rate at {where} is {rate:.1%} of {n} objects, {ratio} its "
                       f"baseline {brate:.1%}",
            "description": f"{flagged} of {n} objects flagged in the newest "
                           f"{rule.recent_windows} window(s); {bflagged} of {bn} in the "
                           f"{len(base)} before."}, rate, as_utc(recent[-1][2])))
    return out


def alignment_drop(rows: Iterable[Mapping], rule) -> list[Candidate]:
    """An alert when the alignment score's window mean (alignment_score rows of the newest
    mining run) over the newest ``recent_windows`` windows is ``drop`` or more below that of the
    ``baseline_windows`` before them (means weighted by objects; ``min_objects`` in each part).
    """
    rows = list(rows)
    if not rows:
        return []
    run = max(rows, key=lambda r: r[S.WINDOW_START])[S.RUN_ID]
    windows = {r[S.WINDOW_START]: r for r in rows if r[S.RUN_ID] == run}
    recent, base = _split_windows(windows, rule.recent_windows, rule.baseline_windows)

    def mean(ws):
        n = sum(int(w[S.N_OBJECTS] or 0) for w in ws)
        return n, (sum(float(w[S.MEAN_SCORE]) * int(w[S.N_OBJECTS] or 0) for w in ws) / n
                   if n else 0.0)

    (n, m), (bn, bm) = mean(recent), mean(base)
    if n < rule.min_objects or bn < rule.min_objects or bm - m < rule.drop:
        return []
    return [Candidate("alignment_drop", _labels("AlignmentScoreDrop", rule.severity, JOB_EVENTS), {
        "summary": f"Alignment score fell to {m:.3f} from {bm:.3f} ({n} objects)",
        "description": f"Mean alignment score of the newest {rule.recent_windows} window(s) "
                       f"vs the {len(base)} before, mining run {run}."},
        m, as_utc(recent[-1][S.WINDOW_END]))]


def sensor_anomaly(rows: Iterable[Mapping], rule) -> list[Candidate]:
    """An alert per machine whose newest ``consecutive`` windows (sensor_anomaly rows) are all
    anomalous; critical from ``critical_consecutive``. Give it at least each machine's newest
    ``critical_consecutive`` windows."""
    by_machine = defaultdict(list)
    for r in rows:
        by_machine[r[S.MACHINE_ID]].append(r)
    out = []
    for machine, ws in sorted(by_machine.items()):
        ws.sort(key=lambda r: r[S.WINDOW_END])
        run = 0
        for r in reversed(ws):
            if not r[S.IS_ANOMALY]:
                break
            run += 1
        if run < max(rule.consecutive, 1):
            continue
        last = ws[-1]
        severity = "critical" if run >= rule.critical_consecutive else rule.severity
        out.append(Candidate("sensor_anomaly",
                             _labels("SensorAnomaly", severity, JOB_SENSORS, machine_id=machine), {
            "summary": f"Machine {machine}: {run} anomalous windows in a row (last score "
                       f"{float(last[S.SCORE]):.3g}, threshold {float(last[S.THRESHOLD]):.3g})",
            "description": f"LSTM-AE model {last.get(S.MODEL_VERSION)}; critical from "
                           f"{rule.critical_consecutive} windows in a row."},
            float(last[S.SCORE]), as_utc(last[S.WINDOW_END])))
    return out


def sensor_drift(rows: Iterable[Mapping], rule) -> list[Candidate]:
    """An alert per sensor model whose newest drift row (sensor_drift) says ``drifted``."""
    newest = {}
    for r in rows:
        mv = r[S.MODEL_VERSION]
        if mv not in newest or r[S.WINDOW_START] > newest[mv][S.WINDOW_START]:
            newest[mv] = r
    return [Candidate("sensor_drift",
                      _labels("SensorDrift", rule.severity, JOB_SENSORS, model_version=mv), {
        "summary": f"Sensor model {mv}: its score distribution drifted (JSD {float(r[S.JSD]):.3f}"
                   f" over {r[S.N_WINDOWS]} windows)",
        "description": "Jensen-Shannon divergence of the window's score histogram vs training "
                       "above the drift bound: retrain or recalibrate."},
        float(r[S.JSD]), as_utc(r[S.WINDOW_END]))
        for mv, r in sorted(newest.items()) if r[S.DRIFTED]]


def stream_stalled(rows: Iterable[Mapping] | Mapping, now: datetime, rule,
                   backlog: Mapping[str, int] | None = None) -> list[Candidate]:
    """An alert per sink of ``rule.sinks`` (empty: each sink in the rows) whose newest
    micro-batch (sink_batch ``created_at``) is more than ``stalled_seconds`` old. With
    ``backlog`` (records waiting per sink's job) a sink with nothing waiting is idle, not
    stalled. A sink with no row at all never ran: nothing to say. ``rows`` may also be
    :func:`soads.query.newest_batches`' ``{sink: {"batch_id", "created_at"}}``."""
    now = as_utc(now)
    if isinstance(rows, Mapping):
        rows = [{S.SINK: sink, **row} for sink, row in rows.items()]
    newest: dict[str, datetime] = {}
    for r in rows:
        t = as_utc(r[S.CREATED_AT])
        if r[S.SINK] not in newest or t > newest[r[S.SINK]]:
            newest[r[S.SINK]] = t
    out = []
    for sink in (rule.sinks or sorted(newest)):
        if sink not in newest or (backlog is not None and backlog.get(sink, 1) <= 0):
            continue
        age = (now - newest[sink]).total_seconds()
        if age > rule.stalled_seconds:
            out.append(Candidate("stream_stalled", _labels("StreamStalled", rule.severity, sink), {
                "summary": f"Job {sink} has committed no micro-batch for {age:.0f} s",
                "description": f"Newest batch committed at {newest[sink].isoformat()}; the alert "
                               f"fires after {rule.stalled_seconds:.0f} s."},
                age, newest[sink]))
    return out


def consumer_lag(lags: Mapping[str, int], rule) -> list[Candidate]:
    """An alert per job whose Kafka consumer lag (records behind) is above ``max_lag``."""
    return [Candidate("consumer_lag", _labels("ConsumerLagHigh", rule.severity, job), {
        "summary": f"Job {job} is {lag} records behind its Kafka topic",
        "description": f"Consumer lag above {rule.max_lag} records."}, float(lag))
        for job, lag in sorted(lags.items()) if lag > rule.max_lag]


def quarantine_rate(counts: Mapping[str, tuple[int, int]], rule) -> list[Candidate]:
    """An alert per job whose quarantined / read records (``counts``: job -> (quarantined,
    read) over the caller's window) is above ``max_rate`` over at least ``min_records``."""
    out = []
    for job, (bad, total) in sorted(counts.items()):
        if total >= max(rule.min_records, 1) and bad / total > rule.max_rate:
            out.append(Candidate("quarantine_rate",
                                 _labels("QuarantineRateHigh", rule.severity, job), {
                "summary": f"Job {job} quarantined {bad / total:.1%} of {total} records",
                "description": f"Quarantine rate above {rule.max_rate:.1%}."}, bad / total))
    return out


def evaluate_rules(conf, now: datetime, *, object_scores=None, anomaly_rates=None,
                   alignment_scores=None, sensor_anomalies=None, sensor_drifts=None,
                   sink_batches=None, backlog=None, lags=None,
                   quarantine=None) -> tuple[list[Candidate], list[str]]:
    """Every enabled rule of ``conf`` (``[alerts]``) whose input is given (None: not evaluated
    this time, its alerts stay as they are): ``(candidates, evaluated rule names)`` for
    :meth:`soads.alerts.core.Engine.evaluate`."""
    calls = {
        "object_anomaly": (object_scores, lambda r, c: object_anomaly(r, c, conf.line_pattern)),
        "read_point_rate": (anomaly_rates, lambda r, c: anomaly_rate(r, c, conf.line_pattern)),
        "line_rate": (anomaly_rates, lambda r, c: anomaly_rate(r, c, conf.line_pattern, "line")),
        "alignment_drop": (alignment_scores, alignment_drop),
        "sensor_anomaly": (sensor_anomalies, sensor_anomaly),
        "sensor_drift": (sensor_drifts, sensor_drift),
        "stream_stalled": (sink_batches, lambda r, c: stream_stalled(r, now, c, backlog)),
        "consumer_lag": (lags, consumer_lag),
        "quarantine_rate": (quarantine, quarantine_rate),
    }
    candidates, evaluated = [], []
    for name, (given, fn) in calls.items():
        if given is not None and not isinstance(given, Mapping):
            given = list(given)  # anomaly_rates feeds two rules
        rule = conf.rule(name)
        if given is None or not rule.enabled:
            continue
        candidates += fn(given, rule)
        evaluated.append(name)
    return candidates, evaluated
