"""The benchmark's arithmetic, report and command line; one real abort end to end."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import bench
from loadtest.bench import (
    Row,
    Settings,
    added_latency_us,
    combine,
    format_report,
    main,
    parse_args,
    ratios,
    settings_from,
    warnings,
    write_result,
)


def row(path: str, size: str, rps: float, p50_1: float = 0.1, errors: int = 0) -> Row:
    return Row(path, size, rps, 0.5, 2.0, p50_1, 20.0, errors)


ROWS = [
    row("direct", "small", 60_000, 0.080),
    row("nginx", "small", 30_000, 0.130),
    row("authgate", "small", 6_000, 0.380),
    row("direct", "big", 30_000, 0.100),
    row("nginx", "big", 12_000, 0.180),
    row("authgate", "big", 3_000, 0.600),
]


def test_ratios_of_requests_per_second() -> None:
    assert ratios(ROWS) == {
        "small": pytest.approx(
            {"authgate/direct": 0.1, "authgate/nginx": 0.2, "nginx/direct": 0.5}
        ),
        "big": pytest.approx({"authgate/direct": 0.1, "authgate/nginx": 0.25, "nginx/direct": 0.4}),
    }


def test_ratios_without_authgate_keep_nginx_over_direct() -> None:
    rows = [r for r in ROWS if r.path != "authgate"]
    assert ratios(rows) == {
        "small": pytest.approx({"nginx/direct": 0.5}),
        "big": pytest.approx({"nginx/direct": 0.4}),
    }


def test_a_zero_denominator_gives_no_ratio() -> None:
    rows = [row("direct", "small", 0), row("nginx", "small", 10)]
    assert ratios(rows) == {}


def test_added_latency_is_measured_against_direct() -> None:
    assert added_latency_us(ROWS) == {
        "small": pytest.approx({"nginx": 50, "authgate": 300}),
        "big": pytest.approx({"nginx": 80, "authgate": 500}),
    }


def test_combine_takes_medians_and_adds_errors() -> None:
    rounds = [
        Row("nginx", "small", 100, 1.0, 3.0, 0.1, None, 1),
        Row("nginx", "small", 300, 2.0, 9.0, 0.3, 40.0, 0),
        Row("nginx", "small", 200, 5.0, 4.0, 0.2, 20.0, 2),
    ]
    assert combine(rounds) == Row("nginx", "small", 200, 2.0, 4.0, 0.2, 30.0, 3)


def test_combine_keeps_a_missing_cpu_figure_missing() -> None:
    single = Row("direct", "big", 1, 1, 1, 1, None, 0)
    assert combine([single]).cpu_us_per_request is None


def test_rows_with_errors_are_called_out() -> None:
    rows = [*ROWS[:2], row("authgate", "small", 90_000, errors=12)]
    assert warnings(ROWS) == []
    (message,) = warnings(rows)
    assert message.startswith("warning: small/authgate had 12 errors")


def test_report_shows_every_row_the_ratios_and_the_warnings() -> None:
    rows = [*ROWS[:5], row("authgate", "big", 3_000, 0.6, errors=1)]
    report = format_report(rows, 32)
    assert "req/s c32" in report
    assert "p50 c1" in report
    assert "     60,000" in report
    lines = report.splitlines()
    assert [line.split()[:2] for line in lines[2:8]] == [[r.size, r.path] for r in rows]
    assert "0.100             0.200             0.500" in report
    assert "warning: big/authgate had 1 errors" in report


def test_report_marks_missing_figures() -> None:
    report = format_report([r for r in ROWS if r.path != "authgate"], 32)
    small_ratios = next(line for line in report.splitlines() if line.startswith("small   "))
    assert small_ratios.split() == ["small", "-", "-", "0.500"]


def test_result_file_is_json_with_rows_and_ratios(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path / "results")
    settings = Settings(15, 2, 32, 1, None)
    path = write_result(ROWS, settings, {"wrk": "wrk 4.1.0"})
    assert path.parent == tmp_path / "results"
    document = json.loads(path.read_text())
    assert document["settings"]["connections"] == 32
    assert document["tools"] == {"wrk": "wrk 4.1.0"}
    assert document["rows"][0]["requests_per_sec"] == 60_000
    assert document["ratios"]["small"]["authgate/nginx"] == pytest.approx(0.2)
    assert document["added_p50_1conn_us"]["big"]["authgate"] == pytest.approx(500)
    assert document["warnings"] == []


def test_defaults() -> None:
    settings = settings_from(parse_args([]))
    assert settings == Settings(duration=15, warmup=2, connections=32, rounds=1, pin_cpu=None)


def test_quick_runs_three_seconds() -> None:
    assert settings_from(parse_args(["--quick", "--duration", "60"])).duration == 3


def test_pin_defaults_to_the_last_cpu() -> None:
    assert parse_args(["--pin"]).pin == (os.cpu_count() or 1) - 1
    assert parse_args(["--pin", "0"]).pin == 0


@pytest.mark.parametrize("flag", ["--duration", "--connections", "--rounds"])
def test_counts_below_one_are_refused(flag: str) -> None:
    with pytest.raises(SystemExit):
        parse_args([flag, "0"])


def test_an_authgate_that_fails_to_start_aborts_the_run_cleanly(
    nginx: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--quick", "--authgate-cmd", "sh -c 'echo boom; exit 4'"]) == 1
    err = capsys.readouterr().err
    assert "bench aborted: authgate exited with 4" in err
    assert "boom" in err


def test_sigterm_stops_the_run_and_every_child(nginx: str, tmp_path: Path) -> None:
    # The stand-in authgate reports its pid through a FIFO and then never answers /health,
    # so the bench is mid-start when it gets SIGTERM.
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    authgate = f"sh -c 'echo $$ > {fifo}; exec sleep 60'"
    command = [sys.executable, "-m", "loadtest.bench", "--quick", "--authgate-cmd", authgate]
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
