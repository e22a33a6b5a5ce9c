"""The benchmark's arithmetic, report and command line; real measurements of one row;
real aborts end to end."""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from loadtest import bench
from loadtest.bench import (
    Row,
    Settings,
    added_latency_us,
    authgate_commands,
    combine,
    format_report,
    main,
    measure,
    measure_all,
    parse_args,
    ratio_pairs,
    ratios,
    settings_from,
    warnings,
    worker_counts,
    write_result,
    write_scripts,
)
from loadtest.processes import BenchError, free_port
from loadtest.targets import Target, start_nginx_proxy, start_upstream

FAKE_AUTHGATE = f"{sys.executable} {Path(__file__).with_name('fake_authgate.py')}"


def row(path: str, kind: str, rps: float, p50_1: float = 0.1, errors: int = 0) -> Row:
    return Row(path, kind, rps, 0.5, 2.0, p50_1, 20.0, errors, 40.0, 45.0)


ROWS = [
    row("direct", "small", 60_000, 0.080),
    row("nginx", "small", 30_000, 0.130),
    row("yardstick", "small", 6_000, 0.300),
    row("authgate", "small", 3_000, 0.380),
    row("authgate-w2", "small", 4_500, 0.390),
    row("direct", "upload", 30_000, 0.100),
    row("nginx", "upload", 12_000, 0.180),
    row("yardstick", "upload", 4_000, 0.400),
    row("authgate", "upload", 3_000, 0.600),
    row("authgate-w2", "upload", 6_000, 0.650),
]


def test_authgate_paths_are_compared_with_every_baseline_and_one_worker() -> None:
    paths = ["direct", "nginx", "yardstick", "authgate", "authgate-w2"]
    assert ratio_pairs(paths) == [
        ("authgate", "direct"),
        ("authgate", "nginx"),
        ("authgate", "yardstick"),
        ("authgate-w2", "direct"),
        ("authgate-w2", "nginx"),
        ("authgate-w2", "yardstick"),
        ("authgate-w2", "authgate"),
        ("nginx", "direct"),
        ("yardstick", "nginx"),
    ]


def test_ratio_pairs_leave_out_paths_that_did_not_run() -> None:
    assert ratio_pairs(["direct", "nginx"]) == [("nginx", "direct")]
    assert ratio_pairs(["direct", "nginx", "authgate-w2"]) == [
        ("authgate-w2", "direct"),
        ("authgate-w2", "nginx"),
        ("nginx", "direct"),
    ]


def test_ratios_of_requests_per_second() -> None:
    table = ratios(ROWS)
    assert table["small"] == pytest.approx(
        {
            "authgate/direct": 0.05,
            "authgate/nginx": 0.1,
            "authgate/yardstick": 0.5,
            "authgate-w2/direct": 0.075,
            "authgate-w2/nginx": 0.15,
            "authgate-w2/yardstick": 0.75,
            "authgate-w2/authgate": 1.5,
            "nginx/direct": 0.5,
            "yardstick/nginx": 0.2,
        }
    )
    assert table["upload"]["authgate-w2/authgate"] == pytest.approx(2.0)
    assert list(table) == ["small", "upload"]


def test_a_zero_denominator_gives_no_ratio() -> None:
    rows = [row("direct", "small", 0), row("nginx", "small", 10)]
    assert ratios(rows) == {}


def test_added_latency_is_measured_against_direct() -> None:
    assert added_latency_us(ROWS)["small"] == pytest.approx(
        {"nginx": 50, "yardstick": 220, "authgate": 300, "authgate-w2": 310}
    )


def test_combine_takes_medians_and_adds_errors() -> None:
    rounds = [
        Row("nginx", "small", 100, 1.0, 3.0, 0.1, None, 1, 10.0, 12.0),
        Row("nginx", "small", 300, 2.0, 9.0, 0.3, 40.0, 0, 11.0, 30.0),
        Row("nginx", "small", 200, 5.0, 4.0, 0.2, 20.0, 2, 12.0, 14.0),
    ]
    expected = Row("nginx", "small", 200, 2.0, 4.0, 0.2, 30.0, 3, 11.0, 14.0)
    assert combine(rounds) == expected


def test_combine_keeps_a_missing_cpu_figure_missing() -> None:
    single = Row("direct", "big", 1, 1, 1, 1, None, 0, 1, 1)
    assert combine([single]).cpu_us_per_request is None


def test_rows_with_errors_are_called_out() -> None:
    rows = [*ROWS[:2], row("authgate", "small", 90_000, errors=12)]
    assert warnings(ROWS) == []
    (message,) = warnings(rows)
    assert message.startswith("warning: small/authgate had 12 errors")


def test_report_shows_every_row_the_ratios_and_the_warnings() -> None:
    rows = [*ROWS[:9], Row("authgate-w2", "upload", 6_000, 0.5, 2.0, 0.65, None, 1, 52.25, 98.5)]
    report = format_report(rows, 32)
    lines = report.splitlines()
    assert lines[0].split() == [
        "kind",
        "path",
        "req/s",
        "c32",
        "p50",
        "c32",
        "p99",
        "c32",
        "p50",
        "c1",
        "CPU",
        "µs/req",
        "errors",
        "idle",
        "MiB",
        "peak",
        "MiB",
    ]
    assert [line.split()[:2] for line in lines[2:12]] == [[r.kind, r.path] for r in rows]
    assert lines[2].split()[2:] == [
        "60,000",
        "0.500ms",
        "2.000ms",
        "0.080ms",
        "20",
        "0",
        "40.0",
        "45.0",
    ]
    assert lines[11].split()[-4:] == ["-", "1", "52.2", "98.5"]
    assert "warning: upload/authgate-w2 had 1 errors" in report


def table_lines(report: str, title: str) -> dict[str, list[str]]:
    """The block of the report that starts with ``title``, as {first word: other words}."""
    block = report.split(f"\n\n{title}")[1].split("\n\n")[0]
    return {line.split()[0]: line.split()[1:] for line in block.splitlines()[1:]}


def test_ratio_table_has_a_line_per_ratio_and_a_column_per_kind() -> None:
    report = format_report(ROWS, 32)
    assert report.split("\n\nreq/s ratio")[1].splitlines()[0].split() == ["small", "upload"]
    table = table_lines(report, "req/s ratio")
    assert list(table) == [f"{top}/{bottom}" for top, bottom in ratio_pairs(bench.path_names(ROWS))]
    assert table["authgate/nginx"] == ["0.100", "0.250"]
    assert table["authgate-w2/authgate"] == ["1.500", "2.000"]


def test_added_latency_table_has_a_line_per_proxy() -> None:
    table = table_lines(format_report(ROWS, 32), "added µs at p50 c1")
    assert table == {
        "nginx": ["50", "80"],
        "yardstick": ["220", "300"],
        "authgate": ["300", "500"],
        "authgate-w2": ["310", "550"],
    }


def test_report_marks_missing_figures() -> None:
    rows = [*ROWS, row("nginx", "big", 1_000)]  # no direct row for big
    table = table_lines(format_report(rows, 32), "req/s ratio")
    assert table["nginx/direct"] == ["0.500", "-", "0.400"]


def test_result_file_is_json_with_rows_and_ratios(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path / "results")
    settings = Settings(10, 2, 5, 32, 1, None)
    path = write_result(ROWS, settings, {"wrk": "wrk 4.1.0"})
    assert path.parent == tmp_path / "results"
    document = json.loads(path.read_text())
    assert document["settings"]["single_duration"] == 5
    assert document["tools"] == {"wrk": "wrk 4.1.0"}
    assert document["paths"] == ["direct", "nginx", "yardstick", "authgate", "authgate-w2"]
    first = document["rows"][0]
    assert (first["kind"], first["requests_per_sec"]) == ("small", 60_000)
    assert (first["rss_idle_mib"], first["rss_peak_mib"]) == (40.0, 45.0)
    assert document["ratios"]["small"]["authgate/yardstick"] == pytest.approx(0.5)
    assert document["ratios"]["upload"]["authgate-w2/authgate"] == pytest.approx(2.0)
    assert document["added_p50_1conn_us"]["upload"]["authgate"] == pytest.approx(500)
    assert document["warnings"] == []


# --- command line --------------------------------------------------------------------------


def test_defaults() -> None:
    args = parse_args([])
    assert settings_from(args) == Settings(
        duration=10, warmup=2, single_duration=5, connections=32, rounds=1, pin_cpu=None
    )
    assert args.workers == (1,)


def test_quick_runs_three_seconds() -> None:
    settings = settings_from(parse_args(["--quick", "--duration", "60"]))
    assert (settings.duration, settings.warmup, settings.single_duration) == (3, 1, 1)


def test_pin_defaults_to_the_last_cpu() -> None:
    assert parse_args(["--pin"]).pin == (os.cpu_count() or 1) - 1
    assert parse_args(["--pin", "0"]).pin == 0


@pytest.mark.parametrize("flag", ["--duration", "--connections", "--rounds"])
def test_counts_below_one_are_refused(flag: str) -> None:
    with pytest.raises(SystemExit):
        parse_args([flag, "0"])


@pytest.mark.parametrize(("text", "counts"), [("1", (1,)), ("1,2", (1, 2)), ("4,2,4", (4, 2))])
def test_worker_counts(text: str, counts: tuple[int, ...]) -> None:
    assert worker_counts(text) == counts
    assert parse_args(["--workers", text]).workers == counts


@pytest.mark.parametrize("text", ["", "0", "1,0", "two", "1,,2", "-1"])
def test_bad_worker_counts_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        worker_counts(text)


def test_the_management_command_defaults_to_the_proxy_commands_twin() -> None:
    args = parse_args(["--authgate-cmd", "env PYTHONPATH=/ag python -m authgate proxy"])
    proxy, management = authgate_commands(args)
    assert proxy == ["env", "PYTHONPATH=/ag", "python", "-m", "authgate", "proxy"]
    assert management == ["env", "PYTHONPATH=/ag", "python", "-m", "authgate", "management"]


def test_an_explicit_management_command_wins() -> None:
    args = parse_args(["--authgate-cmd", "my-proxy", "--management-cmd", "my-mgmt --x 'a b'"])
    assert authgate_commands(args) == (["my-proxy"], ["my-mgmt", "--x", "a b"])


def test_by_default_the_installed_authgate_runs_both_roles() -> None:
    proxy, management = authgate_commands(parse_args([]))
    assert (proxy[-1], management[-1]) == ("proxy", "management")


def test_an_underivable_management_command_stops_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--quick", "--authgate-cmd", "authgate serve"]) == 1
    assert "bench aborted: cannot derive the management command" in capsys.readouterr().err


# --- real measurements and runs ------------------------------------------------------------


def test_every_workload_is_measured_on_a_real_path(
    nginx: str, workdir: Path, stack: ExitStack
) -> None:
    upstream = start_upstream(stack, nginx, workdir)
    proxy = start_nginx_proxy(stack, nginx, workdir, upstream)
    settings = Settings(
        duration=1, warmup=1, single_duration=1, connections=4, rounds=1, pin_cpu=None
    )
    rows = measure_all([proxy], settings, write_scripts(workdir))
    assert [(r.path, r.kind) for r in rows] == [
        ("nginx", "small"),
        ("nginx", "big"),
        ("nginx", "upload"),
    ]
    for measured in rows:
        # For the upload, only a POST with the body gets 200 from /upload.
        assert measured.errors == 0, measured.kind
        assert measured.requests_per_sec > 100
        assert 0 < measured.p50_ms <= measured.p99_ms
        # Not compared with p50_ms: at a few connections nginx may answer faster than at one.
        assert measured.p50_1conn_ms > 0
        assert measured.cpu_us_per_request is not None
        assert measured.cpu_us_per_request > 0
        # nginx master + worker: a few MiB each, far from a GiB.
        assert 1 < measured.rss_idle_mib < 1024
        assert 1 < measured.rss_peak_mib < 1024


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_a_server_that_dies_mid_run_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("starting\nfatal: out of file descriptors\n")
    gone = Target("gone", free_port(), "", (), os.getpgrp(), None, tmp_path / "b.log", log)
    settings = Settings(
        duration=1, warmup=1, single_duration=1, connections=1, rounds=1, pin_cpu=None
    )
    with pytest.raises(BenchError, match=r"(?s)gone/small: wrk failed.*gone log:.*out of file"):
        measure(gone, "small", settings, None)


def test_write_scripts_covers_the_workloads_with_a_body(tmp_path: Path) -> None:
    scripts = write_scripts(tmp_path)
    assert list(scripts) == ["upload"]
    assert scripts["upload"].read_text().startswith('wrk.method = "POST"\n')


def test_a_proxy_that_fails_to_start_aborts_the_run_cleanly(
    nginx: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--quick", "--skip-yardstick", "--management-cmd", FAKE_AUTHGATE]
    assert main([*argv, "--authgate-cmd", "sh -c 'echo boom; exit 4'"]) == 1
    err = capsys.readouterr().err
    assert "bench aborted: authgate exited with 4" in err
    assert "boom" in err


def test_sigterm_stops_the_run_and_every_child(nginx: str, tmp_path: Path) -> None:
    # The stand-in proxy reports its pid through a FIFO and then never answers /health,
    # so the bench is mid-start when it gets SIGTERM.
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    authgate = f"sh -c 'echo $$ > {fifo}; exec sleep 60'"
    command = [sys.executable, "-m", "loadtest.bench", "--quick", "--skip-yardstick"]
    command += ["--authgate-cmd", authgate, "--management-cmd", FAKE_AUTHGATE]
    repo = Path(__file__).resolve().parents[2]
    bench_proc = subprocess.Popen(command, cwd=repo, stderr=subprocess.PIPE, text=True)
    try:
        assert select.select([reader], [], [], 30)[0], "authgate was never started"
        child = os.pidfd_open(int(os.read(reader, 32)))
        bench_proc.send_signal(signal.SIGTERM)
        _, err = bench_proc.communicate(timeout=30)
        assert bench_proc.returncode == 128 + signal.SIGTERM
        assert "bench terminated; child processes stopped" in err
        assert select.select([child], [], [], 10)[0], "authgate outlived the bench"
        os.close(child)
    finally:
        os.close(reader)
        if bench_proc.poll() is None:
            bench_proc.kill()
            bench_proc.wait()
