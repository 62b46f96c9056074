"""MariaDB: Debian's ``mariadb-server`` run in the foreground of a process we own.

Data dir, socket, log and pid file under ``<root>/mariadb``. At every start the database and
the application user are created (or the user's password reset) as root over the unix socket,
with the password :func:`soads.config.load` took from ``SOADS_DB_PASSWORD`` /
``SOADS_DB_PASSWORD_FILE``; then the SOADS tables are created. Health: ``SELECT 1`` over TCP as
the application user.
"""
from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
from pathlib import Path
from urllib.parse import quote_plus

import soads.services.proc as proc
from soads.config import PASSWORD_ENV, PASSWORD_FILE_ENV, Config
from soads.services.proc import ProbeBroken, ServiceError

logger = logging.getLogger(__name__)


def home(cfg: Config) -> Path:
    return Path(os.path.expanduser(cfg.services.root)) / "mariadb"


def pid_file(cfg: Config) -> Path:
    return home(cfg) / "mariadb.pid"


def log_file(cfg: Config) -> Path:
    return home(cfg) / "mariadb.log"


def addresses(cfg: Config) -> list[tuple[str, int]]:
    return [(cfg.mariadb.host, cfg.mariadb.port)]


def running_pid(cfg: Config) -> int | None:
    return proc.running_pid(pid_file(cfg), ["mariadbd", str(home(cfg))])


def password(cfg: Config) -> str:
    if not cfg.mariadb.password:
        raise ServiceError(f"no database password: set {PASSWORD_ENV} or {PASSWORD_FILE_ENV} "
                           "(make up writes a development one)")
    return cfg.mariadb.password


def mysql_url(cfg: Config, database: str | None = None) -> str:
    """SQLAlchemy URL of the application user over TCP, e.g.
    ``mysql+pymysql://soads:...@127.0.0.1:3306/soads``."""
    m = cfg.mariadb
    return (f"mysql+pymysql://{quote_plus(m.user)}:{quote_plus(password(cfg))}"
            f"@{m.host}:{m.port}/{database or m.database}")


def _mariadbd() -> str | None:
    return shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")


def install() -> str:
    """Path of ``mariadbd``, installing Debian's ``mariadb-server`` when it is missing (root)."""
    found = _mariadbd()
    if found:
        return found
    if os.geteuid() != 0:
        raise ServiceError("mariadbd not found; install it with: "
                           "sudo apt-get install -y mariadb-server")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "-q", "mariadb-server"]
    logger.info("installing mariadb-server (apt-get)")
    try:
        proc.run(argv, "apt-get install mariadb-server", env=env)
    except ServiceError:  # a fresh machine has no package lists yet
        proc.run(["apt-get", "update", "-q"], "apt-get update", env=env)
        proc.run(argv, "apt-get install mariadb-server", env=env)
    found = _mariadbd()
    if not found:
        raise ServiceError("mariadb-server installed but mariadbd is not on PATH or in /usr/sbin")
    return found


def version() -> str | None:
    exe = _mariadbd()
    if exe is None:
        return None
    res = subprocess.run([exe, "--version"], capture_output=True, text=True)
    return res.stdout.split(" Ver ")[-1].split(" for ")[0].strip() or None


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


def _sql_literal(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _bootstrap(cfg: Config, socket_path: Path) -> None:
    """Create the database and the application user (for 127.0.0.1 and localhost) as root over
    the unix socket; root cannot log in over TCP. The user may create ``soads*`` databases (the
    DDL test applies sql/mysql.sql to a fresh one)."""
    m, pw = cfg.mariadb, _sql_literal(password(cfg))
    stmts = [f"CREATE DATABASE IF NOT EXISTS `{m.database}`"]
    for host in ("127.0.0.1", "localhost"):
        acct = f"{_sql_literal(m.user)}@{_sql_literal(host)}"
        stmts += [f"CREATE USER IF NOT EXISTS {acct} IDENTIFIED BY {pw}",
                  f"ALTER USER {acct} IDENTIFIED BY {pw}",
                  f"GRANT ALL PRIVILEGES ON `{m.database}`.* TO {acct}",
                  f"GRANT ALL PRIVILEGES ON `{m.database}\\_%`.* TO {acct}"]
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        raise ServiceError("the mariadb client is missing (package mariadb-client)")
    proc.run([client, f"--socket={socket_path}", "-u", "root", "--batch"],
             "create database and user", input=";\n".join(stmts) + ";\n")


def ensure_user(cfg: Config) -> None:
    """On a running server: (re)create the database and the application user with the current
    password (the password file may be newer than the server)."""
    _bootstrap(cfg, home(cfg) / "mysqld.sock")


def probe(cfg: Config) -> None:
    """``SELECT 1`` over TCP as the application user."""
    try:
        import pymysql
    except ImportError as e:
        raise ProbeBroken("PyMySQL is needed for the MariaDB health check: "
                          "pip install -e '.[mysql]'") from e
    m = cfg.mariadb
    conn = pymysql.connect(host=m.host, port=m.port, user=m.user, password=password(cfg),
                           database=m.database, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            if cur.fetchone() != (1,):
                raise ServiceError("SELECT 1 did not return 1")
    finally:
        conn.close()


def _socket_probe(socket_path: Path):
    def probe_socket() -> None:
        if not socket_path.exists():
            raise ServiceError(f"no socket {socket_path} yet")
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(socket_path))
    return probe_socket


def start(cfg: Config) -> int:
    """Initialise the data dir once, start mariadbd, create the database, user and tables, wait
    until healthy. Returns the pid."""
    password(cfg)  # before anything starts: without one the bootstrap cannot create the user
    mariadbd = install()
    d = home(cfg)
    data, sock = d / "data", d / "mysqld.sock"
    d.mkdir(parents=True, exist_ok=True)
    user = _os_user_for(d)
    if user != "root" and os.geteuid() == 0:
        shutil.chown(d, user, user)
    if not (data / "mysql").is_dir():
        shutil.rmtree(data, ignore_errors=True)
        install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if install_db is None:
            raise ServiceError("mariadb-install-db is missing (package mariadb-server)")
        proc.run([install_db, "--no-defaults", f"--user={user}", f"--datadir={data}",
                  "--skip-test-db", "--auth-root-authentication-method=socket"],
                 "initialise MariaDB data dir")
    argv = [mariadbd, "--no-defaults", f"--user={user}", f"--datadir={data}",
            f"--socket={sock}", f"--port={cfg.mariadb.port}",
            f"--bind-address={cfg.mariadb.host}", f"--pid-file={d / 'mariadbd.pid'}",
            # small footprint for a development box
            "--innodb-buffer-pool-size=128M", "--max-connections=200",
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
            # EPCIS documents up to 10 MB travel in one statement
            "--max-allowed-packet=64M"]
    pid = proc.spawn(argv, log_file(cfg), pid_file(cfg), d)
    wait = dict(timeout=cfg.services.start_timeout, procs=[(pid, pid_file(cfg))],
                logs=[log_file(cfg)])
    proc.wait_healthy("mariadb", _socket_probe(sock), **wait)
    _bootstrap(cfg, sock)
    secs = proc.wait_healthy("mariadb", lambda: probe(cfg), **wait)
    from soads.storage.tables import create_tables, engine

    eng = engine(mysql_url(cfg))
    try:
        create_tables(eng)
    finally:
        eng.dispose()
    logger.info("mariadb healthy on %s:%d (pid %d, schema applied) after %.1fs",
                cfg.mariadb.host, cfg.mariadb.port, pid, secs)
    return pid


def stop(cfg: Config) -> bool:
    stopped = proc.stop(running_pid(cfg), "mariadb")
    pid_file(cfg).unlink(missing_ok=True)
    return stopped


def status(cfg: Config) -> dict:
    pid = running_pid(cfg)
    return {"running": pid is not None, "pid": pid,
            "address": f"{cfg.mariadb.host}:{cfg.mariadb.port}", "version": version(),
            "dir": str(home(cfg)), "log": str(log_file(cfg))}
