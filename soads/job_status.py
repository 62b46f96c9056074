"""Which jobs are running: one pid file per job process (``soads jobs`` reads them).

A job in ``jobs/`` calls :func:`job_started` first thing in ``main``: it writes
``<directory>/<name>-<pid>.json`` (name, pid, conf files, arguments, working directory, start
time) and removes it again when the process exits normally. A job that is killed leaves its file
behind; :func:`list_jobs` reports such a file as dead (no process with that pid and start time)
and deletes it. The start time of the process (``/proc/<pid>/stat``) is kept beside the pid, so a
pid the system has since given to another process does not pass for the job.

The default directory is ``$SOADS_CACHE/jobs`` (``~/.cache/soads/jobs``): outside any clone, so
``soads jobs`` sees the jobs of every clone on this machine.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> path = write_pid_file("demo_job", ["conf/soads.toml"], d, argv=["--conf", "conf/soads.toml"])
>>> [(j["name"], j["alive"], j["conf"]) for j in list_jobs(d)]
[('demo_job', True, ['conf/soads.toml'])]
"""
from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import sys
from typing import Sequence

logger = logging.getLogger(__name__)

# Library loggers that print INFO lines a job's user does not need (kafka-python logs every
# connection and metadata refresh at INFO).
NOISY_LOGGERS = ("kafka", "py4j", "sqlalchemy")


def default_dir() -> str:
    """``$SOADS_CACHE/jobs``, by default ``~/.cache/soads/jobs`` (called by entry points only)."""
    cache = os.environ.get("SOADS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "soads")
    return os.path.join(cache, "jobs")


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or
    None where there is no ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may itself hold spaces or parentheses
    return stat[stat.rindex(")") + 2:].split()[19]


def _alive(pid: int, proc_start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return proc_start is None or _proc_start(pid) in (None, proc_start)


def write_pid_file(name: str, conf: Sequence[str], directory: str,
                   argv: Sequence[str] | None = None) -> str:
    """Write this process's pid file for job ``name``; returns its path."""
    os.makedirs(directory, exist_ok=True)
    pid = os.getpid()
    record = {
        "name": name, "pid": pid, "proc_start": _proc_start(pid),
        "conf": [str(c) for c in conf],
        "argv": list(sys.argv[1:] if argv is None else argv),
        "cwd": os.getcwd(),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    path = os.path.join(directory, f"{name}-{pid}.json")
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(record, fh)
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def _remove(path: str, pid: int) -> None:
    if os.getpid() == pid:  # not from a forked child (Spark's Python workers fork)
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def job_started(name: str, conf: Sequence[str] = (), directory: str | None = None) -> str:
    """The common start of every job: its pid file (removed at a normal exit) and quiet
    library loggers. Returns the pid file's path."""
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    path = write_pid_file(name, conf, directory or default_dir())
    atexit.register(_remove, path, os.getpid())
    logger.info("job %s running as pid %d (pid file %s)", name, os.getpid(), path)
    return path


def list_jobs(directory: str | None = None, clean: bool = True) -> list[dict]:
    """Every pid file's record plus ``alive`` (bool) and ``path``, oldest start first. Dead
    ones (and unreadable files) are deleted when ``clean``; they are still returned once."""
    directory = directory or default_dir()
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    jobs = []
    for n in names:
        path = os.path.join(directory, n)
        try:
            with open(path) as fh:
                rec = json.load(fh)
            rec["alive"] = _alive(int(rec["pid"]), rec.get("proc_start"))
        except (OSError, ValueError, KeyError, TypeError) as e:
            rec = {"name": n[:-len(".json")], "pid": None, "conf": [], "started": None,
                   "alive": False, "error": f"unreadable pid file: {e}"}
        rec["path"] = path
        if not rec["alive"] and clean:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        jobs.append(rec)
    jobs.sort(key=lambda r: (r.get("started") or "", r["name"]))
    return jobs
