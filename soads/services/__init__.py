"""Real components for development and tests: install, start, stop and health-check Apache
Kafka, MariaDB, Apache HBase (+ its Thrift server) and Prometheus Alertmanager locally, without
Docker.

DESIGN "Real components": the project's own files install and start every real part on a fresh
machine. One module per part (:mod:`~soads.services.kafka`, :mod:`~soads.services.mariadb`,
:mod:`~soads.services.hbase`, :mod:`~soads.services.alertmanager`), the process helpers they
share in :mod:`~soads.services.proc`, settings in conf/services.toml (``[services] [kafka]
[mariadb] [hbase] [alertmanager]``, read by
:func:`soads.config.load`). Data, logs and pid files live under ``<root>/<name>`` outside the
clone; jars under ``<jars>/``; ``~/.m2`` caches Maven downloads.

Usage::

    python -m soads.services up [kafka|mariadb|hbase|alertmanager ...] [--conf TOML] [-v]
    python -m soads.services status [kafka|mariadb|hbase|alertmanager ...]      # JSON
    python -m soads.services down [kafka|mariadb|hbase|alertmanager ...]
    python -m soads.services install [kafka|mariadb|hbase|alertmanager ...]     # jars / package

No name means all four: ``up`` starts them in the order kafka, mariadb, hbase, alertmanager;
``down`` stops them in reverse. ``up`` is idempotent: a service that is already healthy is left
alone. It returns once every service answers (Kafka: create and list a topic with kafka-python;
MariaDB: ``SELECT 1`` over TCP as the application user; HBase: a happybase write;
Alertmanager: ``GET /-/ready``) or raises
:class:`ServiceError` with the last lines of the service's log. MariaDB needs the database
password (``SOADS_DB_PASSWORD`` or ``SOADS_DB_PASSWORD_FILE``; ``make up`` writes a development
one). Quiet by default: one line per service; ``-v`` logs every step and the client libraries.

This package imports neither pyspark nor torch.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Iterable, Sequence

from soads import config
from soads.config import Config
from soads.services import alertmanager, hbase, kafka, mariadb, proc
from soads.services.proc import ServiceError

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONF = REPO / "conf" / "services.toml"
NAMES = ("kafka", "mariadb", "hbase", "alertmanager")
_PARTS = {"kafka": kafka, "mariadb": mariadb, "hbase": hbase, "alertmanager": alertmanager}

# addresses for clients, from the same settings
kafka_bootstrap = kafka.bootstrap
mysql_url = mariadb.mysql_url
hbase_location = hbase.location
alertmanager_url = alertmanager.url

__all__ = ["NAMES", "DEFAULT_CONF", "ServiceError", "alertmanager_url", "check", "down",
           "hbase_location", "kafka_bootstrap", "main", "mysql_url", "status", "up"]


def _check_names(names: Iterable[str] | None) -> list[str]:
    names = list(names or NAMES)
    bad = [n for n in names if n not in NAMES]
    if bad:
        raise ServiceError(f"unknown service(s) {bad}; choose from {list(NAMES)}")
    return names


def check(name: str, cfg: Config) -> None:
    """Run the health check of ``name`` once against the configured address, whoever started
    the service; raises (:class:`ServiceError`, or the client library's error) when it fails."""
    _PARTS[_check_names([name])[0]].probe(cfg)


def status(names: Sequence[str] | None, cfg: Config) -> dict[str, dict]:
    """State of each service (all when ``names`` is empty).

    Returns
    -------
    ``{name: {"running", "pid", "healthy", "address", "version", "dir", "log", "error", ...}}``;
    ``healthy`` means the health check answered just now; ``error`` is its failure or None.
    HBase adds ``thrift_pid`` and ``location``; Alertmanager ``config`` (its rendered file).
    """
    out = {}
    for name in _check_names(names):
        part = _PARTS[name]
        st = part.status(cfg)
        healthy, error = False, None
        if st["running"]:
            try:
                part.probe(cfg)
                healthy = True
            except Exception as e:  # noqa: BLE001 - reported in the result, not swallowed
                error = repr(e)
        out[name] = {**st, "healthy": healthy, "error": error}
    return out


def up(names: Sequence[str] | None, cfg: Config) -> dict[str, dict]:
    """Install (if needed) and start each service, waiting until it is healthy. Idempotent.

    Raises :class:`ServiceError` when a service does not answer within its start timeout, with
    the last lines of its log, or when its ports are held by a process this project did not
    start. Returns :func:`status` of the services.
    """
    names = _check_names(names)
    for name in names:
        part = _PARTS[name]
        part.home(cfg).mkdir(parents=True, exist_ok=True)
        st = part.status(cfg)
        if st["running"]:
            if name == "mariadb":  # the user's password follows SOADS_DB_PASSWORD(_FILE)
                mariadb.ensure_user(cfg)
            pids = [(pid, None) for pid in (st["pid"], st.get("thrift_pid")) if pid]
            secs = proc.wait_healthy(name, lambda: part.probe(cfg), cfg.services.start_timeout,
                                     pids, [Path(st["log"])], owned=False)
            logger.info("%s already running (pid %d), healthy after %.1fs", name, st["pid"], secs)
            continue
        ports = part.addresses(cfg)
        if name == "hbase":  # a master without its Thrift server is completed by start()
            master, _ = hbase.running_pids(cfg)
            ports = ports if master is None else part.addresses(cfg, ("thrift",))
        busy = proc.busy_ports(ports)
        if busy:
            raise ServiceError(f"{name}: {', '.join(busy)} already in use by a process this "
                               f"project did not start (no live pid under {part.home(cfg)}); "
                               f"stop it or change the port in conf/services.toml")
        part.start(cfg)
    return status(names, cfg)


def install(names: Sequence[str] | None, cfg: Config) -> None:
    """Fetch what each service runs from (Kafka's and HBase's jars, Debian's mariadb-server and
    prometheus-alertmanager) without starting it: for an image built ahead of its first start."""
    for name in _check_names(names):
        where = {"kafka": lambda: kafka.broker_jars(cfg), "mariadb": mariadb.install,
                 "hbase": lambda: hbase.install(cfg), "alertmanager": alertmanager.install}[name]()
        logger.info("%s installed: %s", name, where)


def down(names: Sequence[str] | None, cfg: Config) -> None:
    """Stop each running service cleanly (SIGTERM, SIGKILL after a minute), in the reverse of
    the start order; data is kept."""
    for name in reversed(_check_names(names)):
        if not _PARTS[name].stop(cfg):
            logger.info("%s is not running", name)


def _logging(verbose: bool) -> None:
    # quiet: this package's one line per service; verbose: every step, and the INFO lines of
    # the client libraries (kafka-python logs ~40 per start)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose
                        else "%(message)s")
    logging.getLogger("soads").setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m soads.services up|down|status [name ...] [--conf PATH] [-v]``."""
    ap = argparse.ArgumentParser(prog="python -m soads.services",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=["up", "down", "status", "install"])
    ap.add_argument("names", nargs="*", metavar="name",
                    help=f"any of {', '.join(NAMES)} (default all)")
    ap.add_argument("--conf", action="append", default=None, metavar="TOML",
                    help=f"services settings (default {DEFAULT_CONF.relative_to(REPO)})")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every step")
    args = ap.parse_args(argv)
    _logging(args.verbose)
    try:
        cfg = config.load(args.conf or [DEFAULT_CONF])
        if args.action in ("down", "install"):
            (down if args.action == "down" else install)(args.names, cfg)
            return 0
        if args.action == "up":
            result = up(args.names, cfg)
        else:
            result = status(args.names, cfg)
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
    except (ServiceError, config.ConfigError) as e:
        logger.error("%s", e)
        return 1
    if all(r["healthy"] for r in result.values()):
        return 0
    return 3 if args.action == "status" else 1  # status: 3 = reported, not all healthy
