"""The docstring examples of every soads module are exact outputs: run them all.

The modules are discovered (every module under ``soads/`` whose source holds an example that
is not marked ``+SKIP``), not listed, so a new module's examples run without anyone adding it
here.
"""
import doctest
import importlib
import importlib.util
import pkgutil
import re

import pytest

import soads


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(soads.__path__, "soads."):
        if info.name.endswith(".__main__"):
            continue  # importing it would run it
        with open(importlib.util.find_spec(info.name).origin, encoding="utf-8") as fh:
            if any(not line.rstrip().endswith("# doctest: +SKIP")
                   for line in re.findall(r"^\s*>>> .*$", fh.read(), re.M)):
                names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_discovery_finds_the_modules_with_examples():
    assert {"soads.config", "soads.stream.state", "soads.sensor.streaming"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
