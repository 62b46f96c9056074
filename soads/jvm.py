"""The project's JVM operator (``soads/java/*.java``): built on first use, cached by content.

:mod:`soads.stream.state` runs the Relational Dependency Updater's per-oid step either as a
Python state function or as the Java port in ``soads/java/RelationUpdater.java``
(``stream.state_operator``). The Java sources are compiled here with ``javac`` against the installed pyspark's jars into
``<jars>/soads-jvm-<hash>.jar`` (hash of the sources and the Spark version), so a change of either
builds a new jar and a warm machine builds nothing. spark-submit users pass the jar with
``--jars $(python -m soads.jvm)``.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

logger = logging.getLogger(__name__)

SOURCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "java")
DEFAULT_JARS = "~/.cache/soads/jars"


class BuildError(RuntimeError):
    """The JVM operator could not be compiled (no JDK, or a compiler error)."""


def _spark_jars() -> str:
    import pyspark

    return os.path.join(os.path.dirname(pyspark.__file__), "jars")


def jar_path(jars_dir: str = DEFAULT_JARS) -> str:
    """Where the jar for these sources and this pyspark lives (it may not exist yet)."""
    import pyspark

    h = hashlib.sha1(pyspark.__version__.encode())
    for src in sorted(glob.glob(os.path.join(SOURCES, "*.java"))):
        with open(src, "rb") as fh:
            h.update(os.path.basename(src).encode() + b"\0" + fh.read())
    return os.path.join(os.path.expanduser(jars_dir), f"soads-jvm-{h.hexdigest()[:12]}.jar")


def build(jars_dir: str = DEFAULT_JARS) -> str:
    """The jar's path, compiling it first when missing.

    Raises
    ------
    BuildError
        When ``javac`` is missing (a JRE without a JDK) or the sources do not compile.
    """
    target = jar_path(jars_dir)
    if os.path.exists(target):
        return target
    javac = shutil.which("javac")
    if javac is None:
        raise BuildError("javac not found: the JVM state operator needs a JDK (17+); install one "
                         "or set stream.state_operator=python")
    sources = sorted(glob.glob(os.path.join(SOURCES, "*.java")))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        classes = os.path.join(tmp, "classes")
        cmd = [javac, "--release", "17", "-nowarn", "-cp", os.path.join(_spark_jars(), "*"),
               "-d", classes, *sources]
        logger.info("compiling %d Java source(s) -> %s", len(sources), target)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"javac failed:\n{done.stderr.strip()}")
        partial = target + f".{os.getpid()}.tmp"
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as jar:
            jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: soads.jvm\n\n")
            for root, _, files in os.walk(classes):
                for f in sorted(files):
                    full = os.path.join(root, f)
                    jar.write(full, os.path.relpath(full, classes))
        os.replace(partial, target)  # atomic: a concurrent build of the same sources is harmless
    return target


def main(argv=None) -> int:
    """``python -m soads.jvm``: build if needed and print the jar's path (for ``--jars``)."""
    try:
        print(build())
    except BuildError as e:
        print(f"soads.jvm: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
