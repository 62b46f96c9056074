"""Apache HBase (standalone) and its Thrift 1 server, from Maven Central jars.

The jars come from ``conf/maven/hbase/pom.xml`` (resolved into ``<jars>/hbase``); there is no
tarball. One JVM runs ``HMaster`` in standalone mode: the master, one region server and an
embedded ZooKeeper, with data on the local filesystem. A second JVM runs the Thrift 1 server
(thread-pool server, buffered transport, binary protocol: happybase's defaults). Every socket
listens on 127.0.0.1. Settings: ``[hbase]`` of conf/services.toml, rendered into
``conf/hbase/hbase-site.xml``. Data, rendered conf, logs and pid files under ``<root>/hbase``.
Health: happybase connects, creates the table ``soads_health`` if it is missing, writes a row.
"""
from __future__ import annotations

import logging
import os
import string
import time
from pathlib import Path

import soads.services.proc as proc
from soads import jars
from soads.config import Config, HBaseConf
from soads.services.proc import ProbeBroken, ServiceError

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SITE_TEMPLATE = REPO / "conf" / "hbase" / "hbase-site.xml"
VERSION = "2.6.1-hadoop3"
"""HBase artifacts resolved by the pom (hbase-thrift is 2.6.1: Central has no -hadoop3 build)."""

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


# -- paths and addresses ------------------------------------------------------------------
def home(cfg: Config) -> Path:
    return Path(os.path.expanduser(cfg.services.root)).resolve() / "hbase"


def paths(cfg: Config) -> dict[str, Path]:
    h = home(cfg)
    return {
        "home": h, "conf": h / "conf", "logs": h / "logs", "run": h / "run", "tmp": h / "tmp",
        "master_pid": h / "run" / "master.pid", "thrift_pid": h / "run" / "thrift.pid",
        "master_log": h / "logs" / "master.log", "thrift_log": h / "logs" / "thrift.log",
        "master_out": h / "logs" / "master.out", "thrift_out": h / "logs" / "thrift.out",
    }


def jar_dir(cfg: Config) -> Path:
    return Path(os.path.expanduser(cfg.services.jars)).resolve() / "hbase"


def location(cfg: Config, prefix: str = "soads") -> str:
    """The ``host:port/prefix`` location string of :mod:`soads.storage.hbase` for this service."""
    return f"{cfg.hbase.host}:{cfg.hbase.thrift_port}/{prefix}"


def addresses(cfg: Config, parts=("zookeeper", "master", "regionserver", "thrift")):
    h = cfg.hbase
    return [(h.host, getattr(h, f"{p}_port")) for p in parts]


def running_pids(cfg: Config) -> tuple[int | None, int | None]:
    """(HMaster pid, ThriftServer pid), each None when not running."""
    p, h = paths(cfg), str(home(cfg))
    return (proc.running_pid(p["master_pid"], [MASTER_CLASS, h]),
            proc.running_pid(p["thrift_pid"], [THRIFT_CLASS, h]))


# -- jars and configuration -----------------------------------------------------------------
def install(cfg: Config) -> Path:
    """Resolve the HBase jars with Maven (skipped when already resolved for this pom)."""
    try:
        return jars.resolve(jars.HBASE_POM, jar_dir(cfg))
    except jars.JarError as e:
        raise ServiceError(str(e)) from e


def render_conf(cfg: Config) -> Path:
    """Write ``hbase-site.xml`` (from the template, with the ``[hbase]`` settings) and
    ``log4j2.properties`` under ``<home>/conf``."""
    p = paths(cfg)
    for key in ("conf", "logs", "run", "tmp"):
        p[key].mkdir(parents=True, exist_ok=True)
    values = {k: str(getattr(cfg.hbase, k)) for k in HBaseConf.__dataclass_fields__}
    values["data_dir"] = str(p["home"])
    values["thrift_bind"] = _thrift_bind(cfg)
    site = string.Template(SITE_TEMPLATE.read_text()).substitute(values)
    (p["conf"] / "hbase-site.xml").write_text(site)
    (p["conf"] / "log4j2.properties").write_text(LOG4J2)
    return p["conf"]


def _mb(heap: str) -> int:
    heap = heap.strip().lower()
    factor = {"k": 1 / 1024, "m": 1, "g": 1024}.get(heap[-1])
    return int(float(heap[:-1]) * factor) if factor else int(int(heap) / 2**20)


def java_command(cfg: Config, main: str, args: list[str], heap: str, log_file: Path) -> list[str]:
    """The ``java`` command line of one HBase process."""
    p = paths(cfg)
    classpath = f"{p['conf']}{os.pathsep}{jar_dir(cfg) / '*'}"
    return [
        proc.java(), f"-Xms{min(64, _mb(heap))}m", f"-Xmx{heap}", *COMMON_FLAGS, *JAVA17_FLAGS,
        f"-Djava.io.tmpdir={p['tmp']}",
        f"-Dhbase.log.dir={log_file.parent}", f"-Dhbase.log.file={log_file.name}",
        f"-Dlog4j.configurationFile=file:{p['conf'] / 'log4j2.properties'}",
        f"-Dlog4j2.configurationFile=file:{p['conf'] / 'log4j2.properties'}",
        "-Dhbase.root.logger=INFO,file",
        "-cp", classpath, main, *args,
    ]


def _thrift_bind(cfg: Config) -> str:
    return cfg.hbase.thrift_bind or cfg.hbase.host


def thrift_args(cfg: Config) -> list[str]:
    return ["-threadpool", "-p", str(cfg.hbase.thrift_port), "-b", _thrift_bind(cfg),
            "--infoport", "-1", "start"]


# -- health -------------------------------------------------------------------------------
def probe(cfg: Config, timeout: float = 10.0) -> None:
    """happybase connects, creates ``soads_health`` when missing and writes a row; raises
    when it cannot."""
    try:
        import happybase
    except ImportError as e:  # the `hbase` extra is missing
        raise ProbeBroken(f"happybase is needed for the HBase health check ({e}): "
                          "pip install 'soads[hbase]'") from e
    h = cfg.hbase
    if not proc.port_open(h.host, h.thrift_port):
        raise ServiceError(f"nothing listens on {h.host}:{h.thrift_port}")
    conn = happybase.Connection(h.host, h.thrift_port, timeout=int(timeout * 1000),
                                autoconnect=True)
    try:
        if HEALTH_TABLE not in conn.tables():
            conn.create_table(HEALTH_TABLE, {"c": dict(max_versions=1)})
        conn.table(HEALTH_TABLE).put(b"ping", {b"c:at": str(time.time()).encode()})
    finally:
        conn.close()


# -- start / stop ---------------------------------------------------------------------------
def start(cfg: Config) -> int:
    """Resolve jars if needed, start HMaster (standalone) unless it runs, then the Thrift
    server, and wait until healthy. On a failure the processes this call started are stopped
    and the error carries the last lines of their logs. Returns the Thrift server's pid."""
    install(cfg)
    render_conf(cfg)
    p = paths(cfg)
    logs = [p["master_log"], p["master_out"], p["thrift_log"], p["thrift_out"]]
    timeout = cfg.hbase.start_timeout
    t0 = time.monotonic()
    master, thrift = running_pids(cfg)
    started: list[tuple[int, Path]] = []
    try:
        if master is None:
            busy = proc.busy_ports(addresses(cfg, ("zookeeper", "master", "regionserver")))
            if busy:
                raise ServiceError(f"hbase: {', '.join(busy)} already in use by another process")
            cmd = java_command(cfg, MASTER_CLASS, ["start"], cfg.hbase.master_heap,
                               p["master_log"])
            master = proc.spawn(cmd, p["master_out"], p["master_pid"], p["home"])
            started.append((master, p["master_pid"]))
        # The region server port opens once the region server has registered; the master then
        # assigns hbase:meta. Wait for the three ports, then start Thrift.
        proc.wait_healthy("hbase master", lambda: _ports_open(cfg), timeout,
                          [(master, p["master_pid"])], logs, owned=False)
        if thrift is None:
            if proc.port_open(cfg.hbase.host, cfg.hbase.thrift_port):
                raise ServiceError(f"hbase: {cfg.hbase.host}:{cfg.hbase.thrift_port} already "
                                   "in use by another process")
            cmd = java_command(cfg, THRIFT_CLASS, thrift_args(cfg), cfg.hbase.thrift_heap,
                               p["thrift_log"])
            thrift = proc.spawn(cmd, p["thrift_out"], p["thrift_pid"], p["home"])
            started.append((thrift, p["thrift_pid"]))
        remaining = max(30.0, timeout - (time.monotonic() - t0))
        proc.wait_healthy("hbase", lambda: probe(cfg, timeout=20.0), remaining,
                          [(master, p["master_pid"]), (thrift, p["thrift_pid"])], logs,
                          owned=False)
    except BaseException:
        for pid, pid_file in reversed(started):
            proc.stop(pid, "hbase", timeout=30.0)
            pid_file.unlink(missing_ok=True)
        raise
    logger.info("hbase %s healthy, thrift on %s:%d (pids %d, %d) after %.1fs", VERSION,
                cfg.hbase.host, cfg.hbase.thrift_port, master, thrift, time.monotonic() - t0)
    return thrift


def _ports_open(cfg: Config) -> None:
    closed = [f"{h}:{port}" for h, port in addresses(cfg, ("zookeeper", "master", "regionserver"))
              if not proc.port_open(h, port)]
    if closed:
        raise ServiceError(f"not listening yet: {', '.join(closed)}")


def stop(cfg: Config) -> bool:
    """Stop the Thrift server, then the master (SIGTERM: HBase's shutdown hook flushes and stops
    the in-process region server and ZooKeeper; SIGKILL after a minute)."""
    p = paths(cfg)
    master, thrift = running_pids(cfg)
    stopped = proc.stop(thrift, "hbase thrift")
    stopped = proc.stop(master, "hbase master") or stopped
    p["thrift_pid"].unlink(missing_ok=True)
    p["master_pid"].unlink(missing_ok=True)
    return stopped


def status(cfg: Config) -> dict:
    master, thrift = running_pids(cfg)
    p = paths(cfg)
    return {"running": master is not None and thrift is not None, "pid": master,
            "thrift_pid": thrift, "address": f"{cfg.hbase.host}:{cfg.hbase.thrift_port}",
            "version": VERSION, "dir": str(p["home"]), "log": str(p["master_log"]),
            "location": location(cfg)}
