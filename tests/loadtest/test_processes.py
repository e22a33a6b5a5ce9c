"""Child processes are always stopped, whole group included; probes fail with a reason."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtest.processes import (
    BenchError,
    ProcStat,
    child_process,
    find_tool,
    free_port,
    group_cpu_seconds,
    group_rss_bytes,
    parse_proc_stat,
    parse_vm_rss_bytes,
    stop_stray_children,
    tool_version,
    wait_until_up,
)

# Forks a grandchild into the same process group, reports its pid on stdout, and makes
# both ignore SIGTERM, so that only the SIGKILL escalation can stop them.
_STUBBORN = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
time.sleep(60)
"""


def _read_line(fd: int, timeout: float) -> str:
    readable, _, _ = select.select([fd], [], [], timeout)
    assert readable, "the child did not report in time"
    return os.read(fd, 100).decode()


def test_child_process_kills_a_stubborn_child_and_its_grandchild(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    # A FIFO as the log lets the test wait for the grandchild's pid without sleeping.
    os.mkfifo(log)
    reader = os.open(log, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with child_process([sys.executable, "-c", _STUBBORN], log, grace=0.2) as proc:
            grandchild = int(_read_line(reader, timeout=15))
            # A pidfd becomes readable when the process ends: no polling loop needed.
            pidfd = os.pidfd_open(grandchild)
        assert proc.returncode == -9
        assert select.select([pidfd], [], [], 10)[0], "the grandchild survived"
        os.close(pidfd)
    finally:
        os.close(reader)


def test_child_process_stops_the_child_on_an_exception(tmp_path: Path) -> None:
    with (
        pytest.raises(KeyboardInterrupt),
        child_process(["sleep", "60"], tmp_path / "log") as proc,
    ):
        raise KeyboardInterrupt
    assert proc.returncode == -15


def test_child_process_writes_output_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with child_process(["sh", "-c", "echo out; echo err >&2"], log) as proc:
        assert proc.wait(timeout=10) == 0
    assert log.read_text().split() == ["out", "err"]


def test_stray_children_leading_their_own_group_are_killed() -> None:
    stray = subprocess.Popen(["sleep", "60"], start_new_session=True)
    same_group = subprocess.Popen(["sleep", "60"])
    try:
        stop_stray_children()
        assert stray.wait(timeout=10) == -signal.SIGKILL
        assert same_group.poll() is None, "a child in our own group is not a stray"
    finally:
        for proc in (stray, same_group):
            proc.kill()
            proc.wait()


def test_wait_until_up_reports_an_early_exit_with_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with child_process(["sh", "-c", "echo cannot bind; exit 3"], log) as proc:
        proc.wait(timeout=10)
        with pytest.raises(BenchError, match=r"(?s)thing exited with 3.*cannot bind"):
            wait_until_up("thing", proc, free_port(), "/health", log, attempts=5)


def test_wait_until_up_gives_up_after_its_attempts(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with child_process(["sleep", "60"], log) as proc:
        started = time.monotonic()
        with pytest.raises(BenchError, match="did not answer GET /health with 200"):
            wait_until_up("thing", proc, free_port(), "/health", log, attempts=3)
        assert time.monotonic() - started < 5


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_find_tool_names_the_package_to_install() -> None:
    with pytest.raises(BenchError, match="apt-get install -y some-package"):
        find_tool("no-such-tool-here", "some-package")


def test_tool_version_takes_the_first_line_even_on_a_failing_exit() -> None:
    assert tool_version(["sh", "-c", "echo 'wrk 4.1.0'; echo usage; exit 1"]) == "wrk 4.1.0"


def test_parse_proc_stat_survives_odd_command_names() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime ...; the command name may hold spaces and parentheses.
    text = "4242 (a) b (c)) S 1 777 777 0 -1 4194304 10 0 0 0 31 11 0 0 20 0 1 0 9 0 0\n"
    assert parse_proc_stat(text) == ProcStat(ppid=1, pgrp=777, cpu_ticks=42)


def test_parse_proc_stat_reads_this_process() -> None:
    stat = parse_proc_stat(Path("/proc/self/stat").read_text())
    assert stat.ppid == os.getppid()
    assert stat.pgrp == os.getpgrp()
    assert stat.cpu_ticks >= 0


def test_group_cpu_counts_this_process() -> None:
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass  # burn a little CPU so the figure is not 0
    # /proc counts in clock ticks (usually 10 ms): allow one tick per thread of slack.
    assert group_cpu_seconds(os.getpgrp()) >= time.process_time() - 0.05


def test_group_cpu_of_an_empty_group_is_zero() -> None:
    with open("/proc/sys/kernel/pid_max") as pid_max:
        assert group_cpu_seconds(int(pid_max.read()) + 1) == 0.0


# A /proc-like tree: pid -> (process group, status text). 12 is a kernel thread (no VmRSS).
_FAKE_PROC = {
    10: (77, "Name:\tnginx\nVmPeak:\t  9000 kB\nVmRSS:\t    1000 kB\nThreads:\t1\n"),
    11: (77, "Name:\tnginx\nVmRSS:\t      24 kB\n"),
    12: (77, "Name:\tkworker\nThreads:\t1\n"),
    13: (78, "Name:\tother\nVmRSS:\t  500000 kB\n"),
}


def _stat_line(pid: int, pgrp: int) -> str:
    return f"{pid} (x) S 1 {pgrp} {pgrp} 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 9 0 0\n"


def _fake_proc(root: Path) -> Path:
    for pid, (pgrp, status) in _FAKE_PROC.items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(_stat_line(pid, pgrp))
        (root / str(pid) / "status").write_text(status)
    (root / "self").mkdir()  # not a pid: ignored
    (root / "14").mkdir()  # a process that ended, its files gone: ignored
    return root


def test_vm_rss_is_read_in_kib() -> None:
    assert parse_vm_rss_bytes(_FAKE_PROC[10][1]) == 1000 * 1024


def test_a_process_without_vm_rss_counts_zero() -> None:
    assert parse_vm_rss_bytes(_FAKE_PROC[12][1]) == 0


def test_group_rss_sums_the_group_only(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path)
    assert group_rss_bytes(77, proc) == (1000 + 24) * 1024
    assert group_rss_bytes(78, proc) == 500000 * 1024
    assert group_rss_bytes(79, proc) == 0


def test_group_cpu_reads_the_given_proc_tree(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path)
    assert group_cpu_seconds(77, proc) == pytest.approx(3 * 7 / os.sysconf("SC_CLK_TCK"))


def test_group_rss_counts_this_process() -> None:
    own = parse_vm_rss_bytes(Path("/proc/self/status").read_text())
    assert own > 1024 * 1024
    # Other processes may share our group (a shell pipeline, pytest-xdist's workers).
    assert group_rss_bytes(os.getpgrp()) >= own * 0.9
