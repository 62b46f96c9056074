"""Process helpers shared by the services: ports, pid files, spawn, tail, stop, wait healthy.

A service process runs in its own session (it outlives the command that started it), writes
stdout and stderr to a log file, and has a pid file. A pid file counts only while its process
still runs our command line (pids get reused): :func:`running_pid`.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

logger = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A service could not be installed, started or reached."""


class ProbeBroken(ServiceError):
    """A health check that cannot succeed by waiting (missing client library, bad settings)."""


# failures of the probe itself, not of the service: waiting longer would not help
FATAL = (ProbeBroken, ImportError, TypeError, AttributeError, NameError)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def busy_ports(addresses: Iterable[tuple[str, int]]) -> list[str]:
    """``host:port`` of each address something already listens on."""
    return [f"{h}:{p}" for h, p in addresses if port_open(h, p)]


def tail(path: Path, n: int = 30) -> str:
    """The last ``n`` lines of a log file (read from its last 64 KB)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(lines[-n:])


def alive(pid: int | None) -> bool:
    """True while ``pid`` exists and is not a zombie (a child of ours that died)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return False
    return not stat[stat.rfind(")") + 2:].startswith(("Z", "X"))


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(pid_file: Path, markers: Iterable[str]) -> int | None:
    """The pid in ``pid_file`` when that process is alive and its command line holds every one
    of ``markers`` (main class or binary, and the service's directory); else None, and a stale
    pid file is removed. An empty command line (a java launcher caught re-executing itself)
    counts as ours."""
    pid = read_pid(pid_file)
    if pid is None:
        return None
    cmd = _cmdline(pid) if alive(pid) else None
    if cmd is not None and (not cmd or all(m.encode() in cmd for m in markers)):
        return pid
    logger.info("removing stale pid file %s (pid %s)", pid_file, pid)
    pid_file.unlink(missing_ok=True)
    return None


def spawn(argv: list[str], log: Path, pid_file: Path, cwd: Path) -> int:
    """Start ``argv`` in its own session, stdout+stderr appended to ``log`` after a header line
    with the command; write ``pid_file``. Returns the pid."""
    with open(log, "ab") as fh:
        fh.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(argv)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=cwd)
    pid_file.write_text(f"{proc.pid}\n")
    logger.debug("started pid %d: %s (log %s)", proc.pid, argv[0], log)
    return proc.pid


def stop(pid: int | None, what: str, timeout: float = 60.0) -> bool:
    """SIGTERM (Kafka, MariaDB and HBase all shut down cleanly on it), SIGKILL after
    ``timeout`` seconds. Returns False when there was nothing to stop."""
    if not alive(pid):
        return False
    logger.info("%s: stopping pid %d", what, pid)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # reap it if it is our child (started by this process)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not alive(pid):
            return True
        time.sleep(0.2)
    logger.warning("%s: pid %d ignored SIGTERM for %.0fs, killing", what, pid, timeout)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def wait_healthy(what: str, probe: Callable[[], None], timeout: float,
                 procs: Iterable[tuple[int, Path]], logs: Iterable[Path],
                 owned: bool = True) -> float:
    """Poll ``probe`` once a second until it returns; fail early when one of ``procs`` (pid,
    pid file) dies, and after ``timeout`` seconds. On a failure the error carries the last
    lines of ``logs``, and ``procs`` are stopped and their pid files removed when ``owned``
    (this call's caller started them). Returns the seconds waited."""
    procs, logs = list(procs), list(logs)

    def fail(msg: str, cause: BaseException | None = None):
        for pid, pid_file in procs if owned else ():
            stop(pid, what)
            pid_file.unlink(missing_ok=True)
        tails = "".join(f"\nlast lines of {p}:\n{tail(p)}" for p in logs)
        raise ServiceError(msg + tails) from cause

    t0 = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - t0 < timeout:
        dead = [pid for pid, _ in procs if not alive(pid)]
        if dead:
            fail(f"{what} exited during start-up (pid {dead[0]})")
        try:
            probe()
            return time.monotonic() - t0
        except FATAL as e:
            fail(f"{what}: the health check cannot work: {e}", e)
        except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"; reported below
            last = e
        time.sleep(1.0)
    fail(f"{what} did not answer within {timeout:.0f}s (last error: {last!r})")


def run(argv: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    """Run a set-up command to completion; a non-zero exit is a ServiceError with its output."""
    logger.debug("%s: %s", what, " ".join(argv))
    res = subprocess.run(argv, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise ServiceError(f"{what} failed (exit {res.returncode}): {' '.join(argv)}\n"
                           f"{(res.stdout + res.stderr)[-4000:]}")
    return res


def java() -> str:
    found = shutil.which("java")
    if found is None:
        raise ServiceError("Java 17+ is needed for Kafka and HBase: "
                           "apt-get install openjdk-17-jre-headless")
    return found
