"""soads.cases: the case reader of ``soads score --input`` (JSON lines, XES, gzip), its errors."""
import gzip
import os

import pytest

from soads.cases import Case, CaseError, read_cases

DATA = os.path.join(os.path.dirname(__file__), "data", "cases")
FORMATS = ("small.jsonl", "small.jsonl.gz", "small.xes", "small.xes.gz")

T = "2024-03-04T{}:00.000+01:00"
# what every format of tests/data/cases/small.* reads to (worked out by hand from the files)
SMALL = [
    ("c1", ["A", "B", "C"],
     [{"org:resource": "R1", "cost": "10", "rush": "true"},
      {"org:resource": "R2", "cost": "1.5", "note": "x"},  # XES: meta-attribute, <list> left out
      {"org:resource": "R1", "ref": "a1b2", "due": "2024-03-05T00:00:00.000+01:00"}],
     [T.format("08:00"), T.format("08:05"), T.format("09:00")]),
    ("2", ["A", "C"], None, None),  # JSON: the integer oid 2; XES: no concept:name, trace 2
    ("c3", [], None, None),  # an empty case is read, not refused (soads score states its row)
    ("c4", ["A", "B", "C"], [{"org:resource": "R1"}, {}, {}],  # JSON null = absent in XES
     [T.format("10:00"), T.format("10:10"), T.format("10:20")]),
]


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_reads_to_the_same_cases(name):
    cases = list(read_cases(os.path.join(DATA, name)))
    assert [(c.oid, c.sequence, c.attributes, c.times) for c in cases] == SMALL
    assert all(isinstance(c, Case) for c in cases)


def test_random_logs_read_back_alike_from_json_lines_and_xes(tmp_path):
    # seeded random cases with awkward text (markup, quotes, non-ASCII, blanks), written as JSON
    # lines and as XES (values escaped by the XML writer), each plain and gzipped
    import json
    import random
    from xml.sax.saxutils import quoteattr

    rnd = random.Random(3)
    words = ["A", "B c", "<x>", "a&b", 'say "hi"', "it's", "Müller", "日本", " pad "]
    want = []
    for i in range(60):
        n = rnd.choice([0, 1, 2, 5])
        seq = [rnd.choice(words) for _ in range(n)]
        attrs = [{k: rnd.choice(words) for k in rnd.sample(["org:resource", "x&y", "k"], 2)}
                 for _ in range(n)] if n and rnd.random() < 0.7 else None
        times = [f"2024-01-01T00:00:{j:02d}Z" for j in range(n)] if n and i % 2 else None
        want.append((f"case {i} <{rnd.choice(words)}>", seq, attrs, times))
    jl = "".join(json.dumps({"oid": o, "sequence": s, "attributes": a, "times": t}) + "\n"
                 for o, s, a, t in want)
    xes = ["<?xml version='1.0' encoding='UTF-8'?>\n<log xmlns='http://www.xes-standard.org/'>"]
    for o, s, a, t in want:
        xes.append(f"<trace><string key='concept:name' value={quoteattr(o)}/>")
        for j, x in enumerate(s):
            xes.append(f"<event><string key='concept:name' value={quoteattr(x)}/>")
            if t:
                xes.append(f"<date key='time:timestamp' value='{t[j]}'/>")
            for k, v in (a[j] if a else {}).items():
                xes.append(f"<string key={quoteattr(k)} value={quoteattr(v)}/>")
            xes.append("</event>")
        xes.append("</trace>\n")
    xes.append("</log>\n")
    files = {"r.jsonl": jl, "r.xes": "".join(xes)}
    for name, text in list(files.items()):
        (tmp_path / name).write_text(text, encoding="utf-8")
        (tmp_path / (name + ".gz")).write_bytes(gzip.compress(text.encode("utf-8")))
    for name in ("r.jsonl", "r.jsonl.gz", "r.xes", "r.xes.gz"):
        got = [(c.oid, c.sequence, c.attributes, c.times) for c in read_cases(str(tmp_path / name))]
        assert got == want, name


def test_where_names_the_line_or_the_trace():
    jl = list(read_cases(os.path.join(DATA, "small.jsonl")))
    assert [(c.number, c.where) for c in jl] == [
        (1, "line 1"), (2, "line 2"), (4, "line 4"), (5, "line 5")]  # line 3 is blank
    xes = list(read_cases(os.path.join(DATA, "small.xes.gz")))
    assert [(c.number, c.where) for c in xes] == [
        (1, "trace 1 (line 16)"), (2, "trace 2 (line 52)"), (3, "trace 3 (line 60)"),
        (4, "trace 4 (line 63)")]


def test_xes_without_namespace_and_with_one_read_alike(tmp_path):
    body = ('<trace><string key="concept:name" value="t"/><event>'
            '<string key="concept:name" value="A"/><int key="n" value="7"/></event></trace>')
    bare, ns = tmp_path / "bare.xes", tmp_path / "ns.xes"
    bare.write_text(f"<log>{body}</log>")
    ns.write_text(f'<log xmlns="http://www.xes-standard.org/">{body}</log>')
    want = [("t", ["A"], [{"n": "7"}], None)]
    for p in (bare, ns):
        assert [(c.oid, c.sequence, c.attributes, c.times) for c in read_cases(str(p))] == want


def test_xes_log_without_traces_has_no_cases(tmp_path):
    p = tmp_path / "empty.xes"
    p.write_text('<?xml version="1.0"?><log xes.version="1849-2016"/>')
    assert list(read_cases(str(p))) == []


def test_xes_reads_one_trace_at_a_time(tmp_path):
    # a log of 2,000 traces: read lazily, each case out before the next trace is parsed
    p = tmp_path / "many.xes.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("<log>")
        for i in range(2000):
            fh.write(f'<trace><string key="concept:name" value="t{i}"/><event>'
                     f'<string key="concept:name" value="A{i % 3}"/></event></trace>')
        fh.write("</log>")
    it = read_cases(str(p))
    first = next(it)
    assert (first.oid, first.sequence) == ("t0", ["A0"])
    rest = list(it)
    assert len(rest) == 1999 and rest[-1].oid == "t1999" and rest[-1].sequence == ["A1"]


def _error(tmp_path, name, content: bytes | str) -> str:
    p = tmp_path / name
    if isinstance(content, str):
        content = content.encode()
    p.write_bytes(content)
    with pytest.raises(CaseError) as e:
        list(read_cases(str(p)))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(p))
    return msg[len(str(p)):]


GOOD = '{"oid": "ok", "sequence": ["A"]}\n'


@pytest.mark.parametrize("line, reason", [
    ('{"oid": "a", "sequence": [', ":2: malformed JSON (Expecting value at column 27)"),
    ("[1, 2]",
     ':2: not a case line (need a JSON object {"oid": str, "sequence": [str, ...], ...})'),
    ('{"sequence": ["A"]}', ':2: no "oid"'),
    ('{"oid": null, "sequence": ["A"]}', ':2: no "oid"'),
    ('{"oid": true, "sequence": ["A"]}', ':2: "oid" must be a string, got a boolean'),
    ('{"oid": "a"}', ':2: no "sequence" list'),
    ('{"oid": "a", "sequence": "A B"}', ':2: "sequence" must be a list of strings, got a string'),
    ('{"oid": "a", "sequence": ["A", 3]}',
     ":2: step 1: activity must be a non-empty string, got a number"),
    ('{"oid": "a", "sequence": ["A", null]}',
     ":2: step 1: activity must be a non-empty string, got null"),
    ('{"oid": "a", "sequence": ["A", ""]}',
     ":2: step 1: activity must be a non-empty string, got an empty string"),
    ('{"oid": "a", "sequence": ["A", "B"], "attributes": [{}]}',
     ':2: "attributes" has 1 entry for 2 steps'),
    ('{"oid": "a", "sequence": ["A"], "times": ["t1", "t2"]}',
     ':2: "times" has 2 entries for 1 step'),
    ('{"oid": "a", "sequence": [], "times": ["t1"]}', ':2: "times" has 1 entry for 0 steps'),
    ('{"oid": "a", "sequence": ["A"], "attributes": {"k": "v"}}',
     ':2: "attributes" must be a list of objects, got an object'),
    ('{"oid": "a", "sequence": ["A"], "attributes": ["k=v"]}',
     ":2: step 0: attributes must be an object, got a string"),
    ('{"oid": "a", "sequence": ["A"], "attributes": [{"k": [1]}]}',
     ":2: step 0: attribute 'k' must be a string, number or boolean, got a list"),
    ('{"oid": "a", "sequence": ["A"], "attributes": [{"k": {"x": 1}}]}',
     ":2: step 0: attribute 'k' must be a string, number or boolean, got an object"),
    ('{"oid": "a", "sequence": ["A"], "times": [1709535600]}',
     ":2: step 0: time must be a string, got a number"),
])
def test_bad_json_line_is_one_line_error_naming_file_line_and_reason(tmp_path, line, reason):
    msg = _error(tmp_path, "cases.jsonl", GOOD + line + "\n")
    assert msg.startswith(reason), msg


def test_bad_line_in_a_gzipped_file_names_its_line(tmp_path):
    p = tmp_path / "cases.jsonl.gz"
    p.write_bytes(gzip.compress((GOOD * 3 + '{"oid": "x", "sequence": [1]}\n').encode()))
    with pytest.raises(CaseError, match=r"cases\.jsonl\.gz:4: step 0: activity must be"):
        list(read_cases(str(p)))


def test_numbers_and_booleans_in_attributes_read_as_their_json_text(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"oid": 7, "sequence": ["A", "B"], "attributes": '
                 '[{"n": 85, "f": 1.5, "b": false, "s": "x"}, {"gone": null}]}\n')
    (c,) = read_cases(str(p))
    assert (c.oid, c.attributes) == ("7", [{"n": "85", "f": "1.5", "b": "false", "s": "x"}, {}])


def test_cases_sharing_an_oid_are_kept_each_as_its_own_case(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"oid": "o", "sequence": ["A"]}\n{"oid": "o", "sequence": ["B"]}\n')
    assert [(c.oid, c.sequence, c.number) for c in read_cases(str(p))] == [
        ("o", ["A"], 1), ("o", ["B"], 2)]


def test_unreadable_inputs_are_one_line_errors(tmp_path):
    assert _error(tmp_path, "latin.jsonl", b'{"oid": "\xff", "sequence": []}\n') == \
        ":1: not UTF-8 text (invalid start byte)"
    assert _error(tmp_path, "plain.jsonl.gz", GOOD) == ": cannot read: Not a gzipped file (b'{\"')"
    half = gzip.compress((GOOD * 50).encode())[:40]
    assert _error(tmp_path, "half.jsonl.gz", half).startswith(
        ": cannot read: truncated or corrupt gzip")
    with pytest.raises(CaseError, match=r"nope\.xes: cannot read: No such file or directory"):
        list(read_cases(str(tmp_path / "nope.xes")))


EV = '<event><string key="concept:name" value="A"/></event>'


@pytest.mark.parametrize("doc, reason", [
    ("", ": malformed XES (no element found)"),
    ("<foo/>", ": malformed XES: the root element is <foo>, not <log>"),
    ("<foo><trace/></foo>", ": malformed XES: the root element is <foo>, not <log>"),
    (f"<log><trace>{EV}</trace>\n<trace>{EV}<event>",
     ": line 2 (after trace 1): malformed XES (Premature end of data in tag event"),
    (f"<log><trace>{EV}</trace>\n<trace>{EV}</event></trace></log>",
     ": line 2 (after trace 1): malformed XES (Opening and ending tag mismatch: trace line 2"),
    ("<log><trace><trace/></trace></log>",
     ": line 1: malformed XES: <trace> inside <trace>, not directly in <log>"),
    (f"<log><trace>{EV}</trace>\n<trace>\n<event><int key='n' value='1'/></event></trace></log>",
     ": trace 2 (line 2): event 0 (line 3) has no concept:name (the activity)"),
    ("<log><trace><event><string key='concept:name' value=''/></event></trace></log>",
     ": trace 1 (line 1): event 0 (line 1) has an empty concept:name (the activity)"),
    ("<log><trace><event><string key='concept:name'/></event></trace></log>",
     ": trace 1 (line 1): event 0: <string> attribute without value (line 1)"),
    ("<log><trace><event><string value='A'/></event></trace></log>",
     ": trace 1 (line 1): event 0: <string> attribute without key (line 1)"),
    ("<log><trace><event><string key='concept:name' value='A'/>"
     "<date key='time:timestamp' value='2024-01-01T00:00:00Z'/></event>" + EV + "</trace></log>",
     ": trace 1 (line 1): event 1 has no time:timestamp while 1 of the trace's 2 events have one"),
    ('<!DOCTYPE log [<!ENTITY x SYSTEM "file:///etc/passwd">]><log><trace><event>'
     '<string key="concept:name" value="&x;"/></event></trace></log>',
     ": line 1: malformed XES (Attribute references external entity 'x'"),
])
def test_bad_xes_is_one_line_error_naming_file_trace_and_reason(tmp_path, doc, reason):
    msg = _error(tmp_path, "log.xes", doc)
    assert msg.startswith(reason), msg


def test_truncated_xes_gz_is_one_line_error(tmp_path):
    data = open(os.path.join(DATA, "small.xes.gz"), "rb").read()
    msg = _error(tmp_path, "cut.xes.gz", data[: len(data) // 2])
    assert msg.startswith(": cannot read: truncated or corrupt gzip"), msg
