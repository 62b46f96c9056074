"""The test suite stands alone: a clone with nothing beside it runs it. No test reads the data
folder beside the clone (``../shared``: GS1 examples, SKAB, labelled process logs) or any file
by an absolute path; their own inputs are under tests/data (see the README there). Evaluations
on SKAB and on labelled process logs are benchmark/CLI commands taking the data folder as an
argument."""
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))

# a reference to the data folder beside the clone, whatever the spelling
_OUTSIDE = re.compile(r"""\.\./shared|[/\\]shared[/\\]|["']shared["']|SHARED\b|epcis-examples"""
                      r"""|skab[/\\]data|process-logs""")
# a string literal holding an absolute path (quoted, starting with one slash and a name)
_ABSOLUTE = re.compile(r"""["'](/[A-Za-z0-9_.-]+(?:/[^"'\s]*)?)["']""")


def outside_references(text: str) -> list[str]:
    """What in ``text`` points outside the clone: references to the shared data folder, and
    absolute path literals naming something that exists on this machine (a path a test would
    read; placeholder values such as a root for a config that is never touched do not exist)."""
    found = [m.group(0) for m in _OUTSIDE.finditer(text)]
    found += [m.group(1) for m in _ABSOLUTE.finditer(text) if os.path.exists(m.group(1))]
    return found


def test_the_checker_sees_what_the_suite_used_to_do():
    # the three ways tests read ../shared before they carried their own data
    assert outside_references('SHARED = os.path.join(ROOT, "..", "shared")') == [
        "SHARED", '"shared"']
    assert outside_references('p = os.path.join(here, "..", "..", "shared", "epcis-examples")')
    assert outside_references(f'SKAB_DIR = "{HERE}"') == [HERE]
    assert {"/shared/", "skab/data"} <= set(outside_references('d = "/work/shared/skab/data"'))
    assert outside_references('root = "/no/such/placeholder"') == []
    assert outside_references('DATA = os.path.join(os.path.dirname(__file__), "data")') == []


def test_no_file_under_tests_points_outside_the_clone():
    me = os.path.abspath(__file__)
    offenders = {}
    for folder, _, files in os.walk(HERE):
        for name in files:
            path = os.path.join(folder, name)
            if path == me or "__pycache__" in folder:
                continue
            with open(path, "rb") as fh:
                text = fh.read().decode("utf-8", errors="replace")
            found = outside_references(text)
            if found:
                offenders[os.path.relpath(path, HERE)] = found
    assert offenders == {}


def test_the_gs1_examples_are_in_the_clone(epcis_examples):
    assert os.path.commonpath([epcis_examples, HERE]) == HERE
    assert sorted(os.listdir(epcis_examples)) == ["jsonld", "xml"]
