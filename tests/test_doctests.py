"""The docstring examples of the pure cores are exact outputs: run them."""
import doctest
import importlib

import pytest

MODULES = ["soads.config", "soads.sequences", "soads.dependencies", "soads.evaluate",
           "soads.conformance", "soads.sensor.streaming", "soads.sensor.skab"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
