"""Battery factory simulator: seeded EPCIS 2.0 documents plus ground truth (DESIGN.md).

Objects (battery cells) enter the plant of :mod:`soads.simulator.plant` in trays of 1-4 cells,
one tray every 7.5 s, lines taking turns. When a cell enters, its whole path is drawn (routing,
rework, then at most one labelled process or attribute anomaly and at most one kind of reader
noise) and timed (minutes between reads; paper §4.2 sets process time equal to travel time). A
heap of the cells now in the plant yields their reads in global event-time order, so memory
holds only the cells in the plant (about 1,500) and one document, whatever ``n_objects`` is.

RFID middleware reports all tags one reader saw in one read cycle as one ObjectEvent: reads of
the same read point (and the same event fields) in the same cycle of ``reader_cycle_seconds``
share one event, whose eventTime is the cycle's first read. Times carry the plant's +09:00 offset.

Process anomalies (label 1), spread evenly over :data:`ANOMALY_TYPES`:

- ``skipped_stage``: one stage (its facility read and the transfer out of it) is missing;
- ``swapped_stages``: the facilities of two consecutive stages are visited in reverse order;
- ``illegal_rework``: a formation stage sends the cell back to a stage the process never reworks
  to (e.g. defect inspection -> winding), after which it flows on normally;
- ``unknown_read_point``: one read at a read point id that does not exist in the plant.

Attribute anomalies (label 1), spread evenly over :data:`ATTRIBUTE_ANOMALY_TYPES`: the path is
normal, but one read reports an event field that never occurs at its read point (every read point
always reports the same fields, :mod:`soads.simulator.plant`). The wrong value is always one the
plant uses elsewhere, so only the read point tells it apart:

- ``wrong_biz_step``: one read with a bizStep of another kind of read point (e.g. a conveyor
  read that says ``inspecting``);
- ``wrong_disposition``: one read with a disposition that read point never reports (e.g.
  ``non_conformant`` on a conveyor, ``in_progress`` at an IR test, ``available`` mid-process);
- ``wrong_biz_location``: one conveyor read of the cell's line with another line's bizLocation
  (the right station, the wrong line);
- ``wrong_action``: one read mid-process (not the first or last) with action ``DELETE`` or
  ``ADD`` instead of ``OBSERVE``.

They come from their own random stream (``attribute_anomaly_rate``, 0 unless given; drawn for the
cells without a process anomaly: at most one labelled anomaly per cell), so adding them leaves
every other cell's path, times, process anomaly and noise exactly as before (and the changed
cells' paths too, but where a missed read would have hit the changed read).

Reader noise (label unchanged), spread evenly over :data:`NOISE_TYPES`:

- ``repeated_read``: the same read point reads the cell again 3-30 s later (plus one read
  cycle), inside the Sequence Extractor's 60 s dwell window, so de-duplication removes it;
- ``missed_read``: one conveyor read is missing (never the read that carries an attribute
  anomaly).

``truth.csv`` says which cells have reader noise (column ``noise``), so a detector's
false-positive rate on noise-only cells can be measured.
"""
from __future__ import annotations

import hashlib
import heapq
import logging
import numbers
import os
import random
import re
import time
from bisect import bisect_right
from collections import Counter
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Iterator, NamedTuple

from soads.schema import (
    ACTION, ANOMALY_TYPE, BIZ_LOCATION, BIZ_STEP, DISPOSITION, LABEL, NOISE, OID,
)
from soads.simulator.plant import (
    AVAILABLE, BIZ_STEPS, CBV_BIZSTEP, CONFORMANT, CONVEYOR, DISPOSITIONS, EXIT, FACILITY,
    IN_PROGRESS, IN_TRANSIT, NON_CONFORMANT, REPEAT, REWORK, STAGE_INDEX, STAGES, STOCKER,
    STOCKER_PROBABILITY, UNKNOWN, Plant, ReadPoint, area_location, build_plant,
    illegal_rework_targets, line_location, normal_dispositions, rework_targets, sgtin,
    unknown_read_points,
)

logger = logging.getLogger(__name__)

ANOMALY_TYPES = ("skipped_stage", "swapped_stages", "illegal_rework", "unknown_read_point")
"""Process anomalies (the path breaks the process model), drawn with ``anomaly_rate``."""
ATTRIBUTE_ANOMALY_TYPES = ("wrong_biz_step", "wrong_disposition", "wrong_biz_location",
                           "wrong_action")
"""Attribute anomalies (a normal path, one event field wrong), drawn with
``attribute_anomaly_rate``."""
ALL_ANOMALY_TYPES = ANOMALY_TYPES + ATTRIBUTE_ANOMALY_TYPES
NOISE_TYPES = ("repeated_read", "missed_read")
FORMATS = {"xml": ".xml", "jsonld": ".jsonld"}
EPCIS_XML_NS = "urn:epcglobal:epcis:xsd:2"
EPCIS_JSONLD_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
TRUTH_FILE = "truth.csv"
TRUTH_COLUMNS = (OID, LABEL, ANOMALY_TYPE, NOISE)
"""Header of ``truth.csv``; readers of the first three columns (before ``noise`` was added)
read it as before."""
DOCUMENT_PREFIX = "events-"
_DOCUMENT_RE = re.compile(r"^events-\d{5,}\.(xml|jsonld)$")

START_DATE = date(2024, 3, 4)
"""Local date of time 0; the plant starts at 08:00 local time (+09:00)."""
START_MS = 8 * 3600 * 1000
TZ_OFFSET = "+09:00"

TRAY_INTERVAL_MS = 7_500
"""One tray of 1-4 cells enters the plant every 7.5 s (about 20 cells a minute)."""
MAX_TRAY = 4
MAX_REWORKS = 3
"""After three reworks a cell passes (keeps paths bounded; 0.05**3 makes it rare)."""
TRAVEL_MS = {
    # time from a read of this kind to the cell's next read: (low, high), uniform
    FACILITY: (120_000, 480_000),
    CONVEYOR: (60_000, 240_000),
    STOCKER: (120_000, 900_000),
    REWORK: (180_000, 600_000),
    UNKNOWN: (60_000, 240_000),
    EXIT: (0, 0),
}
REPEAT_MS = (3_000, 30_000)
"""Delay of a repeated read (plus one read cycle): well inside the 60 s dwell window and below the
shortest travel time (60 s), so it never overtakes the cell's next read."""
MAX_READER_CYCLE_SECONDS = 10.0
PROGRESS_EVERY = 10_000


class SimObject(NamedTuple):
    """One simulated cell: the ground truth.

    ``reads`` are ``(time_ms, ReadPoint, disposition URN)`` in time order, ``time_ms`` counted
    from 2024-03-04T08:00:00+09:00; the read's bizStep, bizLocation and action are its
    ReadPoint's (for an attribute anomaly a copy of the plant's read point with one field
    changed). ``anomaly_type`` and ``noise`` are '' when absent.
    """

    oid: str
    line: int
    label: int
    anomaly_type: str
    noise: str
    reads: tuple[tuple[int, ReadPoint, str], ...]


def _check(n_objects, anomaly_rate, noise_rate, reader_cycle_seconds, fmt="xml",
           events_per_file=1, attribute_anomaly_rate=0.0) -> None:
    if not isinstance(n_objects, numbers.Integral) or isinstance(n_objects, bool) or n_objects < 1:
        raise ValueError(f"n_objects must be an integer >= 1, got {n_objects!r}")
    for name, rate in (("anomaly_rate", anomaly_rate), ("noise_rate", noise_rate),
                       ("attribute_anomaly_rate", attribute_anomaly_rate)):
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {rate!r}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
    if not isinstance(events_per_file, int) or events_per_file < 1:
        raise ValueError(f"events_per_file must be an integer >= 1, got {events_per_file!r}")
    if not 0.0 < reader_cycle_seconds <= MAX_READER_CYCLE_SECONDS:
        raise ValueError(f"reader_cycle_seconds must be in (0, {MAX_READER_CYCLE_SECONDS}], "
                         f"got {reader_cycle_seconds!r}")


# -- paths ------------------------------------------------------------------------------------
# A step is (ReadPoint, disposition, stage index or -1, kind); kind is the read point's kind
# except REPEAT (a reader repeating itself).


def _route(rng: random.Random, plant: Plant, line: int, stage: int, fail: bool) -> list:
    """Steps from the facility of ``stage`` to the exit, following the normal flow; with ``fail``
    the tests fail 5% of cells, which go back along an allowed rework jump (paper §4.2)."""
    steps = []
    reworks = 0
    while True:
        facility = plant.choose_facility(rng, line, stage)
        spec = STAGES[stage]
        if spec.fail_rate:
            failed = fail and reworks < MAX_REWORKS and rng.random() < spec.fail_rate
            steps.append((facility, NON_CONFORMANT if failed else CONFORMANT, stage, FACILITY))
            if failed:
                # paper §4.2: back to room aging / high aging / ... with the stage's probabilities
                reworks += 1
                steps.append((plant.rework[stage], NON_CONFORMANT, -1, REWORK))
                targets, cum = _REWORK[stage]
                stage = targets[bisect_right(cum, rng.random() * cum[-1])]
                continue
        else:
            steps.append((facility, IN_PROGRESS, stage, FACILITY))
        stage += 1
        if stage == len(STAGES):
            steps.append((plant.exit, AVAILABLE, -1, EXIT))
            return steps
        steps.append((plant.conveyors[line][stage], IN_TRANSIT, -1, CONVEYOR))
        if STAGES[stage].stocker and rng.random() < STOCKER_PROBABILITY:
            steps.append((plant.stockers[stage], IN_PROGRESS, -1, STOCKER))


_REWORK = {k: rework_targets(k) for k, s in enumerate(STAGES) if s.fail_rate}


def _pick(rng: random.Random, items: list):
    return items[int(rng.random() * len(items))]


def _skipped_stage(rng, plant, line, steps, unknown):
    # a stage visited once (so never a rework target); drop its facility and the transfer out
    visits = Counter(s[2] for s in steps if s[3] == FACILITY)
    i = _pick(rng, [i for i, s in enumerate(steps) if s[3] == FACILITY and visits[s[2]] == 1])
    j = i + 1
    while steps[j][3] not in (FACILITY, EXIT):
        j += 1
    del steps[i:j]
    return steps


def _swapped_stages(rng, plant, line, steps, unknown):
    facilities = [i for i, s in enumerate(steps) if s[3] == FACILITY]
    pairs = [(i, j) for i, j in zip(facilities, facilities[1:])
             if steps[j][2] == steps[i][2] + 1 and steps[i + 1][3] != REWORK]
    i, j = _pick(rng, pairs)
    a, b = steps[i], steps[j]
    steps[i], steps[j] = (b[0], b[1], a[2], FACILITY), (a[0], a[1], b[2], FACILITY)
    return steps


def _illegal_rework(rng, plant, line, steps, unknown):
    # a passed formation stage sends the cell back where the process never reworks to
    candidates = [i for i, s in enumerate(steps)
                  if s[3] == FACILITY and s[2] >= STAGE_INDEX["RTA"] and steps[i + 1][3] != REWORK]
    i = _pick(rng, candidates)
    stage = steps[i][2]
    target = _pick(rng, list(illegal_rework_targets(stage)))
    back = [(plant.rework[stage], NON_CONFORMANT, -1, REWORK)] if plant.rework[stage] else []
    return steps[:i + 1] + back + _route(rng, plant, line, target, fail=False)


def _unknown_read_point(rng, plant, line, steps, unknown):
    rp = _pick(rng, unknown)
    i = 1 + int(rng.random() * (len(steps) - 1))
    steps.insert(i, (rp, IN_PROGRESS, -1, UNKNOWN))
    return steps


def _repeated_read(rng, steps):
    i = int(rng.random() * len(steps))
    rp, disposition, stage, _ = steps[i]
    steps.insert(i + 1, (rp, disposition, stage, REPEAT))
    return steps


def _missed_read(rng, steps, keep=-1):
    conveyors = [i for i, s in enumerate(steps) if s[3] == CONVEYOR]
    if conveyors:
        k = int(rng.random() * len(conveyors))
        if conveyors[k] == keep:
            # never the read at ``keep`` (an attribute anomaly's read: missing it would leave a
            # labelled cell with nothing wrong in its log); the next conveyor instead, so that
            # every other draw misses the read it missed before attribute anomalies existed
            k = (k + 1) % len(conveyors)
        del steps[conveyors[k]]
    return steps


# anomaly type -> step (rng, plant, line, steps, unknown read points) -> steps
_ANOMALIES = dict(zip(ANOMALY_TYPES,
                      (_skipped_stage, _swapped_stages, _illegal_rework, _unknown_read_point)))


# attribute anomalies: (rng, plant, line, steps) -> index of the one read changed (in place).
# The wrong value is always one the plant reports elsewhere, never at this read point.


def _wrong_biz_step(rng, plant, line, steps):
    i = int(rng.random() * len(steps))
    rp, disposition, stage, kind = steps[i]
    wrong = _pick(rng, [b for b in BIZ_STEPS if b != rp.biz_step])
    steps[i] = (replace(rp, biz_step=wrong), disposition, stage, kind)
    return i


def _wrong_disposition(rng, plant, line, steps):
    i = int(rng.random() * len(steps))
    rp, disposition, stage, kind = steps[i]
    normal = normal_dispositions(kind, stage)
    steps[i] = (rp, _pick(rng, [d for d in DISPOSITIONS if d not in normal]), stage, kind)
    return i


def _wrong_biz_location(rng, plant, line, steps):
    # a conveyor of the cell's line reporting another line's location
    i = _pick(rng, [k for k, s in enumerate(steps) if s[3] == CONVEYOR])
    rp, disposition, stage, kind = steps[i]
    other = _pick(rng, [x for x in range(plant.n_lines) if x != line])
    area = rp.urn.rsplit(".", 2)[1]
    steps[i] = (replace(rp, biz_location=line_location(area, other)), disposition, stage, kind)
    return i


def _wrong_action(rng, plant, line, steps):
    # mid-process: neither the entry read nor the exit read
    i = 1 + int(rng.random() * (len(steps) - 2))
    rp, disposition, stage, kind = steps[i]
    steps[i] = (replace(rp, action=_pick(rng, ["DELETE", "ADD"])), disposition, stage, kind)
    return i


_ATTRIBUTE_ANOMALIES = dict(zip(ATTRIBUTE_ANOMALY_TYPES, (
    _wrong_biz_step, _wrong_disposition, _wrong_biz_location, _wrong_action)))


def _unknown_points() -> list[ReadPoint]:
    points = []
    for urn in unknown_read_points():
        ext = urn.rsplit(".", 1)[1]
        code = ext.split("-")[0]
        area = urn.rsplit(".", 2)[1]
        biz = (CBV_BIZSTEP + STAGES[STAGE_INDEX[code]].biz_step if code in STAGE_INDEX
               else CBV_BIZSTEP + "transporting")
        points.append(ReadPoint(urn, UNKNOWN, biz, area_location(area)))
    return points


def iter_objects(n_objects: int = 20000, seed: int = 7, anomaly_rate: float = 0.04,
                 noise_rate: float = 0.05, reader_cycle_seconds: float = 1.0,
                 first_serial: int = 1, attribute_anomaly_rate: float = 0.0
                 ) -> Iterator[SimObject]:
    """Yield the simulated cells in the order they enter the plant (the ground truth).

    Parameters
    ----------
    n_objects : number of cells.
    seed : fixes the plant's routing weights and every cell's path.
    anomaly_rate : fraction of cells with one process anomaly (label 1).
    noise_rate : fraction of cells with reader noise (label unchanged).
    reader_cycle_seconds : reader cycle; repeated reads come at least one cycle later.
    first_serial : SGTIN serial of the first cell; the cells are numbered on from it (only the
        ids change: paths, times and labels are the same for any value).
    attribute_anomaly_rate : fraction of the cells without a process anomaly that get one
        attribute anomaly (label 1). Drawn from a random stream of its own: any value leaves
        the other cells exactly as they are. 0 by default in these functions, so code that
        simulated a log before attribute anomalies existed gets the same cells; ``soads
        simulate``, ``soads demo`` and ``[simulator]`` in conf/soads.toml use 0.04.

    Returns
    -------
    Iterator of :class:`SimObject`, one per cell, entry times non-decreasing.

    Examples
    --------
    >>> cell = next(iter_objects(1, seed=7))
    >>> cell.oid, cell.label, cell.reads[0][1].urn
    ('urn:epc:id:sgtin:8801234.012345.1', 0, 'urn:epc:id:sgln:8801234.00001.CNV-L1-WND')
    """
    _check(n_objects, anomaly_rate, noise_rate, reader_cycle_seconds,
           attribute_anomaly_rate=attribute_anomaly_rate)
    plant = build_plant(seed)
    rng = random.Random(f"soads-objects-{seed}")
    attr_rng = random.Random(f"soads-attributes-{seed}")
    unknown = _unknown_points()
    cycle_ms = int(round(reader_cycle_seconds * 1000))
    release, line, in_tray = 0, 0, 0
    t_entry = 0
    n_anomalies = n_noise = n_attribute = 0
    for serial in range(first_serial, first_serial + n_objects):
        if in_tray == 0:
            # a new tray on the next line, all its cells read together at the line's entry
            t_entry = release * TRAY_INTERVAL_MS
            line = release % plant.n_lines
            in_tray = 1 + int(rng.random() * MAX_TRAY)
            release += 1
        in_tray -= 1
        steps = [(plant.conveyors[line][0], IN_TRANSIT, -1, CONVEYOR)]
        steps += _route(rng, plant, line, 0, fail=True)
        anomaly = noise = ""
        if rng.random() < anomaly_rate:
            anomaly = ANOMALY_TYPES[n_anomalies % len(ANOMALY_TYPES)]
            n_anomalies += 1
            steps = _ANOMALIES[anomaly](rng, plant, line, steps, unknown)
        changed = -1
        if attr_rng.random() < attribute_anomaly_rate and not anomaly:
            anomaly = ATTRIBUTE_ANOMALY_TYPES[n_attribute % len(ATTRIBUTE_ANOMALY_TYPES)]
            n_attribute += 1
            changed = _ATTRIBUTE_ANOMALIES[anomaly](attr_rng, plant, line, steps)
        if rng.random() < noise_rate:
            noise = NOISE_TYPES[n_noise % len(NOISE_TYPES)]
            n_noise += 1
            steps = (_repeated_read(rng, steps) if noise == "repeated_read"
                     else _missed_read(rng, steps, changed))
        # timing: travel times drawn per read; a repeat sits a few seconds after its original
        reads = []
        t = last = t_entry
        for rp, disposition, _, kind in steps:
            if kind == REPEAT:
                lo, hi = REPEAT_MS
                reads.append((last + cycle_ms + lo + int(rng.random() * (hi - lo)), rp,
                              disposition))
                continue
            reads.append((t, rp, disposition))
            last = t
            lo, hi = TRAVEL_MS[kind]
            t += lo + int(rng.random() * (hi - lo))
        yield SimObject(sgtin(serial), line, int(bool(anomaly)), anomaly, noise, tuple(reads))


def _visits(obj: SimObject, dwell_ms: float | None) -> list:
    """The reads of ``obj`` that start a visit (the Sequence Extractor's de-duplication)."""
    out, prev_urn, prev_t = [], None, None
    for read in obj.reads:
        t, rp = read[0], read[1]
        if not (dwell_ms is not None and rp.urn == prev_urn and t - prev_t <= dwell_ms):
            out.append(read)
        prev_urn, prev_t = rp.urn, t
    return out


def iter_sequences(n_objects: int = 20000, seed: int = 7, anomaly_rate: float = 0.04,
                   noise_rate: float = 0.05, reader_cycle_seconds: float = 1.0,
                   dwell_seconds: float | None = 60.0, attribute_anomaly_rate: float = 0.0
                   ) -> Iterator[tuple[str, list[str]]]:
    """Yield ``(oid, [read_point, ...])`` per cell in entry order: what the Sequence Extractor
    makes of :func:`iter_documents` with the same arguments.

    ``dwell_seconds`` collapses consecutive reads of one read point within that many seconds
    into one visit (``None`` keeps the raw reads, repeats included). Attribute anomalies change
    event fields, not read points (but for the rare cell whose missed read would have hit the
    changed read: the next conveyor read is missed instead).

    Examples
    --------
    >>> oid, seq = next(iter_sequences(1, seed=7))
    >>> [rp.rsplit(".", 1)[1] for rp in seq][:4]
    ['CNV-L1-WND', 'WND-18', 'CNV-L1-ASM', 'ASM-03']
    """
    dwell_ms = None if dwell_seconds is None else dwell_seconds * 1000
    for obj in iter_objects(n_objects, seed, anomaly_rate, noise_rate, reader_cycle_seconds,
                            attribute_anomaly_rate=attribute_anomaly_rate):
        yield obj.oid, [read[1].urn for read in _visits(obj, dwell_ms)]


def read_attributes(read: tuple[int, ReadPoint, str]) -> dict[str, str]:
    """The event fields of one read as the batch sequences carry them per visit
    (:func:`soads.sequences.extract_sequences`): keys from :mod:`soads.schema`.

    Examples
    --------
    >>> obj = next(iter_objects(1, seed=7))
    >>> for key, value in read_attributes(obj.reads[0]).items():
    ...     print(key, value)
    biz_step urn:epcglobal:cbv:bizstep:transporting
    disposition urn:epcglobal:cbv:disp:in_transit
    biz_location urn:epc:id:sgln:8801234.00001.L1
    action OBSERVE
    """
    _, rp, disposition = read
    return {BIZ_STEP: rp.biz_step, DISPOSITION: disposition, BIZ_LOCATION: rp.biz_location,
            ACTION: rp.action}


def iter_cases(n_objects: int = 20000, seed: int = 7, anomaly_rate: float = 0.04,
               noise_rate: float = 0.05, reader_cycle_seconds: float = 1.0,
               dwell_seconds: float = 60.0, attribute_anomaly_rate: float = 0.0
               ) -> Iterator[tuple[SimObject, list[str], list[dict[str, str]]]]:
    """Yield ``(truth, sequence, attributes)`` per cell in entry order, without Spark: the
    visits the Sequence Extractor makes of :func:`iter_documents` with the same arguments, each
    with the event fields of its first read (:func:`read_attributes`), and the cell's
    :class:`SimObject` (oid, label, anomaly_type, noise).

    Examples
    --------
    >>> truth, seq, attrs = next(iter_cases(1, seed=7))
    >>> len(seq) == len(attrs), attrs[-1]["disposition"]
    (True, 'urn:epcglobal:cbv:disp:available')
    """
    dwell_ms = dwell_seconds * 1000
    for obj in iter_objects(n_objects, seed, anomaly_rate, noise_rate, reader_cycle_seconds,
                            attribute_anomaly_rate=attribute_anomaly_rate):
        visits = _visits(obj, dwell_ms)
        yield obj, [read[1].urn for read in visits], [read_attributes(read) for read in visits]


def truth_header() -> str:
    """The header line of ``truth.csv``.

    >>> truth_header()
    'oid,label,anomaly_type,noise\\n'
    """
    return ",".join(TRUTH_COLUMNS) + "\n"


def truth_row(obj: SimObject) -> str:
    """One cell's line of ``truth.csv``.

    >>> truth_row(SimObject("urn:x", 0, 0, "", "missed_read", ()))
    'urn:x,0,,missed_read\\n'
    """
    return f"{obj.oid},{obj.label},{obj.anomaly_type},{obj.noise}\n"


SERIAL_BLOCK = 10 ** 10
"""Serials per simulated run (:func:`run_first_serial`)."""


def run_first_serial(seed: int, start: datetime | None = None) -> int:
    """First SGTIN serial of a run, so that two runs with another seed or start never share
    object ids (a second log published into a running stream would otherwise continue the first
    one's sequences).

    The default run (seed 7 from the default start: ``make demo``'s log) keeps serials from 1;
    any other ``(seed, start)`` gets its own block of :data:`SERIAL_BLOCK` serials, numbered by
    a hash of both (one of 10**9 blocks). The same seed and start give the same ids, as they
    give the same log.

    >>> run_first_serial(7), run_first_serial(7, default_start())
    (1, 1)
    >>> len({run_first_serial(7), run_first_serial(8), run_first_serial(7, datetime(2030, 1, 1,
    ...      tzinfo=timezone.utc))})
    3
    """
    start = default_start() if start is None else start
    if seed == 7 and start == default_start():
        return 1
    digest = hashlib.blake2b(f"{seed}|{start.timestamp():.6f}".encode(), digest_size=8).digest()
    return (1 + int.from_bytes(digest, "big") % (10 ** 9 - 1)) * SERIAL_BLOCK + 1


# -- documents ---------------------------------------------------------------------------------


_PLANT_TZ = timezone(timedelta(hours=9))


def default_start() -> datetime:
    """The plant's default start: :data:`START_DATE` 08:00 +09:00."""
    return datetime.combine(START_DATE, datetime.min.time(), _PLANT_TZ) \
        + timedelta(milliseconds=START_MS)


class _Clock:
    """Formats ``time_ms`` as local ISO-8601 with the +09:00 offset (cached per day); time 0 is
    ``start`` (an aware datetime; default :data:`START_DATE` 08:00 local)."""

    def __init__(self, start: datetime | None = None):
        self._day, self._date = None, ""
        if start is None:
            start = default_start()
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        local = start.astimezone(_PLANT_TZ)
        self._date0 = local.date()
        self._ms0 = (local.hour * 3600 + local.minute * 60 + local.second) * 1000 \
            + local.microsecond // 1000

    def __call__(self, ms: int) -> str:
        day, rem = divmod(ms + self._ms0, 86_400_000)
        if day != self._day:
            self._day, self._date = day, (self._date0 + timedelta(days=day)).isoformat()
        s, milli = divmod(rem, 1000)
        h, s = divmod(s, 3600)
        m, s = divmod(s, 60)
        return f"{self._date}T{h:02d}:{m:02d}:{s:02d}.{milli:03d}{TZ_OFFSET}"


def _xml_event(when: str, epcs: list[str], rp: ReadPoint, disposition: str) -> str:
    epc_list = "".join(f"<epc>{e}</epc>" for e in epcs)
    return (f"<ObjectEvent><eventTime>{when}</eventTime><eventTimeZoneOffset>{TZ_OFFSET}"
            f"</eventTimeZoneOffset><epcList>{epc_list}</epcList><action>{rp.action}</action>"
            f"<bizStep>{rp.biz_step}</bizStep><disposition>{disposition}</disposition>"
            f"<readPoint><id>{rp.urn}</id></readPoint><bizLocation><id>{rp.biz_location}"
            f"</id></bizLocation></ObjectEvent>")


def _jsonld_event(when: str, epcs: list[str], rp: ReadPoint, disposition: str) -> str:
    epc_list = ",".join(f'"{e}"' for e in epcs)
    return (f'{{"type":"ObjectEvent","eventTime":"{when}","eventTimeZoneOffset":"{TZ_OFFSET}",'
            f'"epcList":[{epc_list}],"action":"{rp.action}","bizStep":"{rp.biz_step}",'
            f'"disposition":"{disposition}","readPoint":{{"id":"{rp.urn}"}},'
            f'"bizLocation":{{"id":"{rp.biz_location}"}}}}')


def _xml_document(created: str, events: list[str]) -> bytes:
    # one event per line, so a file:line source identity points at one event
    return "".join((
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<epcis:EPCISDocument xmlns:epcis="{EPCIS_XML_NS}" schemaVersion="2.0" '
        f'creationDate="{created}">\n<EPCISBody>\n<EventList>\n',
        "\n".join(events),
        "\n</EventList>\n</EPCISBody>\n</epcis:EPCISDocument>\n",
    )).encode("utf-8")


def _jsonld_document(created: str, events: list[str]) -> bytes:
    return "".join((
        f'{{"@context":"{EPCIS_JSONLD_CONTEXT}","type":"EPCISDocument","schemaVersion":"2.0",'
        f'"creationDate":"{created}","epcisBody":{{"eventList":[\n',
        ",\n".join(events),
        "\n]}}\n",
    )).encode("utf-8")


_WRITERS = {"xml": (_xml_event, _xml_document), "jsonld": (_jsonld_event, _jsonld_document)}


def document_name(index: int, fmt: str = "xml") -> str:
    """File name of document ``index``.

    Examples
    --------
    >>> document_name(3, "jsonld")
    'events-00003.jsonld'
    """
    return f"{DOCUMENT_PREFIX}{index:05d}{FORMATS[fmt]}"


def _global_reads(objects: Iterator[SimObject], on_object, progress, n_objects: int):
    """Yield ``(time_ms, oid, read)`` of all cells in global time order (ties: entry order).

    A heap holds the next read of each cell in the plant; a cell is admitted (its whole path
    already drawn) when it enters, and dropped after its last read.
    """
    nxt = next(objects, None)
    heap: list[tuple[int, int, int]] = []   # (time of the cell's next read, entry no, read no)
    active: dict[int, SimObject] = {}       # cells in the plant, by entry no
    entered = done = 0
    while True:
        # admit every cell that enters no later than the next read of a cell already inside
        while nxt is not None and (not heap or nxt.reads[0][0] <= heap[0][0]):
            if on_object is not None:
                on_object(nxt)
            active[entered] = nxt
            heapq.heappush(heap, (nxt.reads[0][0], entered, 0))
            entered += 1
            nxt = next(objects, None)
        if not heap:
            break
        t, key, k = heap[0]
        obj = active[key]
        if k + 1 < len(obj.reads):
            heapq.heapreplace(heap, (obj.reads[k + 1][0], key, k + 1))
        else:
            heapq.heappop(heap)
            del active[key]
            done += 1
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(done, n_objects)
        yield t, obj.oid, obj.reads[k]
    if progress is not None and done % PROGRESS_EVERY:
        progress(done, n_objects)


def _stream(n_objects, seed, anomaly_rate, noise_rate, fmt, events_per_file, progress,
            reader_cycle_seconds, on_object, start=None, first_serial=1,
            attribute_anomaly_rate=0.0) -> Iterator[tuple[str, bytes, int, int]]:
    """Yield ``(name, document bytes, number of EPCIS events in it, time_ms of its last event
    since the plant's start)`` in event-time order."""
    make_event, make_document = _WRITERS[fmt]
    clock = _Clock(start)
    cycle_ms = int(round(reader_cycle_seconds * 1000))
    objects = iter_objects(n_objects, seed, anomaly_rate, noise_rate, reader_cycle_seconds,
                           first_serial, attribute_anomaly_rate)
    # this read cycle: (read point, disposition, the reader's other fields) -> event; a read
    # with an attribute anomaly makes an event of its own
    pending: dict[tuple, list] = {}
    cycle = -1
    events: list[tuple[int, str]] = []     # (time_ms, event text) of the documents being filled
    index = 0

    def flush():
        # the read cycle is over: one ObjectEvent per (read point, disposition), in time order
        for first, rp, disposition, epcs in pending.values():
            events.append((first, make_event(clock(first), epcs, rp, disposition)))
        pending.clear()

    def document(chunk):
        return (document_name(index, fmt),
                make_document(clock(chunk[-1][0]), [e for _, e in chunk]), len(chunk),
                chunk[-1][0])

    for t, oid, (_, rp, disposition) in _global_reads(objects, on_object, progress, n_objects):
        if t // cycle_ms != cycle:
            flush()
            cycle = t // cycle_ms
            while len(events) >= events_per_file:
                chunk, events = events[:events_per_file], events[events_per_file:]
                yield document(chunk)
                index += 1
        key = (rp.urn, disposition, rp.biz_step, rp.biz_location, rp.action)
        event = pending.get(key)
        if event is None:
            pending[key] = [t, rp, disposition, [oid]]
        else:
            event[3].append(oid)
    flush()
    while events:
        chunk, events = events[:events_per_file], events[events_per_file:]
        yield document(chunk)
        index += 1


def iter_documents(n_objects: int = 20000, seed: int = 7, anomaly_rate: float = 0.04,
                   noise_rate: float = 0.05, fmt: str = "xml", events_per_file: int = 20000,
                   progress: Callable[[int, int], None] | None = None, *,
                   reader_cycle_seconds: float = 1.0,
                   on_object: Callable[[SimObject], None] | None = None,
                   start: datetime | None = None, first_serial: int = 1,
                   timed: bool = False, attribute_anomaly_rate: float = 0.0) -> Iterator[tuple]:
    """Yield ``(file name, EPCIS document bytes)`` in event-time order.

    Parameters
    ----------
    n_objects, seed, anomaly_rate, noise_rate, attribute_anomaly_rate : as in
        :func:`iter_objects`.
    fmt : ``"xml"`` (EPCIS 2.0 XML) or ``"jsonld"`` (EPCIS 2.0 JSON-LD).
    events_per_file : EPCIS events (ObjectEvents, each with 1 or more EPCs) per document.
    progress : called as ``progress(finished cells, n_objects)`` every 10,000 cells and at the end.
    reader_cycle_seconds : reads of one read point in one cycle form one ObjectEvent.
    on_object : called with each :class:`SimObject` when it enters the plant (ground truth).
    start : event time of the plant's start (aware datetime); default :data:`START_DATE`
        08:00 +09:00. A later start lets a second log follow the first in a running stream
        instead of arriving late.
    first_serial : as in :func:`iter_objects`.
    timed : also yield the event time of the document's last event, in ms since ``start``
        (a publisher that keeps event time with the wall clock waits for it).

    Returns
    -------
    Iterator of ``(name, bytes)`` (``(name, bytes, time_ms)`` when ``timed``); names
    ``events-00000.xml``, ``events-00001.xml``, ... Event times never decrease, within a
    document or across documents.
    """
    _check(n_objects, anomaly_rate, noise_rate, reader_cycle_seconds, fmt, events_per_file,
           attribute_anomaly_rate)
    for name, data, _, time_ms in _stream(n_objects, seed, anomaly_rate, noise_rate, fmt,
                                          events_per_file, progress, reader_cycle_seconds,
                                          on_object, start, first_serial,
                                          attribute_anomaly_rate):
        yield (name, data, time_ms) if timed else (name, data)


def simulate(out_dir: str, n_objects: int = 20000, seed: int = 7, anomaly_rate: float = 0.04,
             noise_rate: float = 0.05, fmt: str = "xml", events_per_file: int = 20000,
             progress: Callable[[int, int], None] | None = None, *,
             reader_cycle_seconds: float = 1.0, overwrite: bool = True,
             start: datetime | None = None, first_serial: int = 1,
             attribute_anomaly_rate: float = 0.0) -> dict:
    """Write EPCIS documents and ``truth.csv`` for ``n_objects`` cells into ``out_dir``.

    ``truth.csv`` has the header ``oid,label,anomaly_type,noise`` and one row per cell in entry
    order (label 1 for a process or attribute anomaly; anomaly_type empty for label 0; noise the
    reader noise type or empty, whatever the label). Documents are written as they
    fill, so memory stays bounded. Earlier simulator output in ``out_dir`` (``events-*`` documents
    and ``truth.csv``, nothing else) is deleted first with ``overwrite`` (the default), so runs
    never mix; with ``overwrite=False`` it is an error.

    Returns
    -------
    dict with ``objects``, ``events`` (flat EPC reads), ``epcis_events`` (ObjectEvents),
    ``documents``, ``anomalies`` ({type: count}; the attribute types only with a non-zero
    ``attribute_anomaly_rate``), ``noise``
    ({type: count}), ``seconds``, ``out_dir``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as out:
    ...     stats = simulate(out, n_objects=100, seed=7)
    >>> stats["objects"], stats["documents"]
    (100, 1)
    """
    _check(n_objects, anomaly_rate, noise_rate, reader_cycle_seconds, fmt, events_per_file,
           attribute_anomaly_rate)
    started = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    old = [f for f in os.listdir(out_dir) if _DOCUMENT_RE.match(f) or f == TRUTH_FILE]
    if old and not overwrite:
        raise ValueError(f"{out_dir} already holds simulator output ({len(old)} files, e.g. "
                         f"{sorted(old)[0]}); pass overwrite=True or choose an empty directory")
    if old:
        logger.info("removing %d files of an earlier simulation from %s", len(old), out_dir)
    for f in old:
        os.remove(os.path.join(out_dir, f))
    stats = {"objects": 0, "events": 0, "epcis_events": 0, "documents": 0,
             "anomalies": dict.fromkeys(ALL_ANOMALY_TYPES if attribute_anomaly_rate
                                        else ANOMALY_TYPES, 0),
             "noise": dict.fromkeys(NOISE_TYPES, 0)}
    with open(os.path.join(out_dir, TRUTH_FILE), "w", encoding="utf-8", newline="") as truth:
        truth.write(truth_header())

        def on_object(obj: SimObject) -> None:
            truth.write(truth_row(obj))
            stats["objects"] += 1
            stats["events"] += len(obj.reads)
            if obj.anomaly_type:
                stats["anomalies"][obj.anomaly_type] += 1
            if obj.noise:
                stats["noise"][obj.noise] += 1

        for name, data, n_events, _ in _stream(n_objects, seed, anomaly_rate, noise_rate, fmt,
                                               events_per_file, progress, reader_cycle_seconds,
                                               on_object, start, first_serial,
                                               attribute_anomaly_rate):
            with open(os.path.join(out_dir, name), "wb") as f:
                f.write(data)
            stats["documents"] += 1
            stats["epcis_events"] += n_events
    stats["seconds"] = round(time.perf_counter() - started, 3)
    stats["out_dir"] = out_dir
    logger.info("simulated %d objects: %d reads in %d EPCIS events, %d documents, %.1f s -> %s",
                stats["objects"], stats["events"], stats["epcis_events"], stats["documents"],
                stats["seconds"], out_dir)
    return stats
