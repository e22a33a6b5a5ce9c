"""The three paths start, serve the same bytes, and refuse to be measured when they don't."""

from __future__ import annotations

import base64
import sys
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from loadtest.processes import BenchError, http_request
from loadtest.targets import (
    AUTHGATE_API_KEY,
    BODIES,
    Target,
    authgate_env,
    default_authgate_command,
    start_authgate,
    start_nginx_proxy,
    start_upstream,
    verify,
)

FAKE_AUTHGATE = [sys.executable, str(Path(__file__).with_name("fake_authgate.py"))]


@pytest.fixture
def upstream(nginx: str, workdir: Path, stack: ExitStack) -> Target:
    return start_upstream(stack, nginx, workdir)


def test_upstream_serves_both_files(upstream: Target) -> None:
    verify(upstream)
    for size, body in BODIES.items():
        assert http_request(upstream.port, "GET", f"/{size}") == (200, body)


def test_nginx_proxy_injects_its_token(
    nginx: str, workdir: Path, stack: ExitStack, upstream: Target
) -> None:
    proxy = start_nginx_proxy(stack, nginx, workdir, upstream)
    verify(proxy)
    assert proxy.authorization is not None
    assert http_request(proxy.port, "GET", "/auth") == (200, proxy.authorization.encode())


def test_verify_refuses_a_path_that_does_not_serve_the_file(upstream: Target) -> None:
    wrong = replace(upstream, name="broken", prefix="/proxy")
    with pytest.raises(BenchError, match=r"broken: GET .*/proxy/small answered 404"):
        verify(wrong)


def test_verify_refuses_a_path_without_the_credential(upstream: Target) -> None:
    wrong = replace(upstream, authorization="Bearer expected")
    with pytest.raises(BenchError, match="upstream received Authorization b''"):
        verify(wrong)


def test_authgate_path_is_seeded_and_verified(
    workdir: Path, stack: ExitStack, upstream: Target
) -> None:
    authgate = start_authgate(stack, FAKE_AUTHGATE, workdir, upstream)
    verify(authgate)
    assert authgate.path("small") == "/proxy/small"
    assert authgate.authorization == f"Bearer {AUTHGATE_API_KEY}"
    headers = dict(authgate.headers)
    assert headers["Base-Url-Override"] == f"http://127.0.0.1:{upstream.port}"
    status, _ = http_request(authgate.port, "GET", "/proxy/small", ())
    assert status == 401, "the fake must check the secret key the bench sends"


@pytest.mark.parametrize(("path", "status"), [("/integrations", 200), ("/connections", 201)])
def test_a_failed_seeding_call_aborts_with_its_answer(
    workdir: Path,
    stack: ExitStack,
    upstream: Target,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    status: int,
) -> None:
    monkeypatch.setenv("FAKE_AUTHGATE_BREAK", path)
    expected = rf"authgate: POST {path} answered 500 \(expected {status}\).*broken"
    with pytest.raises(BenchError, match=expected):
        start_authgate(stack, FAKE_AUTHGATE, workdir, upstream)


def test_authgate_that_cannot_start_shows_its_log(
    workdir: Path, stack: ExitStack, upstream: Target
) -> None:
    command = ["sh", "-c", "echo 'no such command: serve' >&2; exit 2"]
    with pytest.raises(BenchError, match=r"(?s)authgate exited with 2.*no such command"):
        start_authgate(stack, command, workdir, upstream)


def test_authgate_environment(tmp_path: Path) -> None:
    env = authgate_env(4000, tmp_path, "the-key")
    assert env["AUTHGATE_PORT"] == "4000"
    assert env["AUTHGATE_HOST"] == "127.0.0.1"
    assert env["AUTHGATE_DATA_DIR"] == str(tmp_path)
    assert env["DATABASE_URL"] == f"sqlite:///{tmp_path}/bench.db"
    assert env["AUTHGATE_SECRET_KEY"] == "the-key"
    assert len(base64.b64decode(env["AUTHGATE_ENCRYPTION_KEY"], validate=True)) == 32
    assert env["AUTHGATE_ALLOW_PRIVATE_UPSTREAMS"] == "true"
    assert env["PATH"], "the child still needs the caller's environment"


def test_authgate_environment_uses_a_fresh_encryption_key(tmp_path: Path) -> None:
    first = authgate_env(1, tmp_path, "k")["AUTHGATE_ENCRYPTION_KEY"]
    assert first != authgate_env(1, tmp_path, "k")["AUTHGATE_ENCRYPTION_KEY"]


def test_default_authgate_command_runs_serve() -> None:
    command = default_authgate_command()
    assert command[-1] == "serve"
    assert command[0].startswith(str(Path(sys.executable).parent))
