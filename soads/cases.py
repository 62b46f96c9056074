"""Case reader (input of ``soads score --input``): one case per JSON line or XES trace [pure].

A *case* is one object's path: its oid, its sequence of read points (activities, in a process
log), and optionally one attribute dict and one time per step. :func:`read_cases` streams them
from a file, whatever its size (memory bounded by one line or one trace), and checks each one:
anything it cannot take as given raises :class:`CaseError`, whose one-line message names the
file, the line or trace and the reason. Nothing is dropped silently and nothing is guessed.

Formats, by the file name's suffix:

- ``.xes``, ``.xes.gz``: XES (IEEE 1849-2016). One ``<trace>`` is one case: oid = the trace's
  ``concept:name`` (else its 1-based trace number), read point = the event's ``concept:name``,
  time = the event's ``time:timestamp`` (kept as written). Every other attribute of an event
  (``string``, ``date``, ``int``, ``float``, ``boolean``, ``id``) goes into the step's attributes
  as the text of its ``value``; nested ``<list>`` / ``<container>`` attributes and meta-attributes
  (attributes of an attribute) are left out, as are trace-level attributes other than
  ``concept:name`` and the log's ``<global>`` defaults: the detector scores events, and a list has
  no single value to compare. A trace whose events carry no other attribute has
  ``attributes = None``; one whose events carry no timestamp has ``times = None``.
- anything else (``.jsonl``, ``.jsonl.gz``, ...; ``.gz`` means gzip): JSON lines
  ``{"oid": str, "sequence": [str, ...], "attributes": [{key: value}, ...], "times": [str, ...]}``;
  ``attributes`` and ``times`` are optional (absent or null), with one entry per step when
  present. Blank lines are skipped. Attributes with no value at any step (``[{}, {}]``, or
  ``[]`` for an empty sequence) read as ``None``, as do empty ``times``: one spelling of "none
  recorded" in both formats.

Rules (both formats):

- ``oid``: a string (a JSON integer is taken as its decimal text); missing is an error. Oids are
  not checked for uniqueness: every line / trace is a case of its own, so two cases with one oid
  give two output lines, in input order (a uniqueness check would hold every oid in memory).
- ``sequence``: a list of non-empty strings; a number, null or empty activity is an error (an
  activity is an identifier: a number there means a broken conversion). An **empty** sequence is
  a valid case (an object or trace without events), read and scored like any other: the context
  detector scores its one step, START -> END (an object that was never read).
- attribute values: strings; JSON numbers and booleans are taken as their JSON text (``85``,
  ``1.5``, ``true``), as XES writes them; a JSON ``null`` value means "not recorded at this step"
  (the key is left out, as XES leaves out an absent attribute); a list or object value is an
  error. Keys are strings (JSON guarantees it).
- ``times``: strings (kept as written, not parsed: the detector does not use them).
- an ``attributes`` or ``times`` list whose length differs from the sequence is an error.
"""
from __future__ import annotations

import functools
import gzip
import json
import logging
import zlib
from dataclasses import dataclass
from typing import IO, Iterator

logger = logging.getLogger(__name__)

# XES attribute elements with one value each (IEEE 1849-2016); list / container hold others
XES_SCALARS = frozenset(("string", "date", "int", "float", "boolean", "id"))
XES_NAME = "concept:name"
XES_TIME = "time:timestamp"


class CaseError(ValueError):
    """A case that cannot be read as given; ``str(e)`` is one line: file, line/trace, reason."""


@dataclass
class Case:
    """One object's path as read from the input.

    ``number`` is the 1-based line (JSON lines) or trace (XES) number; ``where`` says which,
    for messages (``"line 12"``, ``"trace 3 (line 40)"``).
    """

    oid: str
    sequence: list[str]
    attributes: list[dict[str, str]] | None = None
    times: list[str] | None = None
    number: int = 0
    where: str = ""


def is_xes(path: str) -> bool:
    """True when ``path`` names an XES file (``.xes`` or ``.xes.gz``, any case).

    Examples
    --------
    >>> is_xes("log.XES.gz"), is_xes("log.xes"), is_xes("cases.jsonl.gz")
    (True, True, False)
    """
    low = path.lower()
    return low.endswith(".xes") or low.endswith(".xes.gz")


def read_cases(path: str) -> Iterator[Case]:
    """Cases of a ``.jsonl`` / ``.jsonl.gz`` / ``.xes`` / ``.xes.gz`` file, in file order.

    Raises
    ------
    CaseError
        On the first case that breaks a rule of this module (message: file, line or trace,
        reason), on malformed JSON / XML / gzip, and when the file cannot be opened.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "c.jsonl")
    >>> _ = open(p, "w").write('{"oid": "o1", "sequence": ["a", "b"], "times": ["t1", "t2"]}\\n')
    >>> [(c.oid, c.sequence, c.attributes, c.times, c.where) for c in read_cases(p)]
    [('o1', ['a', 'b'], None, ['t1', 't2'], 'line 1')]
    """
    reader = _read_xes if is_xes(path) else _read_jsonl
    try:
        with _open(path) as fh:
            yield from reader(path, fh)
    except OSError as e:  # unreadable file, not gzip, truncated gzip
        raise CaseError(f"{path}: cannot read: {_one_line(e.strerror or str(e))}") from e
    except (EOFError, zlib.error) as e:
        raise CaseError(f"{path}: cannot read: truncated or corrupt gzip ({_one_line(str(e))})") \
            from e


def _open(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- JSON lines ---------------------------------------------------------------------------------

def _read_jsonl(path: str, fh: IO[bytes]) -> Iterator[Case]:
    for number, raw in enumerate(fh, 1):
        if not raw.strip():
            continue
        where = f"line {number}"
        try:
            rec = json.loads(raw.rstrip())
        except UnicodeDecodeError as e:
            raise CaseError(f"{path}:{number}: not UTF-8 text ({e.reason})") from None
        except json.JSONDecodeError as e:  # one line: its column is what locates the fault
            raise CaseError(f"{path}:{number}: malformed JSON ({e.msg} at column {e.colno})") \
                from None
        if not isinstance(rec, dict):
            raise CaseError(f"{path}:{number}: not a case line (need a JSON object "
                            '{"oid": str, "sequence": [str, ...], ...})')
        try:
            yield _case_from_json(rec, number, where)
        except _Bad as e:
            raise CaseError(f"{path}:{number}: {e}") from None


class _Bad(Exception):
    """A rule broken inside one case (turned into a CaseError with the case's location)."""


def _oid(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        raise _Bad('no "oid"')
    raise _Bad(f'"oid" must be a string, got {_kind(value)}')


def _kind(value) -> str:
    return _KINDS.get(type(value), type(value).__name__)


_KINDS = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object",
          str: "a string", type(None): "null"}


def _n(count: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{count} {noun if count == 1 else plural}"


def _case_from_json(rec: dict, number: int, where: str) -> Case:
    oid = _oid(rec.get("oid"))
    seq = rec.get("sequence")
    if not isinstance(seq, list):
        raise _Bad('no "sequence" list' if seq is None else
                   f'"sequence" must be a list of strings, got {_kind(seq)}')
    for i, rp in enumerate(seq):
        if not isinstance(rp, str) or not rp:
            raise _Bad(f"step {i}: activity must be a non-empty string, got "
                       f"{_kind(rp) if not isinstance(rp, str) else 'an empty string'}")
    attrs = rec.get("attributes")
    if attrs is not None:
        if not isinstance(attrs, list):
            raise _Bad(f'"attributes" must be a list of objects, got {_kind(attrs)}')
        if len(attrs) != len(seq):
            raise _Bad(f'"attributes" has {_n(len(attrs), "entry")} for {_n(len(seq), "step")}')
        attrs = [_step_attributes(a, i) for i, a in enumerate(attrs)]
    times = rec.get("times")
    if times is not None:
        if not isinstance(times, list):
            raise _Bad(f'"times" must be a list of strings, got {_kind(times)}')
        if len(times) != len(seq):
            raise _Bad(f'"times" has {_n(len(times), "entry")} for {_n(len(seq), "step")}')
        for i, t in enumerate(times):
            if not isinstance(t, str):
                raise _Bad(f"step {i}: time must be a string, got {_kind(t)}")
    # one spelling of "none recorded", whatever the format: None (as an XES trace gives it)
    return Case(oid, seq, attrs if attrs and any(attrs) else None, times or None, number, where)


def _step_attributes(attrs, i: int) -> dict[str, str]:
    if not isinstance(attrs, dict):
        raise _Bad(f"step {i}: attributes must be an object, got {_kind(attrs)}")
    out = {}
    for key, value in attrs.items():
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, (bool, int, float)):
            # the JSON text: true/false, 85, 1.5 (what XES writes for boolean, int, float)
            out[key] = json.dumps(value)
        elif value is not None:  # null: not recorded at this step, as an absent XES attribute
            raise _Bad(f"step {i}: attribute {key!r} must be a string, number or boolean, "
                       f"got {_kind(value)}")
    return out


# -- XES ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)  # a log has a handful of distinct tags, met on every event
def _local(tag) -> str:
    """Tag name without its namespace (XES files come with and without the XES namespace)."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _read_xes(path: str, fh: IO[bytes]) -> Iterator[Case]:
    from lxml import etree

    # Only the end of each <trace> comes out of the parser (filtered in C, as soads.epcis does
    # for EPCIS events); XXE-safe as there: no entities, no DTD, no network.
    it = etree.iterparse(fh, events=("end",), tag=("{*}trace", "trace"), resolve_entities=False,
                         no_network=True, load_dtd=False, huge_tree=True, remove_comments=True,
                         remove_pis=True)
    n_trace = 0
    try:
        for _, trace in it:
            parent = trace.getparent()
            if n_trace == 0:
                _check_root(path, trace.getroottree().getroot())
            if parent is None or parent.getparent() is not None:  # nested deeper: not a case
                inside = _local(parent.tag) if parent is not None else "nothing"
                raise CaseError(f"{path}: line {trace.sourceline}: malformed XES: <trace> inside "
                                f"<{inside}>, not directly in <log>")
            n_trace += 1
            where = f"trace {n_trace} (line {trace.sourceline})"
            try:
                yield _case_from_trace(trace, n_trace, where)
            except _Bad as e:
                raise CaseError(f"{path}: {where}: {e}") from None
            # memory: one trace; drop it and what came before it (log attributes, globals, ...)
            trace.clear()
            while trace.getprevious() is not None:
                del parent[0]
        if n_trace == 0:
            _check_root(path, it.root)
    except etree.XMLSyntaxError as e:
        at = f": line {e.lineno}" if e.lineno else ""
        after = f" (after trace {n_trace})" if n_trace else ""
        raise CaseError(f"{path}{at}{after}: malformed XES ({_one_line(e.msg or str(e))})") \
            from None


def _check_root(path: str, root) -> None:
    if root is None or _local(root.tag) != "log":
        got = "nothing" if root is None else f"<{_local(root.tag)}>"
        raise CaseError(f"{path}: malformed XES: the root element is {got}, not <log>")


def _xes_attribute(el, where: str) -> tuple[str, str] | None:
    """``(key, value)`` of a scalar attribute element; None for list / container / other."""
    kind = _local(el.tag)
    if kind not in XES_SCALARS:
        return None
    key, value = el.get("key"), el.get("value")
    if key is None or value is None:
        raise _Bad(f"{where}: <{kind}> attribute without "
                   f"{'key' if key is None else 'value'} (line {el.sourceline})")
    return key, value


def _case_from_trace(trace, number: int, where: str) -> Case:
    oid = str(number)
    seq: list[str] = []
    steps: list[dict[str, str]] = []
    times: list[str | None] = []
    scalars, local = XES_SCALARS, _local
    for child in trace:
        if local(child.tag) != "event":
            kv = _xes_attribute(child, "trace")
            if kv is not None and kv[0] == XES_NAME:
                oid = kv[1]
            continue
        name = time = None
        attrs = {}
        for a in child:  # the event's attributes: the loop every event of the log runs through
            if local(a.tag) not in scalars:
                continue
            key, value = a.get("key"), a.get("value")
            if key is None or value is None:
                _xes_attribute(a, f"event {len(seq)}")  # raises, naming what is missing
            if key == XES_NAME:
                name = value
            elif key == XES_TIME:
                time = value
            else:
                attrs[key] = value
        if not name:
            raise _Bad(f"event {len(seq)} (line {child.sourceline}) has "
                       f"{'no' if name is None else 'an empty'} {XES_NAME} (the activity)")
        seq.append(name)
        steps.append(attrs)
        times.append(time)
    n_timed = sum(t is not None for t in times)
    if 0 < n_timed < len(times):
        missing = times.index(None)
        raise _Bad(f"event {missing} has no {XES_TIME} while {n_timed} of the trace's "
                   f"{len(times)} events have one")
    return Case(oid, seq, steps if any(steps) else None, times if n_timed else None, number,
                where)
