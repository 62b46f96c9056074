"""Battery factory simulator: the plant as data (DESIGN.md "The battery factory simulator").

Paper 001, sections 4.1-4.2: an assembly process (20 winding and 24 assembly facilities on
dedicated lines) followed by a formation process (8 room-temperature aging, 4 high-temperature
aging, 6 IR test, 7 charge/discharge and 7 defect inspection facilities). This module holds the
stages, facilities, read points and routing probabilities; :mod:`soads.simulator.generate` walks
objects through it. Pure Python (no pyspark).

Read points are SGLN URNs with readable extensions::

    urn:epc:id:sgln:8801234.00001.WND-07       winding facility 7 (assembly hall, 00001)
    urn:epc:id:sgln:8801234.00001.CNV-L2-ASM   line 2's conveyor into assembly
    urn:epc:id:sgln:8801234.00002.STK-HTA      stocker in front of high-temperature aging
    urn:epc:id:sgln:8801234.00002.RWK-IRT      rework return conveyor leaving the IR test
    urn:epc:id:sgln:8801234.00002.STK-OUT      finished-goods stocker (last read)

Every read point always reports the same event fields: its bizStep, its bizLocation (the hall
``<area>.0`` for facilities, stockers, rework conveyors and the exit; the line ``<area>.L<x>``
for line x's conveyors), action ``OBSERVE``, and a disposition from :func:`normal_dispositions`
(an IR, charge/discharge or inspection facility reports conformant or non_conformant, every other
read point one disposition). So an event field that does not belong at its read point is an
attribute anomaly a detector can see (:mod:`soads.simulator.generate`).

A normal path (no rework) reads::

    CNV-Lx-WND, WND, CNV-Lx-ASM, ASM,
    CNV-Lx-RTA, [STK-RTA], RTA, CNV-Lx-HTA, [STK-HTA], HTA, CNV-Lx-IRT, [STK-IRT], IRT,
    CNV-Lx-CDC, [STK-CDC], CDC, CNV-Lx-INS, [STK-INS], INS, STK-OUT

that is 15 reads plus 0-5 optional stocker reads (buffering when the next facility is busy):
the paper's 15-20 (section 4.5).
"""
from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass

COMPANY_PREFIX = "8801234"
"""GS1 company prefix of the plant (read points) and of the cells (objects)."""
ITEM_REFERENCE = "012345"
"""SGTIN item reference of the battery cells."""
ASSEMBLY_AREA = "00001"
FORMATION_AREA = "00002"

CBV_BIZSTEP = "urn:epcglobal:cbv:bizstep:"
CBV_DISP = "urn:epcglobal:cbv:disp:"


@dataclass(frozen=True)
class Stage:
    """One process stage: ``n_facilities`` facilities ``<code>-01..``.

    ``rework`` lists ``(target stage code, probability)`` for a failed object (empty when the
    stage never fails); ``stocker`` says whether a stocker may buffer objects in front of it.
    """

    code: str
    name: str
    n_facilities: int
    area: str
    biz_step: str
    fail_rate: float = 0.0
    rework: tuple[tuple[str, float], ...] = ()
    stocker: bool = False


# paper §4.2: facility counts, 5% defect rates and the rework probabilities (DESIGN.md).
STAGES: tuple[Stage, ...] = (
    Stage("WND", "winding", 20, ASSEMBLY_AREA, "assembling"),
    Stage("ASM", "assembly", 24, ASSEMBLY_AREA, "assembling"),
    Stage("RTA", "room-temperature aging", 8, FORMATION_AREA, "storing", stocker=True),
    Stage("HTA", "high-temperature aging", 4, FORMATION_AREA, "storing", stocker=True),
    Stage("IRT", "IR test", 6, FORMATION_AREA, "inspecting", 0.05,
          (("RTA", 0.50), ("HTA", 0.27), ("IRT", 0.23)), stocker=True),
    Stage("CDC", "charge/discharge", 7, FORMATION_AREA, "inspecting", 0.05,
          (("RTA", 0.50), ("HTA", 0.27), ("CDC", 0.15), ("IRT", 0.08)), stocker=True),
    Stage("INS", "defect inspection", 7, FORMATION_AREA, "inspecting", 0.05,
          (("RTA", 0.32), ("HTA", 0.21), ("IRT", 0.12), ("CDC", 0.35)), stocker=True),
)
STAGE_INDEX = {s.code: i for i, s in enumerate(STAGES)}

N_LINES = 4
"""Production lines; each has its own conveyors and one preferred facility per stage."""
PREFERRED_SHARE = 0.5
"""paper §4.2: one facility of the object's line takes 50% of the objects of a stage."""
OTHER_WEIGHT_RANGE = (5.0, 25.0)
"""paper §4.2: the other facilities share the remaining 50% with random weights of 5-25%."""
STOCKER_PROBABILITY = 0.4
"""Chance that an object is buffered in the stocker in front of a formation stage."""

# read kinds (what kind of reader produced a read; drives travel times and noise)
FACILITY, CONVEYOR, STOCKER, REWORK, EXIT, UNKNOWN, REPEAT = range(7)

# actions: a cell is only ever observed; ADD / DELETE (commissioning / decommissioning) do not
# belong anywhere in the plant
OBSERVE = "OBSERVE"
ACTIONS = ("ADD", "OBSERVE", "DELETE")

# dispositions
IN_PROGRESS = CBV_DISP + "in_progress"
IN_TRANSIT = CBV_DISP + "in_transit"
CONFORMANT = CBV_DISP + "conformant"
NON_CONFORMANT = CBV_DISP + "non_conformant"
AVAILABLE = CBV_DISP + "available"
DISPOSITIONS = (IN_PROGRESS, IN_TRANSIT, CONFORMANT, NON_CONFORMANT, AVAILABLE)
"""Every disposition the plant reports."""
BIZ_STEPS = tuple(CBV_BIZSTEP + step for step in (
    "assembling", "storing", "inspecting", "transporting", "staging_outbound"))
"""Every bizStep the plant reports."""


def sgln(area: str, extension: str) -> str:
    """SGLN URN of a read point.

    Examples
    --------
    >>> sgln(ASSEMBLY_AREA, "WND-07")
    'urn:epc:id:sgln:8801234.00001.WND-07'
    """
    return f"urn:epc:id:sgln:{COMPANY_PREFIX}.{area}.{extension}"


def sgtin(serial: int) -> str:
    """SGTIN URN of battery cell ``serial``.

    Examples
    --------
    >>> sgtin(42)
    'urn:epc:id:sgtin:8801234.012345.42'
    """
    return f"urn:epc:id:sgtin:{COMPANY_PREFIX}.{ITEM_REFERENCE}.{serial}"


def area_location(area: str) -> str:
    """bizLocation of a hall: the SGLN with extension ``0``."""
    return sgln(area, "0")


def line_location(area: str, line: int) -> str:
    """bizLocation of production line ``line`` (0-based) in a hall: where its conveyors are.

    Examples
    --------
    >>> line_location(FORMATION_AREA, 1)
    'urn:epc:id:sgln:8801234.00002.L2'
    """
    return sgln(area, f"L{line + 1}")


@dataclass(frozen=True)
class ReadPoint:
    """A reader: its SGLN URN, kind, and the event fields it reports: CBV bizStep URN,
    bizLocation URN and action (an attribute anomaly is a copy with one field changed)."""

    urn: str
    kind: int
    biz_step: str
    biz_location: str
    action: str = OBSERVE


@dataclass(frozen=True)
class Plant:
    """The plant built for one seed.

    Attributes
    ----------
    facilities : per stage, the facility read points in number order.
    conveyors : ``conveyors[line][stage]`` is the line's conveyor into that stage.
    stockers : per stage, the stocker in front of it (None where there is none).
    rework : per stage, the rework return conveyor leaving it (None where it never fails).
    exit : the finished-goods stocker.
    routing : ``routing[line][stage]`` = (facility indices, cumulative probabilities).
    read_points : every read point of the plant by URN.
    """

    seed: int
    n_lines: int
    facilities: tuple[tuple[ReadPoint, ...], ...]
    conveyors: tuple[tuple[ReadPoint, ...], ...]
    stockers: tuple[ReadPoint | None, ...]
    rework: tuple[ReadPoint | None, ...]
    exit: ReadPoint
    routing: tuple[tuple[tuple[tuple[int, ...], tuple[float, ...]], ...], ...]
    read_points: dict[str, ReadPoint]

    def choose_facility(self, rng: random.Random, line: int, stage: int) -> ReadPoint:
        """Draw a facility of ``stage`` for an object of ``line`` (paper §4.2 probabilities)."""
        index, cum = self.routing[line][stage]
        return self.facilities[stage][index[bisect_right(cum, rng.random() * cum[-1])]]

    def facility_probabilities(self, line: int, stage: int) -> dict[str, float]:
        """``{facility URN: probability}`` of ``stage`` for objects of ``line``."""
        index, cum = self.routing[line][stage]
        probs = [b - a for a, b in zip((0.0,) + cum[:-1], cum)]
        return {self.facilities[stage][i].urn: p for i, p in zip(index, probs)}


def preferred_facility(line: int, n_facilities: int, n_lines: int = N_LINES) -> int:
    """Index of the facility of ``line`` that takes 50% of a stage: lines spread evenly.

    Examples
    --------
    >>> [preferred_facility(line, 6) for line in range(4)]
    [0, 1, 3, 4]
    """
    return line * n_facilities // n_lines


def build_plant(seed: int = 7, n_lines: int = N_LINES) -> Plant:
    """Build the plant: read points and routing weights, fixed for ``seed``.

    Examples
    --------
    >>> plant = build_plant(7)
    >>> len(plant.read_points)
    113
    >>> sorted(plant.facility_probabilities(0, 3).items())[0]
    ('urn:epc:id:sgln:8801234.00002.HTA-01', 0.5)
    """
    if n_lines < 1 or n_lines > min(s.n_facilities for s in STAGES):
        raise ValueError(f"n_lines must be in 1..{min(s.n_facilities for s in STAGES)}, "
                         f"got {n_lines}")
    rng = random.Random(f"soads-plant-{seed}")
    facilities = tuple(
        tuple(ReadPoint(sgln(s.area, f"{s.code}-{k + 1:02d}"), FACILITY,
                        CBV_BIZSTEP + s.biz_step, area_location(s.area))
              for k in range(s.n_facilities))
        for s in STAGES
    )
    conveyors = tuple(
        tuple(ReadPoint(sgln(s.area, f"CNV-L{line + 1}-{s.code}"), CONVEYOR,
                        CBV_BIZSTEP + "transporting", line_location(s.area, line))
              for s in STAGES)
        for line in range(n_lines)
    )
    stockers = tuple(
        ReadPoint(sgln(s.area, f"STK-{s.code}"), STOCKER, CBV_BIZSTEP + "storing",
                  area_location(s.area)) if s.stocker else None
        for s in STAGES
    )
    rework = tuple(
        ReadPoint(sgln(s.area, f"RWK-{s.code}"), REWORK, CBV_BIZSTEP + "transporting",
                  area_location(s.area)) if s.fail_rate > 0 else None
        for s in STAGES
    )
    exit_ = ReadPoint(sgln(FORMATION_AREA, "STK-OUT"), EXIT, CBV_BIZSTEP + "staging_outbound",
                      area_location(FORMATION_AREA))
    routing = []
    for line in range(n_lines):
        per_stage = []
        for s in STAGES:
            pref = preferred_facility(line, s.n_facilities, n_lines)
            others = [k for k in range(s.n_facilities) if k != pref]
            weights = [rng.uniform(*OTHER_WEIGHT_RANGE) for _ in others]
            total = sum(weights)
            probs = [PREFERRED_SHARE] + [(1 - PREFERRED_SHARE) * w / total for w in weights]
            index = (pref, *others)
            cum, acc = [], 0.0
            for p in probs:
                acc += p
                cum.append(acc)
            per_stage.append((index, tuple(cum)))
        routing.append(tuple(per_stage))
    everything = [rp for stage in facilities for rp in stage]
    everything += [rp for line in conveyors for rp in line]
    everything += [rp for rp in stockers + rework if rp is not None] + [exit_]
    return Plant(seed, n_lines, facilities, conveyors, stockers, rework, exit_, tuple(routing),
                 {rp.urn: rp for rp in everything})


def normal_dispositions(kind: int, stage: int = -1) -> tuple[str, ...]:
    """The dispositions a read point of ``kind`` reports (``stage``: a facility's stage index).

    Examples
    --------
    >>> [d.rsplit(":", 1)[1] for d in normal_dispositions(FACILITY, STAGE_INDEX["IRT"])]
    ['conformant', 'non_conformant']
    >>> [d.rsplit(":", 1)[1] for d in normal_dispositions(CONVEYOR)]
    ['in_transit']
    """
    if kind == FACILITY:
        return (CONFORMANT, NON_CONFORMANT) if STAGES[stage].fail_rate else (IN_PROGRESS,)
    return {CONVEYOR: (IN_TRANSIT,), STOCKER: (IN_PROGRESS,), REWORK: (NON_CONFORMANT,),
            EXIT: (AVAILABLE,), UNKNOWN: (IN_PROGRESS,)}[kind]


def rework_targets(stage: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Allowed rework targets of a failed ``stage``: (stage indices, cumulative probabilities).

    Examples
    --------
    >>> rework_targets(STAGE_INDEX["IRT"])
    ((2, 3, 4), (0.5, 0.77, 1.0))
    """
    targets, cum, acc = [], [], 0.0
    for code, p in STAGES[stage].rework:
        acc = round(acc + p, 10)
        targets.append(STAGE_INDEX[code])
        cum.append(acc)
    return tuple(targets), tuple(cum)


def illegal_rework_targets(stage: int) -> tuple[int, ...]:
    """Earlier stages an object at ``stage`` may never be sent back to (paper §4.2 allows only
    the rework jumps in :data:`STAGES`; assembly is never re-entered from formation).

    Examples
    --------
    >>> illegal_rework_targets(STAGE_INDEX["IRT"])
    (0, 1)
    >>> illegal_rework_targets(STAGE_INDEX["HTA"])
    (0, 1, 2)
    """
    allowed = {STAGE_INDEX[code] for code, _ in STAGES[stage].rework}
    return tuple(k for k in range(stage) if k not in allowed)


def unknown_read_points(n_lines: int = N_LINES) -> tuple[str, ...]:
    """Read point ids that do NOT exist in the plant (for the ``unknown_read_point`` anomaly):
    facility numbers past a stage's last facility, a conveyor of a line that does not exist,
    and an unregistered handheld reader.
    """
    ids = [sgln(s.area, f"{s.code}-{s.n_facilities + k:02d}") for s in STAGES for k in (1, 2)]
    ids += [sgln(ASSEMBLY_AREA, f"CNV-L{n_lines + 1}-ASM"), sgln(FORMATION_AREA, "HHT-01")]
    return tuple(ids)


def process_relations(plant: Plant) -> frozenset[tuple[str, str]]:
    """Every relation (a, b) the process allows: the process model the anomalies break.

    Normal flow on each line: the line's conveyor into a stage, optionally its stocker, any of the
    stage's facilities, the conveyor into the next stage, ..., the finished-goods stocker; plus
    the rework jumps of :data:`STAGES` through the stage's rework conveyor.

    Examples
    --------
    >>> plant = build_plant(7)
    >>> rel = process_relations(plant)
    >>> (sgln(FORMATION_AREA, "RWK-IRT"), sgln(FORMATION_AREA, "HTA-02")) in rel
    True
    >>> (sgln(FORMATION_AREA, "RWK-INS"), sgln(ASSEMBLY_AREA, "WND-02")) in rel
    False
    """
    rel = set()
    last = len(STAGES) - 1
    for line in range(plant.n_lines):
        for k, spec in enumerate(STAGES):
            into = [plant.conveyors[line][k]] + ([plant.stockers[k]] if spec.stocker else [])
            if spec.stocker:
                rel.add((plant.conveyors[line][k].urn, plant.stockers[k].urn))
            after = plant.exit if k == last else plant.conveyors[line][k + 1]
            for facility in plant.facilities[k]:
                rel.update((rp.urn, facility.urn) for rp in into)
                rel.add((facility.urn, after.urn))
                if plant.rework[k] is not None:
                    rel.add((facility.urn, plant.rework[k].urn))
    for k, spec in enumerate(STAGES):
        for code, _ in spec.rework:
            rel.update((plant.rework[k].urn, f.urn) for f in plant.facilities[STAGE_INDEX[code]])
    return frozenset(rel)
