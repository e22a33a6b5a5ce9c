"""Every path starts, serves the same bytes for every workload, and refuses to be measured
when it doesn't.

The authgate path runs the real ``authgate management`` and ``authgate proxy`` from this
checkout (``python -m authgate``). To run it against another tree, for instance while the
checkout's authgate is mid-change, point ``LOADTEST_AUTHGATE_PYTHONPATH`` at that tree:

    LOADTEST_AUTHGATE_PYTHONPATH=/tmp/ag-head .venv/bin/pytest tests/loadtest/test_targets.py
"""

from __future__ import annotations

import base64
import json
import os
import sys
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from loadtest.nginx import nginx_config, proxy_server, proxy_upstream, start_nginx
from loadtest.processes import BenchError, free_port, http_request
from loadtest.targets import (
    AUTHGATE_API_KEY,
    UPLOAD_ANSWER,
    UPLOAD_BODY,
    WORKLOADS,
    ControlPlane,
    Target,
    authgate_env,
    authgate_path_name,
    default_proxy_command,
    logged_body,
    management_command,
    proxy_command,
    start_authgate_proxy,
    start_management,
    start_nginx_proxy,
    start_upstream,
    start_yardstick,
    verify,
)

FAKE_AUTHGATE = [sys.executable, str(Path(__file__).with_name("fake_authgate.py"))]


def authgate_proxy_command() -> list[str]:
    command = [sys.executable, "-m", "authgate", "proxy"]
    tree = os.environ.get("LOADTEST_AUTHGATE_PYTHONPATH")
    return ["env", f"PYTHONPATH={tree}", *command] if tree else command


@pytest.fixture
def upstream(nginx: str, workdir: Path, stack: ExitStack) -> Target:
    return start_upstream(stack, nginx, workdir)


def test_upstream_serves_every_workload(upstream: Target) -> None:
    verify(upstream)
    for kind in ("small", "big"):
        assert http_request(upstream.port, "GET", f"/{kind}") == (
            200,
            WORKLOADS[kind].response_body,
        )
    answer = http_request(upstream.port, "POST", "/upload", (), UPLOAD_BODY)
    assert answer == (200, UPLOAD_ANSWER)


def test_the_upload_body_is_64_kib_of_json() -> None:
    assert len(UPLOAD_BODY) == 64 * 1024
    assert json.loads(UPLOAD_BODY)["object"] == "bench.upload"
    assert len(set(UPLOAD_BODY)) > 26, "a varied body shows a shifted or cut copy"


def test_a_logged_body_counts_only_once_its_line_is_whole(tmp_path: Path) -> None:
    log = tmp_path / "bodies.log"
    log.write_bytes(b"n-1 POST first\nn-2 POST half-writ")
    assert logged_body(log, "n-1") == b"first"
    assert logged_body(log, "n-2", wait=0.05) is None
    with log.open("ab") as out:
        out.write(b"ten\n")
    assert logged_body(log, "n-2") == b"half-written"
    assert logged_body(tmp_path / "missing.log", "n-1", wait=0.05) is None


def test_nginx_proxy_injects_its_token_and_forwards_bodies(
    nginx: str, workdir: Path, stack: ExitStack, upstream: Target
) -> None:
    proxy = start_nginx_proxy(stack, nginx, workdir, upstream)
    verify(proxy)
    assert proxy.authorization is not None
    assert http_request(proxy.port, "GET", "/auth") == (200, proxy.authorization.encode())
    # A body nginx spools to disk would make the baseline pay for a file per upload.
    assert "temporary file" not in (workdir / "proxy" / "error.log").read_text()


def test_yardstick_is_started_and_verified(
    workdir: Path, stack: ExitStack, upstream: Target
) -> None:
    yardstick = start_yardstick(stack, workdir, upstream)
    verify(yardstick)
    assert yardstick.path("upload") == "/proxy/upload"
    status, _ = http_request(yardstick.port, "GET", "/proxy/small")
    assert status == 404, "without the connection header there is no token"


def broken_nginx_proxy(
    nginx: str, workdir: Path, stack: ExitStack, upstream: Target, directives: str
) -> Target:
    """The bench's nginx proxy with ``directives`` added to its location."""
    port, token = free_port(), "t0ken"
    server = proxy_server(token).replace(
        "proxy_http_version 1.1;", f"proxy_http_version 1.1; {directives}"
    )
    conf = nginx_config(workdir / "broken", port, server, proxy_upstream(upstream.port))
    proc = start_nginx(stack, nginx, workdir / "broken", "broken", conf, port)
    return replace(
        upstream, name="broken", port=port, pgid=proc.pid, authorization=f"Bearer {token}"
    )


def test_verify_refuses_a_proxy_that_drops_the_request_body(
    nginx: str, workdir: Path, stack: ExitStack, upstream: Target
) -> None:
    directives = 'proxy_pass_request_body off; proxy_set_header Content-Length "";'
    broken = broken_nginx_proxy(nginx, workdir, stack, upstream, directives)
    with pytest.raises(BenchError, match="broken: the upstream received a 0-byte body"):
        verify(broken)


def test_verify_refuses_a_proxy_that_hides_the_check(
    nginx: str, workdir: Path, stack: ExitStack, upstream: Target
) -> None:
    directives = 'proxy_set_header X-Bench-Check "";'
    broken = broken_nginx_proxy(nginx, workdir, stack, upstream, directives)
    with pytest.raises(BenchError, match="broken: the upstream logged no check request"):
        verify(broken)


def test_verify_refuses_a_path_that_does_not_serve_the_file(upstream: Target) -> None:
    wrong = replace(upstream, name="broken", prefix="/proxy")
    with pytest.raises(BenchError, match=r"broken: GET .*/proxy/small answered 404"):
        verify(wrong)


def test_verify_refuses_a_path_without_the_credential(upstream: Target) -> None:
    wrong = replace(upstream, authorization="Bearer expected")
    expected = (
        r"did not receive the injected credential \(GET /auth answered 200, Authorization of 0"
    )
    with pytest.raises(BenchError, match=expected):
        verify(wrong)


# --- authgate ------------------------------------------------------------------------------


def test_real_authgate_runs_as_management_plus_proxy(
    workdir: Path, stack: ExitStack, upstream: Target
) -> None:
    proxy = authgate_proxy_command()
    control = start_management(stack, management_command(proxy), workdir)
    authgate = start_authgate_proxy(stack, proxy, 1, control, upstream)
    assert authgate.port != control.port
    # The proxy was started after seeding and finds the connection in the shared store.
    verify(authgate)
    assert authgate.name == "authgate"
    assert authgate.authorization == f"Bearer {AUTHGATE_API_KEY}"
    assert dict(authgate.headers)["Base-Url-Override"] == f"http://127.0.0.1:{upstream.port}"
    status, _ = http_request(authgate.port, "GET", "/proxy/small", ())
    assert status == 401, "authgate must check the secret key the bench sends"


@pytest.fixture
def fake_control(workdir: Path, stack: ExitStack) -> ControlPlane:
    return start_management(stack, FAKE_AUTHGATE, workdir)


def test_workers_reach_the_proxy_command(
    workdir: Path, stack: ExitStack, upstream: Target, fake_control: ControlPlane
) -> None:
    # A proxy stand-in that records its arguments, then serves /health.
    argv_file = workdir / "argv"
    script = f'printf "%s " "$@" > {argv_file}; exec "$0" {FAKE_AUTHGATE[1]}'
    command = ["sh", "-c", script, sys.executable]
    target = start_authgate_proxy(stack, command, 2, fake_control, upstream)
    assert target.name == "authgate-w2"
    assert argv_file.read_text().split() == ["--workers", "2"]


@pytest.mark.parametrize(("path", "status"), [("/integrations", 200), ("/connections", 201)])
def test_a_failed_seeding_call_aborts_with_its_answer(
    workdir: Path,
    stack: ExitStack,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    status: int,
) -> None:
    monkeypatch.setenv("FAKE_AUTHGATE_BREAK", path)
    expected = rf"authgate management: POST {path} answered 500 \(expected {status}\).*broken"
    with pytest.raises(BenchError, match=expected):
        start_management(stack, FAKE_AUTHGATE, workdir)


def test_a_proxy_that_cannot_start_shows_its_log(
    stack: ExitStack, upstream: Target, fake_control: ControlPlane
) -> None:
    command = ["sh", "-c", "echo 'no such command: proxy' >&2; exit 2"]
    with pytest.raises(BenchError, match=r"(?s)authgate exited with 2.*no such command"):
        start_authgate_proxy(stack, command, 1, fake_control, upstream)


def test_a_management_that_cannot_start_shows_its_log(workdir: Path, stack: ExitStack) -> None:
    command = ["sh", "-c", "echo 'bad DATABASE_URL' >&2; exit 2"]
    with pytest.raises(BenchError, match=r"(?s)authgate management exited with 2.*bad DATABASE"):
        start_management(stack, command, workdir)


def test_both_processes_share_the_store_and_keys(fake_control: ControlPlane) -> None:
    env = fake_control.env
    assert env["DATABASE_URL"] == f"sqlite:///{fake_control.data_dir}/bench.db"
    assert env["AUTHGATE_SECRET_KEY"] == fake_control.secret_key
    assert "AUTHGATE_PORT" not in env, "each process gets its own port"


def test_authgate_environment(tmp_path: Path) -> None:
    env = authgate_env(tmp_path, "the-key")
    assert env["AUTHGATE_HOST"] == "127.0.0.1"
    assert env["AUTHGATE_DATA_DIR"] == str(tmp_path)
    assert env["DATABASE_URL"] == f"sqlite:///{tmp_path}/bench.db"
    assert env["AUTHGATE_SECRET_KEY"] == "the-key"
    assert len(base64.b64decode(env["AUTHGATE_ENCRYPTION_KEY"], validate=True)) == 32
    assert env["AUTHGATE_ALLOW_PRIVATE_UPSTREAMS"] == "true"
    assert env["PYTHONSAFEPATH"] == "1"
    assert env["PATH"], "the child still needs the caller's environment"


def test_authgate_environment_uses_a_fresh_encryption_key(tmp_path: Path) -> None:
    first = authgate_env(tmp_path, "k")["AUTHGATE_ENCRYPTION_KEY"]
    assert first != authgate_env(tmp_path, "k")["AUTHGATE_ENCRYPTION_KEY"]


def test_default_proxy_command_runs_the_proxy_role() -> None:
    command = default_proxy_command()
    assert command[-1] == "proxy"
    assert command[0].startswith(str(Path(sys.executable).parent))


@pytest.mark.parametrize(
    ("proxy", "management"),
    [
        (["authgate", "proxy"], ["authgate", "management"]),
        (
            ["env", "PYTHONPATH=/x/proxy", "python", "-m", "authgate", "proxy", "--flag"],
            ["env", "PYTHONPATH=/x/proxy", "python", "-m", "authgate", "management", "--flag"],
        ),
        (["/opt/proxy", "proxy", "proxy"], ["/opt/proxy", "proxy", "management"]),
    ],
)
def test_management_command_replaces_the_last_proxy_word(
    proxy: list[str], management: list[str]
) -> None:
    assert management_command(proxy) == management


def test_management_command_needs_a_proxy_word() -> None:
    with pytest.raises(BenchError, match="pass --management-cmd"):
        management_command(["authgate", "serve"])


def test_the_worker_count_is_always_explicit() -> None:
    assert proxy_command(["authgate", "proxy"], 1) == ["authgate", "proxy", "--workers", "1"]
    assert proxy_command(["authgate", "proxy"], 3) == ["authgate", "proxy", "--workers", "3"]
    assert [authgate_path_name(n) for n in (1, 2)] == ["authgate", "authgate-w2"]
