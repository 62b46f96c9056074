"""Real components: install, start, stop and health-check Apache Kafka and MariaDB locally.

DESIGN "Real components": the project's own files install and start every real part on a fresh
machine, without Docker. Kafka is a single KRaft broker (broker + controller in one JVM) run from
Maven Central jars; MariaDB is Debian's ``mariadb-server`` run in the foreground of a process we
own. Data, logs and pid files live under ``<root>/<name>`` outside the clone; jars under
``<jars>/kafka/``; ``~/.m2`` caches Maven downloads.

Usage::

    python -m soads.services up [kafka|mariadb ...] [--conf conf/services.toml]
    python -m soads.services status [kafka|mariadb ...]
    python -m soads.services down [kafka|mariadb ...]

``up`` is idempotent: a service that is already healthy is left alone. It returns once every
service answers (Kafka: create and list a topic with kafka-python; MariaDB: ``SELECT 1`` over TCP
as the application user) or raises :class:`ServiceError` with the last lines of the service log.

This module imports neither pyspark nor torch.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

logger = logging.getLogger("soads.services" if __name__ == "__main__" else __name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONF = REPO / "conf" / "services.toml"
KAFKA_POM = REPO / "conf" / "maven" / "kafka" / "pom.xml"
NAMES = ("kafka", "mariadb")
HEALTH_TOPIC = "soads-health"


class ServiceError(RuntimeError):
    """A service could not be installed, started or reached."""


class ProbeBroken(ServiceError):
    """A health check that cannot succeed by waiting (missing client library, bad settings)."""


# failures of the probe itself, not of the service: waiting longer would not help
_FATAL = (ProbeBroken, ImportError, TypeError, AttributeError, NameError)


@dataclass(frozen=True)
class KafkaConf:
    version: str = "4.3.1"
    spark_connector_version: str = "4.2.0"
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    message_max_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class MariaDBConf:
    host: str = "127.0.0.1"
    port: int = 3306
    database: str = "soads"
    user: str = "soads"
    password: str = "soads-dev"


@dataclass(frozen=True)
class ServicesConf:
    root: str = "~/.cache/soads/services"
    jars: str = "~/.cache/soads/jars"
    start_timeout: float = 180.0
    kafka: KafkaConf = field(default_factory=KafkaConf)
    mariadb: MariaDBConf = field(default_factory=MariaDBConf)


# environment variable -> (section, key); applied by load_conf, which only the CLI and tests call
ENV_OVERRIDES = {
    "SOADS_SERVICES_ROOT": ("services", "root"),
    "SOADS_DB_USER": ("mariadb", "user"),
    "SOADS_DB_PASSWORD": ("mariadb", "password"),
}


def load_conf(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> ServicesConf:
    """Read ``conf/services.toml`` (or ``path``), then apply the :data:`ENV_OVERRIDES` in ``env``.

    Unknown sections or keys raise :class:`ServiceError`.

    Examples
    --------
    >>> load_conf(env={"SOADS_DB_PASSWORD": "s3cret"}).mariadb.password
    's3cret'
    """
    path = Path(path) if path is not None else DEFAULT_CONF
    data: dict = {}
    if path.exists():
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    elif path != DEFAULT_CONF:
        raise ServiceError(f"cannot read services config {path}")
    for var, (section, key) in ENV_OVERRIDES.items():
        if env and env.get(var):
            data.setdefault(section, {})[key] = env[var]

    def build(cls, values: dict, where: str):
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise ServiceError(f"{path}: unknown key(s) in [{where}]: {', '.join(sorted(unknown))}")
        base = cls()
        return dataclasses.replace(
            base, **{k: type(getattr(base, k))(v) for k, v in values.items()})

    unknown = set(data) - {"services", *NAMES}
    if unknown:
        raise ServiceError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    top = build(ServicesConf, {k: v for k, v in data.get("services", {}).items()
                               if k not in NAMES}, "services")
    return dataclasses.replace(top, kafka=build(KafkaConf, data.get("kafka", {}), "kafka"),
                               mariadb=build(MariaDBConf, data.get("mariadb", {}), "mariadb"))


# ---------------------------------------------------------------------------------------------
# paths and addresses

def service_dir(name: str, conf: ServicesConf) -> Path:
    """``<root>/<name>``: data, log, pid file and generated config of one service."""
    return Path(os.path.expanduser(conf.root)) / name


def kafka_bootstrap(conf: ServicesConf) -> str:
    """``host:port`` for Kafka clients (kafka-python ``bootstrap_servers``, Spark
    ``kafka.bootstrap.servers``)."""
    return f"{conf.kafka.host}:{conf.kafka.port}"


def mysql_url(conf: ServicesConf, database: str | None = None) -> str:
    """SQLAlchemy URL of the application user over TCP, e.g.
    ``mysql+pymysql://soads:...@127.0.0.1:3306/soads``."""
    from urllib.parse import quote_plus

    m = conf.mariadb
    return (f"mysql+pymysql://{quote_plus(m.user)}:{quote_plus(m.password)}"
            f"@{m.host}:{m.port}/{database or m.database}")


def _pid_file(name: str, conf: ServicesConf) -> Path:
    return service_dir(name, conf) / f"{name}.pid"


def _log_file(name: str, conf: ServicesConf) -> Path:
    return service_dir(name, conf) / f"{name}.log"


def _tail(path: Path, n: int = 30) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(lines[-n:])


# ---------------------------------------------------------------------------------------------
# processes

def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child (we started it in this process and it died) is not alive
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# a pid file's pid counts only if that process still runs our command (pids get reused)
_MARKER = {"kafka": "kafka.Kafka", "mariadb": "mariadbd"}


def _running_pid(name: str, conf: ServicesConf) -> int | None:
    pid_file = _pid_file(name, conf)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    cmd = _cmdline(pid) if _alive(pid) else ""
    if _MARKER[name] in cmd and str(service_dir(name, conf)) in cmd:
        return pid
    logger.info("%s: removing stale pid file %s (pid %s)", name, pid_file, pid)
    pid_file.unlink(missing_ok=True)
    return None


def _port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _spawn(name: str, argv: list[str], conf: ServicesConf) -> int:
    """Start ``argv`` in its own session, stdout+stderr appended to the service log; write the
    pid file. Returns the pid."""
    log = _log_file(name, conf)
    with open(log, "ab") as fh:
        fh.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(argv)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=service_dir(name, conf))
    _pid_file(name, conf).write_text(f"{proc.pid}\n")
    logger.info("%s: started pid %d, log %s", name, proc.pid, log)
    return proc.pid


def _stop_pid(name: str, pid: int, timeout: float = 60.0) -> None:
    """SIGTERM (both brokers shut down cleanly on it), then SIGKILL after ``timeout``."""
    logger.info("%s: stopping pid %d", name, pid)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        try:  # reap if it is our child (started in this process)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    logger.warning("%s: pid %d ignored SIGTERM for %.0fs, killing", name, pid, timeout)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_healthy(name: str, pid: int, probe: Callable[[], None], conf: ServicesConf) -> float:
    """Poll ``probe`` until it succeeds; fail early if the process dies. Returns seconds waited."""
    t0 = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - t0 < conf.start_timeout:
        if not _alive(pid):
            raise ServiceError(f"{name} exited during start-up; last lines of "
                               f"{_log_file(name, conf)}:\n{_tail(_log_file(name, conf))}")
        try:
            probe()
            return time.monotonic() - t0
        except _FATAL:
            _stop_pid(name, pid)
            _pid_file(name, conf).unlink(missing_ok=True)
            raise
        except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"; reported below
            last = e
        time.sleep(1.0)
    _stop_pid(name, pid)
    _pid_file(name, conf).unlink(missing_ok=True)
    raise ServiceError(f"{name} did not answer within {conf.start_timeout:.0f}s (last error: "
                       f"{last!r}); last lines of {_log_file(name, conf)}:\n"
                       f"{_tail(_log_file(name, conf))}")


def _run(argv: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    logger.info("%s: %s", what, " ".join(argv))
    res = subprocess.run(argv, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise ServiceError(f"{what} failed (exit {res.returncode}): {' '.join(argv)}\n"
                           f"{(res.stdout + res.stderr)[-4000:]}")
    return res


# ---------------------------------------------------------------------------------------------
# Kafka

def _resolve_jars(profile: str, version_props: dict[str, str], out: Path) -> Path:
    """``mvn dependency:copy-dependencies`` of one profile of conf/maven/kafka/pom.xml into
    ``out`` (once: a ``.complete`` stamp marks a finished copy)."""
    if (out / ".complete").exists():
        return out
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("Maven (mvn) is needed to fetch the Kafka jars: apt-get install maven")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    argv = [mvn, "-q", "-B", "-f", str(KAFKA_POM), "-P", profile,
            "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
            *[f"-D{k}={v}" for k, v in version_props.items()]]
    t0 = time.monotonic()
    _run(argv, f"resolve {profile} jars")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    (out / ".complete").write_text(" ".join(argv) + "\n")
    logger.info("resolved %d %s jars into %s in %.1fs", len(list(out.glob("*.jar"))), profile,
                out, time.monotonic() - t0)
    return out


def kafka_broker_jars(conf: ServicesConf) -> Path:
    """Directory of the broker's classpath (``kafka_2.13`` and its runtime deps), fetched once."""
    out = Path(os.path.expanduser(conf.jars)) / "kafka" / f"broker-{conf.kafka.version}"
    return _resolve_jars("broker", {"kafka.version": conf.kafka.version}, out)


def spark_kafka_jars(conf: ServicesConf) -> list[str]:
    """Jar paths for Spark's ``spark.jars`` that make ``format("kafka")`` work (the connector,
    kafka-clients, commons-pool2, the token provider), fetched once."""
    v = conf.kafka.spark_connector_version
    out = Path(os.path.expanduser(conf.jars)) / "kafka" / f"spark-{v}"
    jars = _resolve_jars("spark", {"spark.kafka.version": v}, out)
    return sorted(str(p) for p in jars.glob("*.jar"))


def _kafka_properties(conf: ServicesConf) -> str:
    k, d = conf.kafka, service_dir("kafka", conf)
    return "\n".join([
        "# generated by soads.services from conf/services.toml; rewritten at every start",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{k.host}:{k.controller_port}",
        f"listeners=PLAINTEXT://{k.host}:{k.port},CONTROLLER://{k.host}:{k.controller_port}",
        f"advertised.listeners=PLAINTEXT://{k.host}:{k.port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={d / 'data'}",
        "num.partitions=1",
        "default.replication.factor=1",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "min.insync.replicas=1",
        f"message.max.bytes={k.message_max_bytes}",
        f"replica.fetch.max.bytes={k.message_max_bytes}",
        "group.initial.rebalance.delay.ms=0",
        # 2 shared cores: few threads
        "num.network.threads=2",
        "num.io.threads=2",
        "num.recovery.threads.per.data.dir=1",
        "",
    ])


_LOG4J2 = """\
# generated by soads.services: Kafka's log4j2 output goes to stdout, which is kafka.log
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = warn
"""


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ServiceError("Java 17+ is needed for Kafka: apt-get install openjdk-17-jre-headless")
    return java


def _kafka_argv(conf: ServicesConf, jars: Path, main: str, *args: str) -> list[str]:
    d = service_dir("kafka", conf)
    return [_java(), f"-Xmx{conf.kafka.heap}", "-Xms128m", "-XX:+UseG1GC",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={d / 'log4j2.properties'}",
            "-cp", f"{jars}/*", main, *args]


def _kafka_probe(conf: ServicesConf) -> Callable[[], None]:
    def probe() -> None:
        try:
            from kafka.admin import KafkaAdminClient, NewTopic
            from kafka.errors import KafkaConfigurationError, TopicAlreadyExistsError
        except ImportError as e:
            raise ProbeBroken("kafka-python is needed for the Kafka health check: "
                               "pip install -e '.[kafka]'") from e
        if not _port_open(conf.kafka.host, conf.kafka.port):
            # kafka-python would spend its 30 s bootstrap timeout on a closed port
            raise ServiceError(f"nothing listens on {kafka_bootstrap(conf)} yet")
        try:
            admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap(conf),
                                     client_id="soads-health", request_timeout_ms=10000)
        except KafkaConfigurationError as e:
            raise ProbeBroken(f"kafka-python rejected the admin client settings: {e}") from e
        try:
            if HEALTH_TOPIC not in admin.list_topics():
                try:
                    admin.create_topics([NewTopic(HEALTH_TOPIC, 1, 1)])
                except TopicAlreadyExistsError:
                    pass
            if HEALTH_TOPIC not in admin.list_topics():
                raise ServiceError(f"topic {HEALTH_TOPIC} not listed after creating it")
        finally:
            admin.close()
    return probe


def _kafka_up(conf: ServicesConf) -> None:
    d = service_dir("kafka", conf)
    jars = kafka_broker_jars(conf)
    d.mkdir(parents=True, exist_ok=True)
    props = d / "server.properties"
    props.write_text(_kafka_properties(conf))
    (d / "log4j2.properties").write_text(_LOG4J2)
    if not (d / "data" / "meta.properties").exists():
        # KRaft storage must be formatted once with a cluster id (a base64 UUID) before the
        # first start; with a static controller.quorum.voters list no --standalone is needed
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        _run(_kafka_argv(conf, jars, "kafka.tools.StorageTool",
                         "format", "-t", cluster_id, "-c", str(props)), "format Kafka storage")
    pid = _spawn("kafka", _kafka_argv(conf, jars, "kafka.Kafka", str(props)), conf)
    secs = _wait_healthy("kafka", pid, _kafka_probe(conf), conf)
    logger.info("kafka %s healthy on %s after %.1fs",
                conf.kafka.version, kafka_bootstrap(conf), secs)


# ---------------------------------------------------------------------------------------------
# MariaDB

def _mariadbd() -> str | None:
    return shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")


def install_mariadb() -> str:
    """Path of ``mariadbd``, installing Debian's ``mariadb-server`` when it is missing (root)."""
    found = _mariadbd()
    if found:
        return found
    if os.geteuid() != 0:
        raise ServiceError("mariadbd not found; install it with: "
                           "sudo apt-get install -y mariadb-server")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "-q", "mariadb-server"]
    try:
        _run(argv, "apt-get install mariadb-server", env=env)
    except ServiceError:  # a fresh machine has no package lists yet
        _run(["apt-get", "update", "-q"], "apt-get update", env=env)
        _run(argv, "apt-get install mariadb-server", env=env)
    found = _mariadbd()
    if not found:
        raise ServiceError("mariadb-server installed but mariadbd is not on PATH or in /usr/sbin")
    return found


def _os_user_for(path: Path) -> str:
    """The account mariadbd runs as: ``mysql`` when it can reach ``path`` (Debian's default),
    else the current user. As root under a 0700 /root, ``mysql`` cannot reach the data dir and
    mariadbd needs an explicit ``--user=root``."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() != 0:
        return me
    try:
        mysql = pwd.getpwnam("mysql")
    except KeyError:
        return me
    for p in [path, *path.parents]:
        st = p.stat()
        if st.st_uid == mysql.pw_uid:
            continue
        other_x = st.st_mode & stat.S_IXOTH
        group_x = st.st_gid == mysql.pw_gid and st.st_mode & stat.S_IXGRP
        if not (other_x or group_x):
            return me
    return "mysql"


def _mariadb_paths(conf: ServicesConf) -> dict[str, Path]:
    d = service_dir("mariadb", conf)
    return {"dir": d, "data": d / "data", "socket": d / "mysqld.sock", "pid": d / "mariadbd.pid"}


def _sql_literal(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _mariadb_bootstrap(conf: ServicesConf, socket_path: Path) -> None:
    """Create the database and the application user (for 127.0.0.1 and localhost) as root over
    the unix socket; root cannot log in over TCP. The user may create ``soads*`` databases (the
    DDL test applies sql/mysql.sql to a fresh one)."""
    m = conf.mariadb
    stmts = [f"CREATE DATABASE IF NOT EXISTS `{m.database}`"]
    for host in ("127.0.0.1", "localhost"):
        acct = f"{_sql_literal(m.user)}@{_sql_literal(host)}"
        stmts += [f"CREATE USER IF NOT EXISTS {acct} IDENTIFIED BY {_sql_literal(m.password)}",
                  f"ALTER USER {acct} IDENTIFIED BY {_sql_literal(m.password)}",
                  f"GRANT ALL PRIVILEGES ON `{m.database}`.* TO {acct}",
                  f"GRANT ALL PRIVILEGES ON `{m.database}\\_%`.* TO {acct}"]
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        raise ServiceError("the mariadb client is missing (package mariadb-client)")
    _run([client, f"--socket={socket_path}", "-u", "root", "--batch"], "create database and user",
         input=";\n".join(stmts) + ";\n")


def _mariadb_probe(conf: ServicesConf) -> Callable[[], None]:
    def probe() -> None:
        try:
            import pymysql
        except ImportError as e:
            raise ProbeBroken("PyMySQL is needed for the MariaDB health check: "
                               "pip install -e '.[mysql]'") from e
        m = conf.mariadb
        conn = pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password,
                               database=m.database, connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                if cur.fetchone() != (1,):
                    raise ServiceError("SELECT 1 did not return 1")
        finally:
            conn.close()
    return probe


def _socket_probe(socket_path: Path) -> Callable[[], None]:
    def probe() -> None:
        if not socket_path.exists():
            raise ServiceError(f"no socket {socket_path} yet")
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(socket_path))
    return probe


def _mariadb_up(conf: ServicesConf) -> None:
    mariadbd = install_mariadb()
    p = _mariadb_paths(conf)
    p["dir"].mkdir(parents=True, exist_ok=True)
    user = _os_user_for(p["dir"])
    if user != "root" and os.geteuid() == 0:
        shutil.chown(p["dir"], user, user)
    if not (p["data"] / "mysql").is_dir():
        shutil.rmtree(p["data"], ignore_errors=True)
        install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if install_db is None:
            raise ServiceError("mariadb-install-db is missing (package mariadb-server)")
        _run([install_db, "--no-defaults", f"--user={user}", f"--datadir={p['data']}",
              "--skip-test-db", "--auth-root-authentication-method=socket"],
             "initialise MariaDB data dir")
    argv = [mariadbd, "--no-defaults", f"--user={user}", f"--datadir={p['data']}",
            f"--socket={p['socket']}", f"--port={conf.mariadb.port}",
            f"--bind-address={conf.mariadb.host}", f"--pid-file={p['pid']}",
            # small footprint for a development box
            "--innodb-buffer-pool-size=128M", "--max-connections=200",
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
            # EPCIS documents up to 10 MB travel in one statement
            "--max-allowed-packet=64M"]
    pid = _spawn("mariadb", argv, conf)
    _wait_healthy("mariadb", pid, _socket_probe(p["socket"]), conf)
    _mariadb_bootstrap(conf, p["socket"])
    secs = _wait_healthy("mariadb", pid, _mariadb_probe(conf), conf)
    from soads.storage.tables import create_tables, engine

    eng = engine(mysql_url(conf))
    try:
        create_tables(eng)
    finally:
        eng.dispose()
    logger.info("mariadb healthy on %s:%d (schema applied) after %.1fs",
                conf.mariadb.host, conf.mariadb.port, secs)


# ---------------------------------------------------------------------------------------------
# public API

_UP = {"kafka": _kafka_up, "mariadb": _mariadb_up}
_PROBE = {"kafka": _kafka_probe, "mariadb": _mariadb_probe}
_PORTS = {
    "kafka": lambda c: [(c.kafka.host, c.kafka.port), (c.kafka.host, c.kafka.controller_port)],
    "mariadb": lambda c: [(c.mariadb.host, c.mariadb.port)],
}


def _check_names(names: Iterable[str] | None) -> list[str]:
    names = list(names or NAMES)
    bad = [n for n in names if n not in NAMES]
    if bad:
        raise ServiceError(f"unknown service(s) {bad}; choose from {list(NAMES)}")
    return names


def check(name: str, conf: ServicesConf) -> None:
    """Run the health check of ``name`` once against the configured address, whoever started
    the service; raises (:class:`ServiceError`, or the client library's error) when it fails."""
    _PROBE[_check_names([name])[0]](conf)()


def status(names: Sequence[str] | None, conf: ServicesConf) -> dict[str, dict]:
    """State of each service (all when ``names`` is empty).

    Returns
    -------
    ``{name: {"running", "pid", "healthy", "address", "version", "dir", "log", "error"}}``;
    ``healthy`` means the health check answered just now; ``error`` is its failure or None.
    """
    out = {}
    for name in _check_names(names):
        pid = _running_pid(name, conf)
        host, port = _PORTS[name](conf)[0]
        healthy, error = False, None
        if pid is not None:
            try:
                _PROBE[name](conf)()
                healthy = True
            except Exception as e:  # noqa: BLE001 - reported in the result, not swallowed
                error = repr(e)
        out[name] = {
            "running": pid is not None, "pid": pid, "healthy": healthy, "address": f"{host}:{port}",
            "version": conf.kafka.version if name == "kafka" else _mariadb_version(),
            "dir": str(service_dir(name, conf)), "log": str(_log_file(name, conf)), "error": error,
        }
    return out


def _mariadb_version() -> str | None:
    exe = _mariadbd()
    if exe is None:
        return None
    res = subprocess.run([exe, "--version"], capture_output=True, text=True)
    return res.stdout.split(" Ver ")[-1].split(" for ")[0].strip() or None


def up(names: Sequence[str] | None, conf: ServicesConf) -> dict[str, dict]:
    """Install (if needed) and start each service, waiting until it is healthy. Idempotent.

    Raises :class:`ServiceError` when a service does not answer within ``conf.start_timeout``,
    with the last lines of its log. Returns :func:`status` of the services.
    """
    for name in _check_names(names):
        service_dir(name, conf).mkdir(parents=True, exist_ok=True)
        pid = _running_pid(name, conf)
        if pid is not None:
            secs = _wait_healthy(name, pid, _PROBE[name](conf), conf)
            logger.info("%s already running (pid %d), healthy after %.1fs", name, pid, secs)
            continue
        busy = [f"{h}:{p}" for h, p in _PORTS[name](conf) if _port_open(h, p)]
        if busy:
            raise ServiceError(f"{name}: {', '.join(busy)} already in use by a process this "
                               f"project did not start (no live pid in {_pid_file(name, conf)}); "
                               f"stop it or change the port in conf/services.toml")
        _UP[name](conf)
    return status(names, conf)


def down(names: Sequence[str] | None, conf: ServicesConf) -> None:
    """Stop each running service cleanly (SIGTERM, SIGKILL after a minute); data is kept."""
    for name in _check_names(names):
        pid = _running_pid(name, conf)
        if pid is None:
            logger.info("%s is not running", name)
            continue
        _stop_pid(name, pid)
        _pid_file(name, conf).unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m soads.services up|down|status [name ...] [--conf PATH]``."""
    ap = argparse.ArgumentParser(prog="python -m soads.services",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=["up", "down", "status"])
    ap.add_argument("names", nargs="*", metavar="name",
                    help=f"any of {', '.join(NAMES)} (default all)")
    ap.add_argument("--conf", default=str(DEFAULT_CONF), help="services TOML (%(default)s)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    conf = load_conf(args.conf, os.environ)
    try:
        if args.action == "down":
            down(args.names, conf)
            return 0
        result = (up if args.action == "up" else status)(args.names, conf)
    except ServiceError as e:
        logger.error("%s", e)
        return 1
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0 if all(r["healthy"] for r in result.values()) or args.action == "status" else 1


if __name__ == "__main__":
    sys.exit(main())
