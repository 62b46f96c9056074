"""Shared fixtures: one session-scoped ``spark`` (local[2], 2 shuffle partitions)."""
import os
import sys

import pytest

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
EPCIS_EXAMPLES = os.path.abspath(os.path.join(SHARED, "epcis-examples"))


@pytest.fixture(scope="session")
def spark():
    from soads.config import SparkConf
    from soads.session import build

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = build(SparkConf(master="local[2]", shuffle_partitions=2, driver_memory="2g"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def epcis_examples():
    """Path of the official GS1 examples (../shared/epcis-examples); fails if they are missing."""
    assert os.path.isdir(EPCIS_EXAMPLES), f"missing {EPCIS_EXAMPLES}"
    return EPCIS_EXAMPLES
