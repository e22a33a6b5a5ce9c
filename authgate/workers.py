"""`authgate proxy --workers N`: N worker processes sharing one port, under a supervisor.

Each worker is a full `authgate proxy` process that binds the port with SO_REUSEPORT, so
the kernel spreads connections over the workers without a process in between. The
supervisor only starts workers, restarts one that dies (after a short pause when it dies
at once, so a broken configuration does not spin), and on SIGTERM or SIGINT passes the
signal on and waits for the workers to drain; a second signal kills them.

Metrics: prometheus-client's multiprocess mode needs one directory shared by the workers,
set before any of them imports the library. The supervisor creates it when
`PROMETHEUS_MULTIPROC_DIR` is not set, empties it at start, and clears a dead worker's
live gauges.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

WORKER_VARIABLE = "AUTHGATE_WORKER"
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# A worker that dies sooner than this after its start waits this long before its restart.
RESTART_PAUSE_SECONDS = 1.0

Say = Callable[[str], None]


def worker_command() -> list[str]:
    return [sys.executable, "-m", "authgate", "proxy", "--workers", "1"]


class Supervisor:
    def __init__(self, count: int, say: Say, command: Sequence[str] | None = None) -> None:
        self._count = count
        self._say = say
        self._command = list(command or worker_command())
        self._workers: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self._stopping = False
        self._signals = 0
        self._owned_dir: Path | None = None

    def run(self) -> int:
        environ = self._environment()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            for _ in range(self._count):
                self._start(environ)
            self._say(f"supervising {self._count} proxy workers")
            return self._watch(environ)
        finally:
            self._kill_all()
            if self._owned_dir is not None:
                shutil.rmtree(self._owned_dir, ignore_errors=True)

    def _environment(self) -> dict[str, str]:
        environ = {**os.environ, WORKER_VARIABLE: "1"}
        directory = environ.get(MULTIPROC_VARIABLE)
        if directory:
            path = Path(directory)
            path.mkdir(parents=True, exist_ok=True)
            for stale in path.glob("*.db"):
                stale.unlink()
        else:
            self._owned_dir = Path(tempfile.mkdtemp(prefix="authgate-metrics-"))
            environ[MULTIPROC_VARIABLE] = str(self._owned_dir)
        return environ

    def _start(self, environ: dict[str, str]) -> None:
        process = subprocess.Popen(self._command, env=environ)  # noqa: S603 - our own argv
        self._workers[process.pid] = (process, time.monotonic())

    def _watch(self, environ: dict[str, str]) -> int:
        while self._workers:
            pid, status = _wait_any()
            if pid < 0:
                break  # no child left to wait for
            if pid == 0:
                continue
            entry = self._workers.pop(pid, None)
            if entry is None:
                continue
            _forget_metrics(pid, environ[MULTIPROC_VARIABLE])
            if self._stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            self._say(f"worker {pid} exited with {code}; starting another")
            if time.monotonic() - entry[1] < RESTART_PAUSE_SECONDS:
                time.sleep(RESTART_PAUSE_SECONDS)
            if not self._stopping:
                self._start(environ)
        return 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        self._stopping = True
        if self._signals > 1:
            self._kill_all()
            return
        for process, _ in self._workers.values():
            process.send_signal(signal.SIGTERM)

    def _kill_all(self) -> None:
        for process, _ in list(self._workers.values()):
            if process.poll() is None:
                process.kill()


def _wait_any() -> tuple[int, int]:
    try:
        return os.waitpid(-1, 0)
    except ChildProcessError:
        return -1, 0


def _forget_metrics(pid: int, directory: str) -> None:
    # Imported here: prometheus-client reads PROMETHEUS_MULTIPROC_DIR at import time, and
    # the supervisor sets it before this point.
    from proxy import metrics

    metrics.process_exited(pid, directory)
