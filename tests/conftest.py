"""Shared fixtures: one session-scoped ``spark`` (local[2], 2 shuffle partitions, the JVM state
operator's jar)."""
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# The one PYTHONPATH rule of the suite. The venv may be shared by several clones; this clone's
# root goes first on PYTHONPATH here, once, so every subprocess a test starts (jobs/*.py, the CLI,
# spark-submit) and Spark's Python workers import this clone's soads, whatever the editable
# install points at. Tests pass os.environ on (streamtools.job_env) and never set it themselves.
if os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] != ROOT:
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
if sys.path[:1] != [ROOT]:
    sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") != ROOT]
# Jobs started by tests write their pid files (soads.job_status) under $SOADS_CACHE/jobs: a
# private one, so the killed jobs of the suite never show up in the user's `soads jobs`.
import tempfile  # noqa: E402

os.environ["SOADS_CACHE"] = tempfile.mkdtemp(prefix="soads-test-cache-")
# The tests carry their own inputs (tests/data, README there): no file outside the clone is read.
DATA = os.path.join(ROOT, "tests", "data")
EPCIS_EXAMPLES = os.path.join(DATA, "epcis", "gs1")

# The database password is in no committed file: SOADS_DB_PASSWORD, or the file that
# SOADS_DB_PASSWORD_FILE names. Unset, the tests use the development one `make up` wrote (where
# the Makefile points), so pytest run by hand after `make up` reaches MariaDB as `make test` does.
DEV_PASSWORD_FILE = os.path.expanduser("~/.cache/soads/services/mariadb/password")
if not (os.environ.get("SOADS_DB_PASSWORD") or os.environ.get("SOADS_DB_PASSWORD_FILE")) \
        and os.path.isfile(DEV_PASSWORD_FILE):
    os.environ["SOADS_DB_PASSWORD_FILE"] = DEV_PASSWORD_FILE


@pytest.fixture(scope="session")
def spark():
    from soads import jvm
    from soads.config import SparkConf
    from soads.session import build

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    # the JVM state operator of soads.stream.state (compiled on first use, cached by content)
    session = build(SparkConf(master="local[2]", shuffle_partitions=2, driver_memory="2g"),
                    extra={"spark.jars": jvm.build()})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def epcis_examples():
    """Path of the official GS1 example documents (tests/data/epcis/gs1)."""
    assert os.path.isdir(EPCIS_EXAMPLES), f"missing {EPCIS_EXAMPLES}"
    return EPCIS_EXAMPLES


@pytest.fixture(scope="session")
def alertmanager():
    """Base URL of the real Prometheus Alertmanager (``make up``, or ``python -m soads.services
    up alertmanager``), e.g. ``http://127.0.0.1:9095``. Unreachable: fails under CI=true, skips
    elsewhere."""
    from soads import config, services
    from streamtools import require

    conf = config.load([services.DEFAULT_CONF])
    require("alertmanager", lambda: services.check("alertmanager", conf))
    return services.alertmanager_url(conf)
