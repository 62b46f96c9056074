"""Jars from Maven Central: the ones a Spark session needs (the Kafka connector), and the
resolver that the service manager uses for the Kafka broker and HBase too.

A jar set is one ``mvn dependency:copy-dependencies`` of a pom under ``conf/maven/`` (one
profile of it, with version properties) into a directory under the jar cache (``[services]
jars``, outside the clone; ``~/.m2`` caches the downloads). A ``.resolved`` stamp holding a
digest of the pom and the properties marks a finished copy, so a warm machine runs no Maven.

Usage (the Kafka connector for ``spark-submit --jars``, like ``python -m soads.jvm``)::

    python -m soads.jars [--conf conf/services.toml]

This module imports neither pyspark nor torch.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
KAFKA_POM = REPO / "conf" / "maven" / "kafka" / "pom.xml"
HBASE_POM = REPO / "conf" / "maven" / "hbase" / "pom.xml"


class JarError(RuntimeError):
    """Maven is missing or could not resolve a jar set."""


def _stamp(pom: Path, profile: str | None, props: Mapping[str, str]) -> str:
    h = hashlib.sha256(pom.read_bytes())
    for k, v in ([("profile", profile)] if profile else []) + sorted(props.items()):
        h.update(f"\0{k}={v}".encode())
    return h.hexdigest()[:16]


def ready(out: Path, pom: Path, profile: str | None = None,
          props: Mapping[str, str] | None = None) -> bool:
    """Whether ``out`` holds a finished copy of this pom, profile and properties."""
    marker = out / ".resolved"
    if marker.is_file():
        return marker.read_text().strip() == _stamp(pom, profile, props or {})
    # a copy made by an older soads (stamped ".complete", without a digest; the directory name
    # carries the version): still valid, and not rebuilt under a service that runs from it
    return (out / ".complete").is_file()


def resolve(pom: Path, out: Path, profile: str | None = None,
            props: Mapping[str, str] | None = None) -> Path:
    """Copy the runtime dependencies of ``pom`` (``profile``, ``-Dk=v`` ``props``) into
    ``out`` once; returns ``out``. Two processes resolving the same set at once both succeed
    (each copies into its own staging directory; the first rename wins)."""
    props = dict(props or {})
    if ready(out, pom, profile, props):
        return out
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarError(f"Maven (mvn) is needed to fetch the jars of {pom}: "
                       "apt-get install maven")
    staging = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    argv = [mvn, "-q", "-B", "-f", str(pom), *(["-P", profile] if profile else []),
            "dependency:copy-dependencies", "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}", *[f"-D{k}={v}" for k, v in props.items()]]
    logger.info("resolving jars: %s", " ".join(argv))
    t0 = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise JarError(f"mvn failed (exit {res.returncode}): {' '.join(argv)}\n"
                       f"{(res.stdout + res.stderr)[-4000:]}")
    (staging / ".resolved").write_text(_stamp(pom, profile, props) + "\n")
    if ready(out, pom, profile, props):  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
        return out
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    logger.info("resolved %d jars into %s in %.1fs", len(list(out.glob("*.jar"))), out,
                time.monotonic() - t0)
    return out


def spark_kafka_jars(connector_version: str, jars_root: str) -> list[str]:
    """Jar paths for Spark's ``spark.jars`` that make ``format("kafka")`` work (the connector
    ``spark-sql-kafka-0-10_2.13``, kafka-clients, commons-pool2, the token provider), fetched
    once into ``<jars_root>/kafka/spark-<connector_version>``.

    The job passes ``[kafka] spark_connector_version`` and ``[services] jars``.
    """
    out = Path(os.path.expanduser(jars_root)) / "kafka" / f"spark-{connector_version}"
    resolve(KAFKA_POM, out, "spark", {"spark.kafka.version": connector_version})
    return sorted(str(p) for p in out.glob("*.jar"))


def main(argv=None) -> int:
    """``python -m soads.jars``: fetch if needed and print the Kafka connector's jars,
    comma-separated (for ``spark-submit --jars``)."""
    from soads import config

    ap = argparse.ArgumentParser(prog="python -m soads.jars", description=main.__doc__)
    ap.add_argument("--conf", action="append", default=None, metavar="TOML",
                    help="the [kafka] and [services] sections (default conf/services.toml)")
    args = ap.parse_args(argv)
    try:
        cfg = config.load(args.conf or [REPO / "conf" / "services.toml"])
        print(",".join(spark_kafka_jars(cfg.kafka.spark_connector_version, cfg.services.jars)))
    except (config.ConfigError, JarError) as e:
        print(f"soads.jars: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
