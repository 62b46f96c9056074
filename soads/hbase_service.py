"""Install, start, check and stop a real Apache HBase (standalone) and its Thrift 1 server.

HBase comes from Maven Central jars (``conf/maven/hbase/pom.xml``, resolved with ``mvn`` into a
cache outside the clone); there is no tarball. One JVM runs ``HMaster`` in standalone mode: the
master, one region server and an embedded ZooKeeper, with data on the local filesystem. A second
JVM runs the Thrift 1 server (thread-pool server, buffered transport, binary protocol: happybase's
defaults). Every socket listens on 127.0.0.1.

Usage::

    python -m soads.hbase_service up       # resolve jars (first time), start, wait until healthy
    python -m soads.hbase_service status   # JSON
    python -m soads.hbase_service down

``up`` is idempotent: when both processes run and the health check passes it does nothing.
The health check connects with happybase, creates the table ``soads_health`` if it is missing and
lists the tables. On a failure the last 30 lines of the log are printed.

Settings (``conf`` dict, all optional): see :data:`DEFAULTS`. Environment variables are read only
by the command line (``SOADS_HBASE_HOME``, ``SOADS_HBASE_JARS``).

This module does not import pyspark.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "soads"

HBASE_VERSION = "2.6.1-hadoop3"
"""HBase artifacts resolved by the pom (hbase-thrift is 2.6.1: Maven Central has no -hadoop3 build)."""

DEFAULTS: dict = {
    "home": str(CACHE / "services" / "hbase"),   # data, rendered conf, logs, pid files
    "jars": str(CACHE / "jars" / "hbase"),
    "pom": str(REPO / "conf" / "maven" / "hbase" / "pom.xml"),
    "site_template": str(REPO / "conf" / "hbase" / "hbase-site.xml"),
    "host": "127.0.0.1",
    "master_port": 16000,
    "regionserver_port": 16020,
    "zookeeper_port": 2181,
    "thrift_port": 9090,
    "master_heap": "2g",
    "thrift_heap": "256m",
    "timeout": 240.0,          # seconds from start to healthy
    "java": "java",
    "mvn": "mvn",
}

MASTER_CLASS = "org.apache.hadoop.hbase.master.HMaster"
THRIFT_CLASS = "org.apache.hadoop.hbase.thrift.ThriftServer"
HEALTH_TABLE = b"soads_health"

JAVA17_FLAGS = (
    # What HBase's own bin/hbase adds on JDK 17, plus the opens the brief lists.
    "--add-modules=jdk.unsupported",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "--add-exports=java.base/sun.net.dns=ALL-UNNAMED",
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dorg.apache.hbase.thirdparty.io.netty.tryReflectionSetAccessible=true",
)

COMMON_FLAGS = (
    "-XX:+UseSerialGC",               # 2 shared cores: no parallel GC threads
    # C2 kept (no TieredStopAtLevel=1): HBase is long-running and its hot paths are fixed, unlike
    # a Spark micro-batch's generated code. Sustained stream ingest, HBase + Thrift CPU per event:
    # ~28 µs with C1 only, ~20 µs with C2 once warm (soads bench stream, 2026-11-22)
    "-Djava.net.preferIPv4Stack=true",
    "-Dzookeeper.admin.enableServer=false",
    "-Dzookeeper.4lw.commands.whitelist=ruok,srvr,stat",
)

LOG4J2 = """\
status = warn
name = soads-hbase
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:hbase.log.dir}/${sys:hbase.log.file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{ISO8601} %-5p [%t] %c{2}: %m%n
rootLogger = INFO,file
logger.zookeeper.name = org.apache.zookeeper
logger.zookeeper.level = WARN
logger.hadoop.name = org.apache.hadoop
logger.hadoop.level = WARN
logger.hbase.name = org.apache.hadoop.hbase
logger.hbase.level = INFO
logger.metrics.name = org.apache.hadoop.metrics2
logger.metrics.level = ERROR
"""


# -- settings and paths -------------------------------------------------------------------
def settings(conf: dict | None = None) -> dict:
    """DEFAULTS overridden by ``conf`` (unknown keys are an error)."""
    conf = dict(conf or {})
    unknown = set(conf) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown hbase service settings: {sorted(unknown)}")
    out = {**DEFAULTS, **conf}
    for key in ("home", "jars", "pom", "site_template"):
        out[key] = str(Path(out[key]).expanduser().resolve())
    return out


def _paths(s: dict) -> dict:
    home = Path(s["home"])
    return {
        "home": home,
        "conf": home / "conf",
        "logs": home / "logs",
        "run": home / "run",
        "tmp": home / "tmp",
        "master_pid": home / "run" / "master.pid",
        "thrift_pid": home / "run" / "thrift.pid",
        "master_log": home / "logs" / "master.log",
        "thrift_log": home / "logs" / "thrift.log",
        "master_out": home / "logs" / "master.out",
        "thrift_out": home / "logs" / "thrift.out",
    }


def location(conf: dict | None = None, prefix: str = "soads") -> str:
    """The ``host:port/prefix`` location string of :mod:`soads.storage.hbase` for this service."""
    s = settings(conf)
    return f"{s['host']}:{s['thrift_port']}/{prefix}"


# -- jars ---------------------------------------------------------------------------------
def _pom_digest(s: dict) -> str:
    return hashlib.sha256(Path(s["pom"]).read_bytes()).hexdigest()[:16]


def jars_ready(s: dict) -> bool:
    marker = Path(s["jars"]) / ".resolved"
    return marker.is_file() and marker.read_text().strip() == _pom_digest(s)


def install(conf: dict | None = None) -> dict:
    """Resolve the HBase jars into ``jars`` with Maven (skipped when already resolved for this pom).

    Returns ``{"jars": dir, "resolved": bool (True when mvn ran), "seconds": float, "bytes": int}``.
    """
    s = settings(conf)
    jars = Path(s["jars"])
    t0 = time.monotonic()
    ran = False
    if not jars_ready(s):
        if shutil.which(s["mvn"]) is None:
            raise RuntimeError(f"{s['mvn']!r} not found: Maven is needed to fetch the HBase jars")
        staging = jars.with_name(jars.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [s["mvn"], "-q", "-B", "-f", s["pom"], "dependency:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={staging}"]
        print("resolving HBase jars:", " ".join(cmd), file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write((proc.stdout + proc.stderr)[-4000:])
            raise RuntimeError(f"mvn failed with exit code {proc.returncode}")
        shutil.rmtree(jars, ignore_errors=True)
        staging.rename(jars)
        (jars / ".resolved").write_text(_pom_digest(s) + "\n")
        ran = True
    size = sum(p.stat().st_size for p in jars.glob("*.jar"))
    return {"jars": str(jars), "resolved": ran, "seconds": round(time.monotonic() - t0, 2),
            "bytes": size}


# -- configuration ------------------------------------------------------------------------
def render_conf(s: dict) -> Path:
    """Write ``hbase-site.xml`` (from the template) and ``log4j2.properties`` under ``home/conf``."""
    p = _paths(s)
    for key in ("conf", "logs", "run", "tmp"):
        p[key].mkdir(parents=True, exist_ok=True)
    template = string.Template(Path(s["site_template"]).read_text())
    values = {k: str(v) for k, v in s.items()}
    values["data_dir"] = str(p["home"])
    (p["conf"] / "hbase-site.xml").write_text(template.substitute(values))
    (p["conf"] / "log4j2.properties").write_text(LOG4J2)
    return p["conf"]


def java_command(s: dict, main: str, args: list[str], heap: str, log_file: Path) -> list[str]:
    """The ``java`` command line of one HBase process."""
    p = _paths(s)
    classpath = f"{p['conf']}{os.pathsep}{Path(s['jars']) / '*'}"
    return [
        s["java"], f"-Xms{min(64, _mb(heap))}m", f"-Xmx{heap}", *COMMON_FLAGS, *JAVA17_FLAGS,
        f"-Djava.io.tmpdir={p['tmp']}",
        f"-Dhbase.log.dir={log_file.parent}", f"-Dhbase.log.file={log_file.name}",
        f"-Dlog4j.configurationFile=file:{p['conf'] / 'log4j2.properties'}",
        f"-Dlog4j2.configurationFile=file:{p['conf'] / 'log4j2.properties'}",
        "-Dhbase.root.logger=INFO,file",
        "-cp", classpath, main, *args,
    ]


def _mb(heap: str) -> int:
    heap = heap.strip().lower()
    factor = {"k": 1 / 1024, "m": 1, "g": 1024}.get(heap[-1])
    return int(float(heap[:-1]) * factor) if factor else int(int(heap) / 2**20)


# -- processes ----------------------------------------------------------------------------
def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None, main_class: str) -> bool:
    """True when ``pid`` runs and is a java process for ``main_class`` (guards pid reuse).

    An empty command line (a process caught in ``exec``, e.g. the java launcher re-executing
    itself) counts as alive: only a gone or zombie process, or one running something else, is not.
    """
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return False
    if stat[stat.rfind(")") + 2:].startswith(("Z", "X")):  # zombie / dead
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return not cmdline or main_class.encode() in cmdline.split(b"\0")


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _spawn(cmd: list[str], out: Path, pid_file: Path, cwd: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own session, stdout/stderr to ``out`` (truncated: the JVM's own
    messages, e.g. a crash; HBase logs to ``*.log``), the command line to ``*.cmd``."""
    out.with_suffix(".cmd").write_text(" ".join(cmd) + "\n")
    with open(out, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, start_new_session=True)
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def _liveness(proc: subprocess.Popen):
    """Is-alive check of a process this Python started (its exit status, not /proc)."""
    return lambda: proc.poll() is None


def tail(path: Path, n: int = 30) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(lines[-n:])


def _print_logs(s: dict, n: int = 30) -> None:
    p = _paths(s)
    for key in ("master_log", "master_out", "thrift_log", "thrift_out"):
        if p[key].exists() and p[key].stat().st_size:
            print(f"---- last {n} lines of {p[key]} ----", file=sys.stderr)
            print(tail(p[key], n), file=sys.stderr)


# -- health -------------------------------------------------------------------------------
def health(conf: dict | None = None, timeout: float = 10.0) -> tuple[bool, str]:
    """happybase connects, creates ``soads_health`` when missing and lists the tables."""
    s = settings(conf)
    try:
        import happybase
    except ImportError as exc:  # the `hbase` extra is missing
        return False, f"happybase is not installed ({exc}): pip install 'soads[hbase]'"
    if not _port_open(s["host"], int(s["thrift_port"])):
        return False, f"nothing listens on {s['host']}:{s['thrift_port']}"
    try:
        conn = happybase.Connection(s["host"], int(s["thrift_port"]), timeout=int(timeout * 1000),
                                    autoconnect=True)
        try:
            tables = conn.tables()
            if HEALTH_TABLE not in tables:
                conn.create_table(HEALTH_TABLE, {"c": dict(max_versions=1)})
                tables = conn.tables()
            t = conn.table(HEALTH_TABLE)
            t.put(b"ping", {b"c:at": str(time.time()).encode()})
            return True, f"{len(tables)} tables"
        finally:
            conn.close()
    except Exception as exc:  # thrift errors, socket timeouts, IOError from HBase
        return False, f"{type(exc).__name__}: {exc}"


def status(conf: dict | None = None) -> dict:
    """Pids, listening ports and the health check.

    Returns
    -------
    dict
        ``{"version", "home", "jars_ready", "master": {"pid", "running"}, "thrift": {...},
        "ports": {name: bool}, "healthy": bool, "detail": str}``.
    """
    s = settings(conf)
    p = _paths(s)
    mpid, tpid = _read_pid(p["master_pid"]), _read_pid(p["thrift_pid"])
    ports = {name: _port_open(s["host"], int(s[f"{name}_port"]))
             for name in ("zookeeper", "master", "regionserver", "thrift")}
    running = _alive(mpid, MASTER_CLASS) and _alive(tpid, THRIFT_CLASS)
    ok, detail = health(conf, timeout=10.0) if running and ports["thrift"] else (False, "not running")
    return {
        "version": HBASE_VERSION,
        "home": s["home"],
        "jars_ready": jars_ready(s),
        "master": {"pid": mpid, "running": _alive(mpid, MASTER_CLASS)},
        "thrift": {"pid": tpid, "running": _alive(tpid, THRIFT_CLASS)},
        "ports": ports,
        "healthy": ok,
        "detail": detail,
        "location": location(conf),
    }


# -- up / down ----------------------------------------------------------------------------
def _wait(predicate, timeout: float, what: str, s: dict, checks=()) -> float:
    """Poll ``predicate`` each second; fail when one of ``checks`` (name, is-alive callable)
    reports its process gone, or after ``timeout`` seconds."""
    t0 = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - t0
        for name, is_alive in checks:
            if not is_alive():
                _print_logs(s)
                raise RuntimeError(f"{name} exited while waiting for {what}")
        if time.monotonic() - t0 > timeout:
            _print_logs(s)
            raise TimeoutError(f"HBase: {what} not reached within {timeout:.0f} s")
        time.sleep(1.0)


def up(conf: dict | None = None) -> dict:
    """Resolve jars if needed, start HMaster (standalone) and the Thrift server, wait until healthy.

    Returns timings: ``{"install": {...}, "already_running": bool, "master_seconds",
    "healthy_seconds" (start to healthy), "location"}``. On a failure the last 30 lines of the
    logs are printed and the processes this call started are stopped again.
    """
    s = settings(conf)
    p = _paths(s)
    result: dict = {"install": install(s_conf(s)), "location": location(s_conf(s))}
    render_conf(s)
    started: list[tuple[int, str, Path]] = []
    try:
        return _up(s, p, result, started)
    except BaseException:
        for pid, cls, pid_file in reversed(started):
            _stop(pid, cls, grace=30.0)
            pid_file.unlink(missing_ok=True)
        raise


def _up(s: dict, p: dict, result: dict, started: list) -> dict:
    t0 = time.monotonic()
    mpid, tpid = _read_pid(p["master_pid"]), _read_pid(p["thrift_pid"])
    master_up, thrift_up = _alive(mpid, MASTER_CLASS), _alive(tpid, THRIFT_CLASS)
    if master_up and thrift_up:
        ok, detail = health(s_conf(s))
        if ok:
            result.update(already_running=True, healthy_seconds=0.0, detail=detail)
            return result
    result["already_running"] = False

    if not master_up:
        p["master_pid"].unlink(missing_ok=True)
        busy = [n for n in ("zookeeper", "master", "regionserver")
                if _port_open(s["host"], int(s[f"{n}_port"]))]
        if busy:
            raise RuntimeError(f"ports of {busy} are in use by another process: not starting HBase")
        cmd = java_command(s, MASTER_CLASS, ["start"], s["master_heap"], p["master_log"])
        proc = _spawn(cmd, p["master_out"], p["master_pid"], p["home"])
        started.append((proc.pid, MASTER_CLASS, p["master_pid"]))
        master_alive = _liveness(proc)
    else:
        master_alive = lambda: _alive(mpid, MASTER_CLASS)  # noqa: E731
    # The region server port opens once the region server has registered; the master then
    # assigns hbase:meta. Wait for both ports, then start Thrift.
    _wait(lambda: all(_port_open(s["host"], int(s[f"{n}_port"]))
                      for n in ("zookeeper", "master", "regionserver")),
          s["timeout"], "master, region server and ZooKeeper ports", s,
          [("HMaster", master_alive)])
    result["master_seconds"] = round(time.monotonic() - t0, 2)

    if not thrift_up:
        p["thrift_pid"].unlink(missing_ok=True)
        if _port_open(s["host"], int(s["thrift_port"])):
            raise RuntimeError(f"port {s['thrift_port']} is in use by another process")
        args = ["-threadpool", "-p", str(s["thrift_port"]), "-b", s["host"],
                "--infoport", "-1", "start"]
        cmd = java_command(s, THRIFT_CLASS, args, s["thrift_heap"], p["thrift_log"])
        proc = _spawn(cmd, p["thrift_out"], p["thrift_pid"], p["home"])
        started.append((proc.pid, THRIFT_CLASS, p["thrift_pid"]))
        thrift_alive = _liveness(proc)
    else:
        thrift_alive = lambda: _alive(tpid, THRIFT_CLASS)  # noqa: E731

    state = {"detail": ""}

    def healthy() -> bool:
        ok, state["detail"] = health(s_conf(s), timeout=20.0)
        return ok

    remaining = max(30.0, s["timeout"] - (time.monotonic() - t0))
    try:
        _wait(healthy, remaining, "a healthy Thrift connection", s,
              [("HMaster", master_alive), ("ThriftServer", thrift_alive)])
    except TimeoutError:
        print(f"last health check: {state['detail']}", file=sys.stderr)
        raise
    result["healthy_seconds"] = round(time.monotonic() - t0, 2)
    result["detail"] = state["detail"]
    return result


def s_conf(s: dict) -> dict:
    """A full settings dict back as a ``conf`` argument (identity; keeps call sites explicit)."""
    return {k: s[k] for k in DEFAULTS}


def _stop(pid: int | None, main_class: str, grace: float) -> bool:
    if not _alive(pid, main_class):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    t0 = time.monotonic()
    while _alive(pid, main_class) and time.monotonic() - t0 < grace:
        time.sleep(0.5)
    if _alive(pid, main_class):
        print(f"{main_class} (pid {pid}) ignored SIGTERM for {grace:.0f} s: SIGKILL", file=sys.stderr)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True


def down(conf: dict | None = None, grace: float = 60.0) -> dict:
    """Stop the Thrift server, then the master (SIGTERM: HBase's shutdown hook flushes and stops
    the in-process region server and ZooKeeper; SIGKILL after ``grace`` seconds)."""
    s = settings(conf)
    p = _paths(s)
    t0 = time.monotonic()
    stopped = {
        "thrift": _stop(_read_pid(p["thrift_pid"]), THRIFT_CLASS, grace),
        "master": _stop(_read_pid(p["master_pid"]), MASTER_CLASS, grace),
    }
    p["thrift_pid"].unlink(missing_ok=True)
    p["master_pid"].unlink(missing_ok=True)
    return {"stopped": stopped, "seconds": round(time.monotonic() - t0, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soads.hbase_service", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("up", "down", "status", "install"))
    parser.add_argument("--home", default=os.environ.get("SOADS_HBASE_HOME"))
    parser.add_argument("--jars", default=os.environ.get("SOADS_HBASE_JARS"))
    parser.add_argument("--timeout", type=float, default=None)
    args = parser.parse_args(argv)
    conf = {k: v for k, v in (("home", args.home), ("jars", args.jars), ("timeout", args.timeout))
            if v is not None}
    try:
        if args.command == "up":
            out = up(conf)
        elif args.command == "down":
            out = down(conf)
        elif args.command == "install":
            out = install(conf)
        else:
            out = status(conf)
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0 if args.command != "status" or out["healthy"] else 3


if __name__ == "__main__":
    sys.exit(main())
