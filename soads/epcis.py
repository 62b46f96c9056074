"""Event Log Preprocessor, pure core: EPCIS XML / JSON(-LD) documents -> flat events | quarantine.

Pure Python (lxml, json, datetime); imports no pyspark. Spark runs :func:`parse_document`
inside ``mapInArrow``: the batch path in :func:`soads.preprocess.parse_documents`, the event job
in its parse stage (:class:`soads.stream.parse_stage.EventStore`).

Supported input
---------------
* EPCIS 1.2 XML (``urn:epcglobal:epcis:xsd:1``): events in ``EventList``, a
  ``TransformationEvent`` possibly wrapped in ``EventList/extension``; 1.2 fields kept under an
  event's ``extension`` / ``baseExtension`` (quantity lists, errorDeclaration) are read too.
* EPCIS 2.0 XML (``urn:epcglobal:epcis:xsd:2``). ``EPCISQueryDocument`` roots
  (``urn:epcglobal:epcis-query:xsd:1|2``) are accepted as well (their ``EventList``).
* EPCIS 2.0 JSON / JSON-LD (first non-space byte ``{``): ``epcisBody.eventList``, a query
  document's ``epcisBody.queryResults.resultsBody.eventList``, or one bare event object
  (``"type": "ObjectEvent"``..., as a single Kafka message would carry). The JSON context is not
  expanded: the terms of the GS1 ``epcis-context`` are read by name.

XML is pull-parsed (``lxml.etree.iterparse`` filtered in C on the five event tags; every event
element is cleared once read), so a document's size costs no memory beyond its bytes. A
machine-written document of plain ObjectEvents (what the simulator and typical RFID middleware
write) first tries a regular-grammar fast path over the decoded text that gives identical rows
at about twice the speed (about 150,000 flat events/s per core against 70,000); any document it
does not fully recognise goes through lxml, the reference (the tests compare both). JSON is
loaded whole; ``max_bytes`` bounds both.

One flat event per instance-level EPC (DESIGN.md "Event")
---------------------------------------------------------
The EPCs of ``epcList`` (Object-, TransactionEvent), ``childEPCs`` (Aggregation-,
AssociationEvent) and ``inputEPCList`` + ``outputEPCList`` (TransformationEvent) each become one
flat event with the event's read point, time and business fields. Decisions:

* ``parentID`` is **not** an oid. GS1 EPCIS 2.0 (sect. 7.4.3/7.4.6) makes the parent the
  container (an SSCC pallet) or, for an AssociationEvent, possibly a *location* (an SGLN) the
  children are associated with; it names the aggregation, not an object that was read on its
  own. DESIGN.md lists exactly ``epcList``, ``childEPCs``, ``inputEPCList``/``outputEPCList``.
* Class-level quantities (``quantityList``, ``childQuantityList``, ``input``/
  ``outputQuantityList``: an ``epcClass`` and an amount) identify no object, so they are not
  oids. A valid event without any instance-level EPC (quantities only, parentID only, or a
  sensor-only ObjectEvent with an empty ``epcList``) becomes **one quarantine record with reason
  ``no_instance_epc``** whose detail says what the event did carry: nothing is silently dropped,
  and the quarantine table shows how much class-level traffic there is.
* Events carrying an ``errorDeclaration`` are kept as ordinary flat events: they still record
  that the reads happened (the declaration only says their business data was wrong), and the
  corrective events that follow are events in their own right. Downstream cannot tell them apart
  (no column holds the declaration).
* An ``<epc>`` element with no text makes the whole event record a ``missing_epc`` quarantine
  record (an instance EPC list that is broken, as opposed to absent).
* ``bizStep`` / ``disposition`` are normalised to the CBV 1.2 URN form: a bare CBV 2.0 word
  (``shipping``) and the GS1 Web URI form (``https://ref.gs1.org/cbv/BizStep-shipping``,
  ``cbv:BizStep-shipping``) both become ``urn:epcglobal:cbv:bizstep:shipping``
  (``urn:epcglobal:cbv:disp:...`` for dispositions), so XML and JSON agree. Other values (private
  URIs) are kept verbatim.
* ``eventTime`` with its offset is converted to UTC, formatted
  ``YYYY-MM-DDTHH:MM:SS.fffZ`` (sub-millisecond digits are truncated). A time without an offset
  is a ``bad_timestamp`` (xsd:dateTime in EPCIS requires one).
* ``sensor_reports`` is JSON text (``sort_keys``, compact) of a list of
  ``{"sensorMetadata": {...}, "sensorReport": [{...}, ...]}``, or None without a
  ``sensorElementList``. XML attributes become keys (namespaced ones as ``prefix:name``);
  the numeric attributes (``value``, ``minValue``, ``maxValue``, ``meanValue``, ``sDev``,
  ``percRank``, ``percValue``) become numbers and ``booleanValue`` a boolean; a ``type`` or
  ``exception`` in the GS1 vocabulary loses its ``gs1:`` / ``https://gs1.org/voc/`` prefix
  (the JSON-LD compact form). XML and JSON of the same sensor data give the same text. User
  extension elements inside a ``sensorElement`` are not kept.

Counting rule (tested)
----------------------
Every event record in a document yields either all its flat events (one per instance EPC) or
exactly one quarantine record (the first problem found, in the order: unsupported type,
event time, read point, EPC). A failure of the document itself (empty, binary, invalid
UTF-8, not XML/JSON, wrong namespace, too large, truncated or otherwise malformed) adds exactly
one quarantine record that stands for every event record not already accounted for: the events
fully parsed before an XML syntax error are kept. So for a document read to its end::

    event records == records kept + quarantine records
    flat events   == sum over the records kept of their instance EPCs

(a document cut short adds its one document-level record for the unread rest), and a document
that cannot be opened at all is one quarantine record.

Source identity: ``f"{source}:{line}"`` for an XML event (line of its start tag; for a syntax
error the line of the error), ``f"{source}#{index}"`` for the index of a JSON event in its
eventList, plain ``source`` for a document-level record.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import re
from datetime import datetime

from lxml import etree

from soads import schema
from soads.schema import (
    ACTION, BIZ_LOCATION, BIZ_STEP, DISPOSITION, EVENT_TIME, EVENT_TYPE, OID, READ_POINT,
    SENSOR_REPORTS, SOURCE,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024

EVENT_TYPES = (
    "ObjectEvent", "AggregationEvent", "TransformationEvent", "TransactionEvent",
    "AssociationEvent",
)
XML_NAMESPACES = (
    "urn:epcglobal:epcis:xsd:1", "urn:epcglobal:epcis:xsd:2",
    "urn:epcglobal:epcis-query:xsd:1", "urn:epcglobal:epcis-query:xsd:2",
)
ROOT_NAMES = ("EPCISDocument", "EPCISQueryDocument")
EPC_LISTS = ("epcList", "childEPCs", "inputEPCList", "outputEPCList")
QUANTITY_LISTS = ("quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList")
SENSOR_NUMBERS = ("value", "minValue", "maxValue", "meanValue", "sDev", "percRank", "percValue")
GS1_VOC_PREFIXES = ("gs1:", "https://gs1.org/voc/", "http://gs1.org/voc/")
DETAIL_MAX = 500

_NON_SPACE = re.compile(rb"\S")
_DONE = "soads-done"  # tag given to an event element once read (so leftovers are recognisable)
_WRAPPERS = ("extension", "baseExtension")  # EPCIS 1.2 extension points holding later fields


class _Reject(Exception):
    """An event record that becomes one quarantine record (internal control flow only)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def _quarantine(source: str, reason: str, detail: str) -> dict:
    assert reason in schema.REASONS, reason
    return {schema.SOURCE: source, schema.REASON: reason, schema.DETAIL: str(detail)[:DETAIL_MAX]}


# -- field normalisers ----------------------------------------------------------------------


def utc_millis_reference(text: str) -> str:
    """Reference (slow, obviously correct) UTC normaliser; the test oracle for :func:`utc_millis`.

    Examples
    --------
    >>> utc_millis_reference("2005-04-03T20:33:31.116-06:00")
    '2005-04-04T02:33:31.116Z'
    """
    from datetime import timezone

    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None:
        raise ValueError(f"no UTC offset in {text!r}")
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


_time_cache: dict[str, str] = {}
_hour_cache: dict[str, str] = {}
# 'YYYY-MM-DDTHH:MM:SS.fff' with 'Z' or a whole-hour offset: only the date and hour change in UTC
_WHOLE_HOUR_TIME = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:[0-5]\d:[0-5]\d\.\d\d\d(?:Z|[+-]\d\d:00)\Z", re.ASCII)


def utc_millis(text: str) -> str:
    """``eventTime`` text with its offset -> UTC ``YYYY-MM-DDTHH:MM:SS.fffZ``; ValueError if bad.

    Fast path: for millisecond times with ``Z`` or a whole-hour offset the UTC date and hour are
    computed once per (local date-hour, offset) and the minutes, seconds and milliseconds are
    copied. Other forms go through :func:`datetime.fromisoformat`, cached per string (bounded).
    :func:`utc_millis_reference` is the oracle in the tests.

    Examples
    --------
    >>> utc_millis("2005-04-03T20:33:31.116-06:00")
    '2005-04-04T02:33:31.116Z'
    >>> utc_millis("2013-06-08T14:58:56.591Z")
    '2013-06-08T14:58:56.591Z'
    >>> utc_millis("2024-03-01T09:00:00.123456+05:30")
    '2024-03-01T03:30:00.123Z'
    """
    if _WHOLE_HOUR_TIME.match(text) is not None:
        key = text[:13] + text[23:]
        prefix = _hour_cache.get(key)
        if prefix is None:
            prefix = _utc_millis_parse(text[:13] + ":00:00.000" + text[23:])[:13]
            if len(_hour_cache) > 100_000:
                _hour_cache.clear()
            _hour_cache[key] = prefix
        return prefix + text[13:23] + "Z"
    out = _time_cache.get(text)
    if out is None:
        out = _utc_millis_parse(text)
        if len(_time_cache) > 100_000:
            _time_cache.clear()
        _time_cache[text] = out
    return out


def _utc_millis_parse(text: str) -> str:
    dt = datetime.fromisoformat(text.strip())
    offset = dt.utcoffset()
    if offset is None:
        raise ValueError(f"no UTC offset in {text!r}")
    if offset:
        dt = dt - offset  # OverflowError past year 9999 / before year 1
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (
        dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, dt.microsecond // 1000)


_CBV_WEB = {
    "bizstep": ("https://ref.gs1.org/cbv/bizstep-", "http://ref.gs1.org/cbv/bizstep-",
                "cbv:bizstep-"),
    "disp": ("https://ref.gs1.org/cbv/disp-", "http://ref.gs1.org/cbv/disp-", "cbv:disp-"),
}
_cbv_cache: dict[tuple[str, str], str] = {}


def cbv_urn(value: str | None, kind: str) -> str | None:
    """Normalise a bizStep (``kind="bizstep"``) or disposition (``"disp"``) to its CBV URN.

    Examples
    --------
    >>> cbv_urn("shipping", "bizstep")
    'urn:epcglobal:cbv:bizstep:shipping'
    >>> cbv_urn("https://ref.gs1.org/cbv/Disp-in_transit", "disp")
    'urn:epcglobal:cbv:disp:in_transit'
    >>> cbv_urn("urn:example:step:weld", "bizstep")
    'urn:example:step:weld'
    """
    if value is None:
        return None
    key = (value, kind)
    out = _cbv_cache.get(key)
    if out is None:
        v = value.strip()
        out = v or None
        if v and ":" not in v:
            out = f"urn:epcglobal:cbv:{kind}:{v}"
        elif v:
            low = v.lower()
            for prefix in _CBV_WEB[kind]:
                if low.startswith(prefix):
                    out = f"urn:epcglobal:cbv:{kind}:{v[len(prefix):]}"
                    break
        if len(_cbv_cache) > 10_000:
            _cbv_cache.clear()
        _cbv_cache[key] = out
    return out


def _gs1_term(value):
    if isinstance(value, str):
        for prefix in GS1_VOC_PREFIXES:
            if value.startswith(prefix):
                return value[len(prefix):]
    return value


def _sensor_value(key: str, value):
    """Type a sensor attribute the way EPCIS 2.0 JSON types it."""
    if key in SENSOR_NUMBERS:
        # XML "26" and JSON 26 both become 26.0, so the two formats give the same JSON text;
        # NaN / infinity stay text (JSON has no literal for them)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                return value
            return number if math.isfinite(number) else value
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    if key == "booleanValue" and isinstance(value, str):
        return {"true": True, "1": True, "false": False, "0": False}.get(value.strip(), value)
    if key in ("type", "exception"):
        return _gs1_term(value)
    return value


def _sensor_json(elements: list[dict]) -> str:
    return json.dumps(elements, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _finish(event_type, event_time, read_point, epcs, empty_epc, carried, action, biz_step,
            disposition, biz_location, sensors, source) -> list[dict]:
    """Shared validation of one event record (XML and JSON); raises :class:`_Reject`."""
    if not event_time:
        raise _Reject("missing_event_time", f"{event_type} without eventTime")
    try:
        utc = utc_millis(event_time)
    except (ValueError, OverflowError) as err:
        raise _Reject("bad_timestamp", f"eventTime {event_time!r}: {err}") from None
    if not read_point:
        raise _Reject("missing_read_point", f"{event_type} without readPoint id")
    if empty_epc:
        raise _Reject("missing_epc", f"{event_type} has an <epc> with no value")
    if not epcs:
        what = ", ".join(carried) or "nothing"
        raise _Reject("no_instance_epc",
                      f"{event_type} has no instance-level EPC (it carries: {what}); "
                      "class-level quantities and parentID are not objects")
    if biz_step is not None:
        biz_step = _cbv_cache.get((biz_step, "bizstep")) or cbv_urn(biz_step, "bizstep")
    if disposition is not None:
        disposition = _cbv_cache.get((disposition, "disp")) or cbv_urn(disposition, "disp")
    return [
        {OID: epc, READ_POINT: read_point, EVENT_TIME: utc, ACTION: action, BIZ_STEP: biz_step,
         DISPOSITION: disposition, BIZ_LOCATION: biz_location, EVENT_TYPE: event_type,
         SENSOR_REPORTS: sensors, SOURCE: source}
        for epc in epcs
    ]


# -- XML ------------------------------------------------------------------------------------


def _text(elem) -> str | None:
    t = elem.text
    if t is None:
        return None
    t = t.strip()
    return t or None


def _attr_name(elem, key: str) -> str:
    if key[0] != "{":
        return key
    ns, local = key[1:].split("}", 1)
    for prefix, uri in elem.nsmap.items():
        if uri == ns and prefix:
            return f"{prefix}:{local}"
    return local


def _xml_attrs(elem) -> dict:
    return {(k := _attr_name(elem, key)): _sensor_value(k, v) for key, v in elem.attrib.items()}


def _xml_sensors(elem) -> list[dict]:
    out = []
    for element in elem:
        if element.tag != "sensorElement":
            continue
        meta, reports = {}, []
        for part in element:
            if part.tag == "sensorMetadata":
                meta = _xml_attrs(part)
            elif part.tag == "sensorReport":
                reports.append(_xml_attrs(part))
        out.append({"sensorMetadata": meta, "sensorReport": reports})
    return out


def _xml_event(elem, event_type: str, source: str) -> list[dict]:
    """One XML event element -> its flat events; raises :class:`_Reject`.

    The hot path of the parser: one pass of tag dispatch over the direct children, text read
    inline (EPCIS 1.2 ``extension`` / ``baseExtension`` children are appended and read too).
    """
    event_time = read_point = action = biz_step = disposition = biz_location = sensors = None
    epcs: list[str] = []
    carried: list[str] = []
    empty_epc = False
    items = None
    for child in elem:
        tag = child.tag
        if tag == "eventTime":
            event_time = child.text
        elif tag in EPC_LISTS:
            for epc in child:
                if epc.tag == "epc":
                    value = epc.text
                    value = value.strip() if value else None
                    if value:
                        epcs.append(value)
                    else:
                        empty_epc = True
        elif tag == "readPoint":
            for part in child:
                if part.tag == "id":
                    read_point = part.text
                    read_point = read_point.strip() if read_point else None
        elif tag == "action":
            action = child.text
        elif tag == "bizStep":
            biz_step = child.text
        elif tag == "disposition":
            disposition = child.text
        elif tag == "bizLocation":
            for part in child:
                if part.tag == "id":
                    biz_location = part.text
                    biz_location = biz_location.strip() if biz_location else None
        elif tag == "sensorElementList":
            sensors = _sensor_json(_xml_sensors(child))
        elif tag in QUANTITY_LISTS:
            carried.append(f"{sum(1 for q in child if q.tag == 'quantityElement')} "
                           f"quantityElement(s) in {tag}")
        elif tag == "parentID":
            carried.append(f"parentID {_text(child)}")
        elif tag in _WRAPPERS:
            if items is None:
                items = []
            items.append(child)
    # EPCIS 1.2 extension points (rare): quantity lists, errorDeclaration, nested extensions
    while items:
        for child in items.pop():
            tag = child.tag
            if tag in QUANTITY_LISTS:
                carried.append(f"{sum(1 for q in child if q.tag == 'quantityElement')} "
                               f"quantityElement(s) in {tag}")
            elif tag in _WRAPPERS:
                items.append(child)
    if action is not None:
        action = action.strip() or None
    if not epcs and sensors is not None:
        carried.append("sensorElementList")
    return _finish(event_type, event_time, read_point, epcs, empty_epc, carried, action,
                   biz_step, disposition, biz_location, sensors, f"{source}:{elem.sourceline}")


def _local(tag) -> str | None:
    if not isinstance(tag, str):
        return None  # comment or processing instruction
    return tag.rsplit("}", 1)[-1]


def _leftovers(container, source: str, quarantine: list, current=None) -> bool:
    """Quarantine unread elements of an EventList (or its 1.2 extension wrapper) before ``current``.

    ``current`` is the event element being read; the parser may already have built elements
    after it, which are not looked at yet. Each leftover is marked read. Returns True when
    ``current`` was reached.
    """
    for child in container:
        if child is current:
            return True
        tag = child.tag
        if not isinstance(tag, str) or tag == _DONE:
            continue
        if tag == "extension" and container.tag == "EventList":
            if _leftovers(child, source, quarantine, current):
                return True
            continue
        quarantine.append(_quarantine(
            f"{source}:{child.sourceline}", "unsupported_event",
            f"unsupported event element {tag!r} in EventList"))
        child.tag = _DONE
    return False


def _root_problem(root) -> tuple[str, str] | None:
    tag = root.tag
    ns = tag[1:].split("}", 1)[0] if tag.startswith("{") else ""
    if ns not in XML_NAMESPACES:
        return "wrong_namespace", f"root element {tag!r} is not in an EPCIS namespace"
    if _local(tag) not in ROOT_NAMES:
        return "unknown_format", f"root element {tag!r} is not an EPCISDocument"
    return None


def _syntax_reason(err) -> str:
    msg = str(err)
    if "UTF-8" in msg or "encoding" in msg.lower() or "Char 0x" in msg or "CData" in msg:
        return "binary"
    return "malformed_xml"


def _parse_xml(data: bytes, source: str) -> tuple[list[dict], list[dict]]:
    events: list[dict] = []
    quarantine: list[dict] = []
    it = etree.iterparse(
        io.BytesIO(data), events=("end",), tag=EVENT_TYPES, resolve_entities=False,
        no_network=True, load_dtd=False, huge_tree=True, remove_blank_text=True)
    checked = False
    try:
        for _, elem in it:
            parent = elem.getparent()
            if not checked:
                checked = True
                problem = _root_problem(elem.getroottree().getroot())
                if problem:
                    return [], [_quarantine(source, *problem)]
            if parent is None:
                continue
            if parent.tag == "EventList":
                event_list = parent
                # normally the only sibling before elem is the previous event, already read
                before = parent.index(elem)
                if before > 1 or (before == 1 and parent[0].tag != _DONE):
                    _leftovers(event_list, source, quarantine, elem)
            elif parent.tag == "extension" and parent.getparent() is not None and (
                    parent.getparent().tag == "EventList"):
                event_list = parent.getparent()  # EPCIS 1.2: EventList/extension/Transformation
                _leftovers(event_list, source, quarantine, elem)
            else:
                continue  # an event-named element elsewhere (e.g. in a vendor extension)
            try:
                events.extend(_xml_event(elem, elem.tag, source))
            except _Reject as rej:
                quarantine.append(_quarantine(f"{source}:{elem.sourceline}", rej.reason,
                                              rej.detail))
            # free the memory of everything read so far (the parser may be ahead of elem)
            elem.clear(keep_tail=True)
            elem.tag = _DONE
            del parent[:parent.index(elem)]
            if parent is not event_list:
                del event_list[:event_list.index(parent)]
    except etree.XMLSyntaxError as err:
        line = err.lineno
        where = f"{source}:{line}" if line else source
        detail = f"{err}; {len(events)} flat event(s) before the error kept"
        quarantine.append(_quarantine(where, _syntax_reason(err), detail))
        return events, quarantine
    root = it.root
    if root is None:
        quarantine.append(_quarantine(source, "malformed_xml", "no root element"))
        return events, quarantine
    if not checked:
        problem = _root_problem(root)
        if problem:
            return [], [_quarantine(source, *problem)]
    event_lists = list(root.iter("EventList"))
    for event_list in event_lists:
        _leftovers(event_list, source, quarantine)
    if not event_lists:
        # EPCIS event elements are unqualified; a namespaced EventList is not read, but counted
        for event_list in root.iter("{*}EventList"):
            quarantine.append(_quarantine(
                f"{source}:{event_list.sourceline}", "wrong_namespace",
                f"{event_list.tag} is namespace-qualified (EPCIS EventList and events are "
                f"unqualified); its {len(event_list)} child element(s) were not read"))
    return events, quarantine


# -- XML fast path ----------------------------------------------------------------------------
# Machine-written EPCIS (simulators, middleware) is a long run of plain ObjectEvents. For such a
# document a regular grammar over the decoded text gives the same rows as lxml at about twice
# the speed. The grammar admits only well-formed, entity-free, comment-free XML in one EPCIS
# namespace without a default namespace; anything else (other event types, extensions,
# attributes, a header, a syntax error, ...) makes :func:`_parse_xml_fast` return None and the
# whole document goes through :func:`_parse_xml`, which stays the reference (tests compare both).

_WS = r"[ \t\r\n]*"
_TXT = r"[^<>&\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]*"
_FAST_HEAD = re.compile(
    r"[ \t\r\n]*(?:<\?xml(?P<decl>[^>?]*)\?>)?" + _WS
    + r"<(?:(?P<prefix>[A-Za-z_][\w.-]*):)?EPCISDocument(?P<attrs>(?:[ \t\r\n][^<>]*)?)>" + _WS
    + r"<EPCISBody>" + _WS + r"<EventList>")
_FAST_ATTR = re.compile(r"""([\w:.-]+)[ \t\r\n]*=[ \t\r\n]*(?:"([^"<&]*)"|'([^'<&]*)')""")
_FAST_EVENT = re.compile(
    _WS + r"<ObjectEvent>" + _WS
    + rf"(?:<eventTime>({_TXT})</eventTime>{_WS})?"
    + rf"(?:<recordTime>{_TXT}</recordTime>{_WS})?"
    + rf"(?:<eventTimeZoneOffset>{_TXT}</eventTimeZoneOffset>{_WS})?"
    + rf"(?:<eventID>{_TXT}</eventID>{_WS})?"
    + rf"(?:<epcList>((?:{_WS}<epc>{_TXT}</epc>)*){_WS}</epcList>{_WS}|<epcList/>{_WS})?"
    + rf"(?:<action>({_TXT})</action>{_WS})?"
    + rf"(?:<bizStep>({_TXT})</bizStep>{_WS})?"
    + rf"(?:<disposition>({_TXT})</disposition>{_WS})?"
    + rf"(?:<readPoint>{_WS}<id>({_TXT})</id>{_WS}</readPoint>{_WS})?"
    + rf"(?:<bizLocation>{_WS}<id>({_TXT})</id>{_WS}</bizLocation>{_WS})?"
    + r"</ObjectEvent>")
_FAST_EPC = re.compile(rf"<epc>({_TXT})</epc>")
_LONE_CR = re.compile(r"\r(?!\n)")


def _parse_xml_fast(data: bytes, source: str) -> tuple[list[dict], list[dict]] | None:
    """Plain-ObjectEvent documents -> the same result as :func:`_parse_xml`; None if not plain."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    head = _FAST_HEAD.match(text)
    if head is None or "\r" in text and _LONE_CR.search(text):
        return None
    decl = head.group("decl")
    if decl and "encoding" in decl and not re.search(r"encoding\s*=\s*[\"']utf-8[\"']", decl,
                                                     re.IGNORECASE):
        return None
    prefix = head.group("prefix")
    namespaces = {}
    attrs = head.group("attrs")
    for match in _FAST_ATTR.finditer(attrs):
        name, value = match.group(1), match.group(2) if match.group(2) is not None else \
            match.group(3)
        if name == "xmlns":
            return None  # a default namespace would qualify the event elements
        if name.startswith("xmlns:"):
            namespaces[name[6:]] = value
    if _FAST_ATTR.sub("", attrs).strip(" \t\r\n"):
        return None
    if prefix is None or namespaces.get(prefix) not in XML_NAMESPACES[:2]:
        return None
    events: list[dict] = []
    quarantine: list[dict] = []
    pos = head.end()
    line, line_pos = 1, 0
    match_event = _FAST_EVENT.match
    find_epcs = _FAST_EPC.findall
    match = match_event(text, pos)
    while match is not None:
        start = text.index("<ObjectEvent>", pos)
        line += text.count("\n", line_pos, start)
        line_pos = start
        event_time, epc_list, action, biz_step, disposition, read_point, biz_location = \
            match.groups()
        epcs, empty_epc = [], False
        if epc_list:
            for epc in find_epcs(epc_list):
                epc = epc.strip()
                if epc:
                    epcs.append(epc)
                else:
                    empty_epc = True
        try:
            events.extend(_finish(
                "ObjectEvent", event_time, read_point.strip() if read_point else None, epcs,
                empty_epc, [], action.strip() or None if action else None, biz_step,
                disposition, biz_location.strip() or None if biz_location else None, None,
                f"{source}:{line}"))
        except _Reject as rej:
            quarantine.append(_quarantine(f"{source}:{line}", rej.reason, rej.detail))
        pos = match.end()
        match = match_event(text, pos)
    tail = re.compile(_WS + "</EventList>" + _WS + "</EPCISBody>" + _WS
                      + f"</{prefix}:EPCISDocument>" + _WS + r"\Z")
    if tail.match(text, pos) is None:
        return None
    return events, quarantine


# -- JSON -----------------------------------------------------------------------------------


def _json_id(value, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Reject("malformed_json", f"{field} id is not a string: {value!r}")
    return value.strip() or None


def _json_str(event: dict, key: str) -> str | None:
    value = event.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Reject("malformed_json", f"{key} is not a string: {value!r}")
    return value.strip() or None


def _json_sensors(value) -> str:
    if not isinstance(value, list):
        raise _Reject("malformed_json", "sensorElementList is not a list")
    out = []
    for element in value:
        if not isinstance(element, dict):
            raise _Reject("malformed_json", "sensorElement is not an object")
        meta = element.get("sensorMetadata") or {}
        reports = element.get("sensorReport") or []
        if not isinstance(meta, dict) or not isinstance(reports, list) or not all(
                isinstance(r, dict) for r in reports):
            raise _Reject("malformed_json", "sensorMetadata/sensorReport of the wrong type")
        out.append({
            "sensorMetadata": {k: _sensor_value(k, v) for k, v in meta.items()},
            "sensorReport": [{k: _sensor_value(k, v) for k, v in r.items()} for r in reports],
        })
    return _sensor_json(out)


def _json_event(event, source: str) -> list[dict]:
    """One JSON event object -> its flat events; raises :class:`_Reject`."""
    if not isinstance(event, dict):
        raise _Reject("malformed_json", f"event is a {type(event).__name__}, not an object")
    event_type = event.get("type")
    if event_type not in EVENT_TYPES:
        raise _Reject("unsupported_event", f"unsupported event type {event_type!r}")
    epcs: list[str] = []
    empty_epc = False
    for key in EPC_LISTS:
        values = event.get(key)
        if values is None:
            continue
        if not isinstance(values, list):
            raise _Reject("malformed_json", f"{key} is not a list")
        for value in values:
            if not isinstance(value, str):
                raise _Reject("malformed_json", f"{key} holds a non-string {value!r}")
            value = value.strip()
            if value:
                epcs.append(value)
            else:
                empty_epc = True
    carried = [f"{len(event[k]) if isinstance(event[k], list) else '?'} quantityElement(s) in {k}"
               for k in QUANTITY_LISTS if k in event]
    if event.get("parentID") is not None:
        carried.append(f"parentID {event['parentID']}")
    sensors = event.get("sensorElementList")
    sensors = None if sensors is None else _json_sensors(sensors)
    if sensors is not None and not epcs:
        carried.append("sensorElementList")
    event_time = event.get("eventTime")
    if event_time is not None and not isinstance(event_time, str):
        raise _Reject("bad_timestamp", f"eventTime is not a string: {event_time!r}")
    return _finish(event_type, event_time, _json_id(event.get("readPoint"), "readPoint"), epcs,
                   empty_epc, carried, _json_str(event, "action"), _json_str(event, "bizStep"),
                   _json_str(event, "disposition"),
                   _json_id(event.get("bizLocation"), "bizLocation"), sensors, source)


def _json_event_list(doc):
    if not isinstance(doc, dict):
        return None
    if doc.get("type") in EVENT_TYPES:
        return [doc]
    body = doc.get("epcisBody")
    if not isinstance(body, dict):
        return None
    if "eventList" in body:
        return body["eventList"]
    results = body.get("queryResults")
    if isinstance(results, dict) and isinstance(results.get("resultsBody"), dict):
        return results["resultsBody"].get("eventList")
    return None


def _parse_json(data: bytes, source: str) -> tuple[list[dict], list[dict]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        return [], [_quarantine(source, "binary", f"invalid UTF-8: {err}")]
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        return [], [_quarantine(source, "malformed_json", str(err))]
    except RecursionError:
        return [], [_quarantine(source, "malformed_json", "nesting too deep")]
    event_list = _json_event_list(doc)
    if event_list is None:
        return [], [_quarantine(source, "unknown_format",
                                "JSON without epcisBody.eventList (not an EPCIS document)")]
    if not isinstance(event_list, list):
        return [], [_quarantine(source, "malformed_json", "eventList is not a list")]
    events: list[dict] = []
    quarantine: list[dict] = []
    for index, event in enumerate(event_list):
        where = f"{source}#{index}"
        try:
            events.extend(_json_event(event, where))
        except _Reject as rej:
            quarantine.append(_quarantine(where, rej.reason, rej.detail))
    return events, quarantine


# -- entry points ---------------------------------------------------------------------------


def _looks_binary(head: bytes) -> bool:
    if b"\x00" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start < len(head) - 3  # a multi-byte character cut at the end is fine
    return False


def parse_document(data: bytes, source: str, max_bytes: int = DEFAULT_MAX_BYTES
                   ) -> tuple[list[dict], list[dict]]:
    """Parse one EPCIS document into flat events and quarantine records; never raises on input.

    Parameters
    ----------
    data : bytes
        The whole document (XML or JSON / JSON-LD, detected from the first non-space byte).
    source : str
        Identity of the document (a path, or ``topic/partition/offset``); every output row's
        ``source`` starts with it.
    max_bytes : int
        Documents longer than this become one ``too_large`` quarantine record.

    Returns
    -------
    events : list of dict
        One per instance-level EPC, keys :data:`soads.schema.EVENT_COLUMNS`.
    quarantine : list of dict
        Keys :data:`soads.schema.QUARANTINE_COLUMNS`; ``reason`` in :data:`soads.schema.REASONS`.

    Examples
    --------
    >>> doc = (b'<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2"><EPCISBody>'
    ...        b'<EventList><ObjectEvent><eventTime>2024-01-01T09:00:00+09:00</eventTime>'
    ...        b'<epcList><epc>urn:epc:id:sgtin:1.2.3</epc></epcList><action>OBSERVE</action>'
    ...        b'<bizStep>shipping</bizStep><readPoint><id>rp1</id></readPoint>'
    ...        b'</ObjectEvent></EventList></EPCISBody></epcis:EPCISDocument>')
    >>> events, quarantine = parse_document(doc, "doc.xml")
    >>> [(e["oid"], e["read_point"], e["event_time"], e["biz_step"], e["source"]) for e in events]
    [('urn:epc:id:sgtin:1.2.3', 'rp1', '2024-01-01T00:00:00.000Z', \
'urn:epcglobal:cbv:bizstep:shipping', 'doc.xml:1')]
    >>> parse_document(b"\\x00\\x01garbage", "x.bin")[1][0]["reason"]
    'binary'
    """
    if data is None:
        return [], [_quarantine(source, "unreadable", "no content")]
    if len(data) > max_bytes:
        return [], [_quarantine(source, "too_large",
                                f"document of {len(data)} bytes exceeds max_bytes={max_bytes}")]
    head = data[:4096]
    found = _NON_SPACE.search(data, 3 if data.startswith(b"\xef\xbb\xbf") else 0)
    if found is None:
        return [], [_quarantine(source, "unknown_format", "empty document")]
    start = data[found.start():found.start() + 32]
    first = start[:1]
    if first == b"<" or head.startswith((b"\xff\xfe", b"\xfe\xff")):
        result = _parse_xml_fast(data, source) if first == b"<" else None
        events, quarantine = result if result is not None else _parse_xml(data, source)
    elif first == b"{":
        events, quarantine = _parse_json(data, source)
    elif _looks_binary(head):
        return [], [_quarantine(source, "binary", "binary content (not text)")]
    else:
        return [], [_quarantine(source, "unknown_format",
                                f"neither XML nor JSON: starts with {start[:20]!r}")]
    if quarantine:
        logger.debug("%s: %d flat events, %d quarantined", source, len(events), len(quarantine))
    return events, quarantine


def parse_file(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[list[dict], list[dict]]:
    """Read ``path`` and :func:`parse_document` it with ``source=path``.

    Raises OSError when the file is missing or unreadable (the caller reports it). At most
    ``max_bytes + 1`` bytes are read, so an oversized file is quarantined without loading it.
    """
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            size = os.fstat(f.fileno()).st_size
            return [], [_quarantine(path, "too_large",
                                    f"document of {size} bytes exceeds max_bytes={max_bytes}")]
    return parse_document(data, path, max_bytes)
