"""Starting, probing and stopping the local servers a benchmark run needs (Linux)."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final, NamedTuple

Headers = tuple[tuple[str, str], ...]


class BenchError(Exception):
    """A condition that makes the measurement meaningless; the message says what to fix."""


@contextmanager
def child_process(
    command: Sequence[str], log: Path, env: Mapping[str, str] | None = None, grace: float = 10.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in its own process group; on exit stop the whole group.

    The group gets SIGTERM, then SIGKILL if the leader has not exited after ``grace``
    seconds; output goes to ``log``.
    """
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as out:
            # A new session keeps the terminal's Ctrl-C away from the child, so that
            # stopping happens once, here, and reaches every process the child forked.
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        yield proc
    finally:
        if proc is not None:
            stop_process_group(proc, grace)
        else:
            # An interrupt (Ctrl-C, SIGTERM) that lands inside Popen after the fork leaves
            # a child that no Popen object holds.
            stop_stray_children()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def stop_process_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    _signal_group(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    # Whatever is left: a leader that ignored SIGTERM, or a process it left behind (the
    # worker of a crashed nginx master).
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_tool(name: str, package: str, *, install: bool = False) -> str:
    """The path of `name`; with `install`, Debian's `package` is installed first when
    `name` is missing and apt-get can be run (as root)."""
    found = _which(name)
    if found is None and install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"bench: installing {package} (apt-get)", file=sys.stderr, flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", package],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True,
            timeout=600,
            check=False,
        )
        found = _which(name)
    if found is None:
        raise BenchError(f"{name} not found; install it with: apt-get install -y {package}")
    return found


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def tool_version(command: Sequence[str]) -> str:
    # Not checked: wrk prints its version and then exits 1 with its usage text.
    done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    lines = (done.stdout + done.stderr).splitlines()
    return lines[0].strip() if lines else "?"


def http_request(
    port: int,
    method: str,
    path: str,
    headers: Headers = (),
    body: bytes | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_until_up(
    name: str, proc: subprocess.Popen[bytes], port: int, path: str, log: Path, attempts: int
) -> None:
    """Poll ``GET path`` until it answers 200; fail fast if the process dies."""
    for _ in range(attempts):
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}; log:\n{tail(log)}")
        try:
            if http_request(port, "GET", path, timeout=1.0)[0] == 200:
                return
        except (OSError, http.client.HTTPException):
            pass  # not listening, or not speaking HTTP yet
        time.sleep(0.1)
    raise BenchError(f"{name} did not answer GET {path} with 200 in time; log:\n{tail(log)}")


# --- CPU and memory accounting ----------------------------------------------------------

PROC: Final = Path("/proc")


class ProcStat(NamedTuple):
    ppid: int
    pgrp: int
    cpu_ticks: int  # user + system


def parse_proc_stat(text: str) -> ProcStat:
    """Read the fields we use from the text of ``/proc/<pid>/stat``."""
    # The command name (field 2) may contain spaces and parentheses; fields after the last
    # ")" are fixed: state, ppid, pgrp, ..., utime (14th overall), stime (15th), see proc(5).
    fields = text[text.rindex(")") + 2 :].split()
    return ProcStat(int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12]))


def parse_vm_rss_bytes(status: str) -> int:
    """Resident set size from the text of ``/proc/<pid>/status`` (0 when it has none)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            # proc(5): always in kB, which the kernel means as KiB.
            return int(line.split()[1]) * 1024
    return 0  # kernel threads and zombies have no VmRSS line


def _proc_stats(proc: Path = PROC) -> Iterator[tuple[int, ProcStat]]:
    for stat in proc.glob("[0-9]*/stat"):
        try:
            yield int(stat.parent.name), parse_proc_stat(stat.read_text())
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we were looking


def _group_pids(pgid: int, proc: Path) -> Iterator[tuple[int, ProcStat]]:
    return ((pid, stat) for pid, stat in _proc_stats(proc) if stat.pgrp == pgid)


def group_cpu_seconds(pgid: int, proc: Path = PROC) -> float:
    """CPU time used so far by every live process in the group (nginx master + workers)."""
    ticks = sum(stat.cpu_ticks for _, stat in _group_pids(pgid, proc))
    return ticks / os.sysconf("SC_CLK_TCK")


def group_rss_bytes(pgid: int, proc: Path = PROC) -> int:
    """Sum of VmRSS over every live process in the group.

    Pages shared between the processes (code, a forked parent's memory) count once per
    process, so this is an upper bound of what the group holds.
    """
    total = 0
    for pid, _ in _group_pids(pgid, proc):
        try:
            total += parse_vm_rss_bytes((proc / str(pid) / "status").read_text())
        except (OSError, ValueError, IndexError):
            continue  # ended between the two reads
    return total


def stop_stray_children() -> None:
    """SIGKILL the group of every child of ours that leads its own group."""
    me = os.getpid()
    for pid, stat in _proc_stats():
        if stat.ppid == me and stat.pgrp == pid:
            _signal_group(pid, signal.SIGKILL)
