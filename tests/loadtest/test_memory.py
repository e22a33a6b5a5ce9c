"""loadtest.memory: reading RSS from /proc, the report, and a tiny real run.

The tiny run starts a real fake provider, ``authgate management`` and ``authgate proxy``
and checks every byte count; it asserts no memory threshold (those are for the full run,
``python -m loadtest.memory``). The authgate command is ``python -m authgate`` unless
``LOADTEST_AUTHGATE_CMD`` gives another prefix (shell words, the role is appended), e.g.
to try a snapshot while the working tree is mid-change:

    LOADTEST_AUTHGATE_CMD="env PYTHONPATH=/tmp/ag-head .venv/bin/python -m authgate"
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.memory import (
    MIB,
    PeakSampler,
    Settings,
    deployment,
    format_table,
    idle_phase,
    parent_pid,
    parse_args,
    parse_vm_rss,
    process_tree,
    raise_fd_limit,
    redacted,
    run_phases,
    settings_from,
    streams_phase,
    transfer_phase,
    tree_rss,
    write_result,
)
from loadtest.seed import Authgate, authgate_prefix
from tests.log_scan import watch_child

STATUS_SAMPLE = """\
Name:\tpython3
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t  123456 kB
VmRSS:\t   70004 kB
RssAnon:\t   50000 kB
Threads:\t2
"""


# --- reading memory ------------------------------------------------------------------------


def test_vm_rss_is_read_in_bytes() -> None:
    assert parse_vm_rss(STATUS_SAMPLE) == 70004 * 1024


def test_vm_rss_of_this_process_is_plausible() -> None:
    rss = parse_vm_rss(Path("/proc/self/status").read_text())
    assert 5 * MIB < rss < 4096 * MIB


@pytest.mark.parametrize(
    "text",
    [
        "Name:\tkthreadd\nState:\tS (sleeping)\n",
        "VmRSS:\t  12 MB\n",
        "VmRSS:\t  many kB\n",
        "VmRSS:\n",
    ],
)
def test_status_without_a_readable_vm_rss_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="VmRSS"):
        parse_vm_rss(text)


def test_parent_pid_survives_spaces_and_parentheses_in_the_name() -> None:
    assert parent_pid("4242 (a) b (c)) S 17 4242 4242 0 -1") == 17
    assert parent_pid(Path("/proc/self/stat").read_text()) == os.getppid()


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    # Waits on its stdin, so it lives exactly until the test closes it.
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


def test_process_tree_holds_the_root_and_its_children(child: subprocess.Popen[bytes]) -> None:
    tree = process_tree(os.getpid())
    assert tree[0] == os.getpid()
    assert child.pid in tree
    assert process_tree(child.pid) == [child.pid]


def test_tree_rss_sums_the_processes_and_skips_the_gone(child: subprocess.Popen[bytes]) -> None:
    mine = tree_rss([os.getpid()])
    theirs = tree_rss([child.pid])
    assert mine > 0
    assert theirs > 0
    both = tree_rss([os.getpid(), child.pid])
    # Our own RSS moves a little between reads; the sum is still far above either part.
    assert both > max(mine, theirs) + min(mine, theirs) // 2
    assert tree_rss([2**22 + 1]) == 0  # above pid_max's default: no such process


def test_the_sampler_keeps_the_peak_seen_while_it_ran() -> None:
    before = tree_rss([os.getpid()])
    with PeakSampler([os.getpid()]) as sampler:
        ballast = bytearray(64 * MIB)  # zero-filled: every page touched, so resident
    del ballast
    assert sampler.samples >= 2
    assert sampler.peak >= before + 60 * MIB


# --- results -------------------------------------------------------------------------------


def test_idle_passes_up_to_80_mib() -> None:
    assert idle_phase(80 * MIB).passed
    assert not idle_phase(80 * MIB + 1).passed
    assert idle_phase(70 * MIB).delta_mib is None


def test_a_transfer_passes_when_correct_and_under_50_mib_of_growth() -> None:
    idle = 70 * MIB
    passed = transfer_phase("download", idle + 49 * MIB, idle, True, "")
    assert passed.passed
    assert passed.delta_mib == pytest.approx(49.0)
    assert passed.peak_mib == pytest.approx(119.0)
    assert not transfer_phase("download", idle + 50 * MIB, idle, True, "").passed
    wrong = transfer_phase("download", idle, idle, False, "")
    assert not wrong.correct
    assert not wrong.passed


def test_slow_streams_report_growth_per_stream_in_flight() -> None:
    idle = 70 * MIB
    phase = streams_phase("1000 slow streams", idle + 40 * MIB, idle, 1000, True)
    assert phase.per_stream_kib == pytest.approx(40 * 1024 / 1000)
    assert phase.delta_mib == pytest.approx(40.0)
    assert phase.passed
    assert phase.detail == "1000 in flight at once"
    assert streams_phase("none", idle, idle, 0, False).per_stream_kib is None
    assert not streams_phase("none", idle, idle, 0, False).passed


def test_the_table_has_a_row_per_phase_and_the_details_below() -> None:
    idle = 70 * MIB
    phases = [
        idle_phase(idle),
        transfer_phase("download 1024 MiB", idle + 60 * MIB, idle, True, "took 2.0 s"),
        streams_phase("1000 slow streams", idle + 20 * MIB, idle, 1000, True),
    ]
    lines = format_table(phases).splitlines()
    assert lines[0].split() == [
        "phase",
        "peak",
        "RSS",
        "MiB",
        "delta",
        "MiB",
        "per-stream",
        "KiB",
        "target",
        "result",
    ]
    assert lines[2].split() == ["idle", "70.0", "-", "-", "≤", "80", "MiB", "pass"]
    assert lines[3].split() == [
        "download", "1024", "MiB", "130.0", "60.0", "-", "Δ", "<", "50", "MiB", "FAIL"
    ]  # fmt: skip
    assert lines[4].split()[3:6] == ["90.0", "20.0", "20.5"]
    assert lines[5:] == [
        "  download 1024 MiB: took 2.0 s",
        "  1000 slow streams: 1000 in flight at once",
    ]


def test_results_are_written_as_json(tmp_path: Path) -> None:
    phases = [idle_phase(70 * MIB)]
    settings = Settings(MIB, MIB, 2, 3, 4, 5)
    path = write_result(phases, settings, ["authgate"], tmp_path)
    assert path.parent == tmp_path
    assert path.name.startswith("memory-")
    document = json.loads(path.read_text())
    assert document["passed"] is True
    assert document["phases"][0]["name"] == "idle"
    assert document["settings"]["slow_streams"] == 2
    assert document["authgate_command"] == ["authgate"]


def test_the_recorded_command_hides_secret_assignments() -> None:
    command = ["env", "AUTHGATE_SECRET_KEY=abc", "PYTHONPATH=/x", "python", "-m", "authgate"]
    assert redacted(command) == [
        "env",
        "AUTHGATE_SECRET_KEY=<redacted>",
        "PYTHONPATH=/x",
        "python",
        "-m",
        "authgate",
    ]


def test_command_line_defaults_are_the_full_run() -> None:
    settings = settings_from(parse_args([]))
    assert settings == Settings(1024 * MIB, 1024 * MIB, 1000, 30, 100, 1024)
    assert settings.slow_stream_bytes == 30 * 1024


@pytest.mark.parametrize("option", ["--stream-mib", "--slow-streams", "--slow-chunk-size"])
def test_command_line_refuses_zero_sizes(option: str) -> None:
    with pytest.raises(SystemExit):
        parse_args([option, "0"])


def test_the_fd_limit_is_raised_but_never_above_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        assert raise_fd_limit(512) == min(512, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(512, hard)
        assert raise_fd_limit(300) == min(512, hard)  # never lowered
        if hard != resource.RLIM_INFINITY:
            assert raise_fd_limit(hard + 1000) == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- a tiny real run -----------------------------------------------------------------------


@pytest.fixture
def authgate() -> Iterator[Authgate]:
    command = authgate_prefix(os.environ.get("LOADTEST_AUTHGATE_CMD"))
    with deployment(command) as running:
        # The log scan reads the logs after the test, looking for this run's secrets.
        watch_child(running.environment, *running.logs)
        yield running


def test_a_tiny_run_moves_every_byte_through_the_proxy(authgate: Authgate) -> None:
    settings = Settings(8 * MIB, 8 * MIB, 20, 10, 100, 512)
    phases = asyncio.run(run_phases(authgate, settings))
    assert [phase.name for phase in phases] == [
        "idle",
        "download 8 MiB",
        "upload 8 MiB (chunked)",
        "upload 8 MiB (Content-Length)",
        "20 slow streams",
    ]
    assert all(phase.correct for phase in phases), format_table(phases)
    assert all(phase.peak_mib > 1 for phase in phases)
    details = [phase.detail for phase in phases]
    assert details[1].startswith(f"received {8 * MIB} of {8 * MIB} bytes")
    assert details[2].startswith(f"provider counted {8 * MIB} of {8 * MIB} bytes (chunked)")
    assert details[3].startswith(f"provider counted {8 * MIB} of {8 * MIB} bytes (with a length)")
    # Each stream trickles for about a second: all twenty are open together.
    assert details[4] == "20 in flight at once, 20/20 complete"


def test_phases_fail_when_the_bytes_do_not_arrive(authgate: Authgate) -> None:
    # The trickle route refuses chunks above 16 KiB: every slow stream answers 400.
    settings = Settings(MIB, MIB, 3, 2, 0, 64 * 1024)
    phases = asyncio.run(run_phases(authgate, settings))
    slow = phases[-1]
    assert not slow.correct
    assert not slow.passed
    assert "0/3 complete" in slow.detail
    assert "slow stream answered 400" in slow.detail
