"""The ways to the same upstream bytes: direct, nginx, the yardstick, and authgate.

Every path serves three workloads: ``GET /small`` (208 B), ``GET /big`` (64 KiB) and
``POST /upload`` with a 64 KiB JSON body (a small JSON answer). authgate runs as the data
plane: ``authgate management`` is started and seeded over its API, then one
``authgate proxy`` per worker count is started on the same SQLite file, and finds the
connection on its first request.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import string
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import cycle, islice
from pathlib import Path
from typing import Final

from loadtest.fake_provider import BIG_BODY, SMALL_BODY
from loadtest.nginx import (
    BODY_LOG,
    CHECK_HEADER,
    nginx_config,
    proxy_server,
    proxy_upstream,
    start_nginx,
    upstream_http,
    upstream_server,
)
from loadtest.processes import (
    BenchError,
    Headers,
    child_process,
    free_port,
    http_request,
    wait_until_up,
)


def _upload_body(size: int) -> bytes:
    # Not one repeated byte: a body cut, shifted or padded on the way cannot look right.
    prefix, suffix = b'{"object":"bench.upload","data":"', b'"}'
    filler = islice(cycle(string.ascii_letters.encode()), size - len(prefix) - len(suffix))
    return prefix + bytes(filler) + suffix


UPLOAD_BODY: Final = _upload_body(64 * 1024)
UPLOAD_ANSWER: Final = b'{"received":true}'
JSON: Final = "application/json"

AUTHGATE_API_KEY: Final = "sk-bench"
INTEGRATION: Final = "bench"
CONNECTION_ID: Final = "bench-conn"
AUTHGATE: Final = "authgate"


@dataclass(frozen=True)
class Workload:
    """One kind of request every path is loaded with."""

    kind: str
    method: str
    path: str  # on the upstream
    request_body: bytes | None
    response_body: bytes


WORKLOADS: Final[Mapping[str, Workload]] = {
    "small": Workload("small", "GET", "/small", None, SMALL_BODY),
    "big": Workload("big", "GET", "/big", None, BIG_BODY),
    "upload": Workload("upload", "POST", "/upload", UPLOAD_BODY, UPLOAD_ANSWER),
}
KINDS: Final = tuple(WORKLOADS)


@dataclass(frozen=True)
class Target:
    """One way to reach the upstream, and the process group doing the work."""

    name: str
    port: int
    prefix: str  # path prefix in front of the upstream's paths
    headers: Headers
    pgid: int
    authorization: str | None  # what the upstream must see, None to skip the check
    body_log: Path  # where the upstream logs the bodies of check requests
    log: Path  # what the front process writes, shown when it fails mid-run
    # What a caller puts in front of a header name to have it sent upstream: authgate
    # forwards only a few caller headers, and any other as `Nango-Proxy-<Name>`.
    forward_prefix: str = ""

    def path(self, kind: str) -> str:
        return f"{self.prefix}{WORKLOADS[kind].path}"

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.port}{self.path(kind)}"


# --- checking a path before it is loaded -------------------------------------------------


def verify(target: Target) -> None:
    """One request per workload before any load: a fast error is not a fast proxy."""
    for workload in WORKLOADS.values():
        if workload.request_body is None:
            _verify_download(target, workload)
        else:
            _verify_upload(target, workload, workload.request_body)
    if target.authorization is not None:
        _verify_credential(target, target.authorization)


def _expect_answer(target: Target, workload: Workload, status: int, body: bytes) -> None:
    expected = workload.response_body
    if status != 200 or body != expected:
        raise BenchError(
            f"{target.name}: {workload.method} {target.url(workload.kind)} answered {status} "
            f"with {len(body)} bytes {body[:300]!r}; expected 200 and {len(expected)} bytes "
            f"{expected[:40]!r}..."
        )


def _verify_download(target: Target, workload: Workload) -> None:
    path = target.path(workload.kind)
    status, body = http_request(target.port, workload.method, path, target.headers)
    _expect_answer(target, workload, status, body)


def _verify_upload(target: Target, workload: Workload, sent: bytes) -> None:
    # The marker sends this one request through the upstream's logging location.
    nonce = secrets.token_hex(8)
    marker = (target.forward_prefix + CHECK_HEADER, nonce)
    headers = (*target.headers, ("Content-Type", JSON), marker)
    path = target.path(workload.kind)
    status, body = http_request(target.port, workload.method, path, headers, sent)
    _expect_answer(target, workload, status, body)
    received = logged_body(target.body_log, nonce)
    if received is None:
        raise BenchError(
            f"{target.name}: the upstream logged no check request; was the "
            f"{marker[0]} header forwarded?"
        )
    if received != sent:
        raise BenchError(
            f"{target.name}: the upstream received a {len(received)}-byte body "
            f"{received[:60]!r}...; expected the {len(sent)}-byte request body"
        )


def logged_body(log: Path, nonce: str, wait: float = 2.0) -> bytes | None:
    """The body the upstream logged for the check request ``nonce``, None if none.

    nginx writes the line when it finishes the request, which may be just after the
    answer reached us, so the file is read again for up to ``wait`` seconds. Only whole
    lines count: a 64 KiB line can be read while nginx is still writing it. (Bodies
    checked this way must hold no newline.)
    """
    marker = f"{nonce} POST ".encode()
    deadline = time.monotonic() + wait
    while True:
        for line in _whole_lines(log):
            if line.startswith(marker):
                return line[len(marker) :]
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def _whole_lines(path: Path) -> list[bytes]:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return []
    return text.split(b"\n")[:-1]  # what follows the last newline is still being written


def _verify_credential(target: Target, authorization: str) -> None:
    status, seen = http_request(target.port, "GET", f"{target.prefix}/auth", target.headers)
    if status != 200 or seen != authorization.encode():
        # Neither value is shown: either may be a credential.
        raise BenchError(
            f"{target.name}: the upstream did not receive the injected credential (GET "
            f"{target.prefix}/auth answered {status}, Authorization of {len(seen)} bytes)"
        )


# --- the upstream, nginx and the yardstick -----------------------------------------------


def write_static_files(root: Path) -> None:
    root.mkdir()
    for workload in WORKLOADS.values():
        if workload.method == "GET":
            (root / workload.path.lstrip("/")).write_bytes(workload.response_body)


def start_upstream(stack: ExitStack, nginx: str, workdir: Path) -> Target:
    root, prefix, port = workdir / "www", workdir / "upstream", free_port()
    write_static_files(root)
    server = upstream_server(root, prefix, port, UPLOAD_ANSWER.decode())
    conf = nginx_config(prefix, port, server, upstream_http())
    proc = start_nginx(stack, nginx, prefix, "upstream nginx", conf, port)
    return Target(
        "direct", port, "", (), proc.pid, None, prefix / BODY_LOG, log=prefix / "error.log"
    )


def start_nginx_proxy(stack: ExitStack, nginx: str, workdir: Path, upstream: Target) -> Target:
    port = free_port()
    token = secrets.token_urlsafe(16)
    server, extra = proxy_server(token), proxy_upstream(upstream.port)
    conf = nginx_config(workdir / "proxy", port, server, extra)
    proc = start_nginx(stack, nginx, workdir / "proxy", "nginx proxy", conf, port)
    authorization, log = f"Bearer {token}", workdir / "proxy" / "error.log"
    return Target("nginx", port, "", (), proc.pid, authorization, upstream.body_log, log)


def yardstick_command(port: int, upstream: Target) -> list[str]:
    # By file path: loadtest is not an installed package, and the script imports nothing
    # from it, so it runs from any working directory.
    script = Path(__file__).with_name("yardstick.py")
    upstream_url = f"http://127.0.0.1:{upstream.port}"
    return [sys.executable, str(script), "--port", str(port), "--upstream", upstream_url]


def start_yardstick(stack: ExitStack, workdir: Path, upstream: Target) -> Target:
    port, token = free_port(), secrets.token_urlsafe(16)
    log = workdir / "yardstick.log"
    env = {**os.environ, "YARDSTICK_TOKEN": token}
    command = [*yardstick_command(port, upstream), "--connection-id", CONNECTION_ID]
    proc = stack.enter_context(child_process(command, log, env))
    wait_until_up("yardstick", proc, port, "/health", log, attempts=300)
    headers, authorization = (("Connection-Id", CONNECTION_ID),), f"Bearer {token}"
    body_log = upstream.body_log
    return Target("yardstick", port, "/proxy", headers, proc.pid, authorization, body_log, log)


# --- authgate ----------------------------------------------------------------------------


def default_proxy_command() -> list[str]:
    script = Path(sys.executable).with_name("authgate")
    if script.exists():
        return [str(script), "proxy"]
    return [sys.executable, "-m", "authgate", "proxy"]


def management_command(proxy: Sequence[str]) -> list[str]:
    """The proxy command with its last ``proxy`` word replaced by ``management``."""
    words = list(proxy)
    if "proxy" not in words:
        raise BenchError(
            f"cannot derive the management command from {' '.join(words)!r} (no word "
            "'proxy' in it); pass --management-cmd"
        )
    words[len(words) - 1 - words[::-1].index("proxy")] = "management"
    return words


def proxy_command(proxy: Sequence[str], workers: int) -> list[str]:
    # Always said: the default is one worker per core, not one.
    return [*proxy, "--workers", str(workers)]


def authgate_path_name(workers: int) -> str:
    return AUTHGATE if workers == 1 else f"{AUTHGATE}-w{workers}"


def authgate_env(data_dir: Path, secret_key: str) -> dict[str, str]:
    """What both authgate processes share; each adds its own ``AUTHGATE_PORT``."""
    return {
        **os.environ,
        "AUTHGATE_HOST": "127.0.0.1",
        "AUTHGATE_DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{data_dir}/bench.db",
        "AUTHGATE_SECRET_KEY": secret_key,
        "AUTHGATE_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        # The upstream is on loopback, which the SSRF policy refuses by default.
        "AUTHGATE_ALLOW_PRIVATE_UPSTREAMS": "true",
        # `python -m authgate` then imports what PYTHONPATH or the installed package
        # names, never a checkout that happens to be the current directory.
        "PYTHONSAFEPATH": "1",
    }


@dataclass(frozen=True)
class ControlPlane:
    """The running ``authgate management``, and what its proxies must share with it."""

    port: int
    secret_key: str
    env: Mapping[str, str]
    data_dir: Path


def post_json(port: int, path: str, payload: object, secret_key: str, expected: int) -> None:
    headers = (("Authorization", f"Bearer {secret_key}"), ("Content-Type", JSON))
    status, body = http_request(port, "POST", path, headers, json.dumps(payload).encode())
    if status != expected:
        raise BenchError(
            f"authgate management: POST {path} answered {status} (expected {expected}): "
            f"{body[:300]!r}"
        )


def seed_authgate(port: int, secret_key: str) -> None:
    # openai is an API_KEY provider in the bundled catalogue: no OAuth client needed.
    integration = {"provider": "openai", "unique_key": INTEGRATION}
    post_json(port, "/integrations", integration, secret_key, 200)
    connection = {
        "provider_config_key": INTEGRATION,
        "connection_id": CONNECTION_ID,
        "credentials": {"type": "API_KEY", "apiKey": AUTHGATE_API_KEY},
    }
    post_json(port, "/connections", connection, secret_key, 201)


def start_management(stack: ExitStack, command: Sequence[str], workdir: Path) -> ControlPlane:
    """Start ``authgate management``, wait for it, and seed the bench's connection."""
    data_dir = workdir / "authgate"
    data_dir.mkdir(mode=0o700)
    port, secret_key = free_port(), str(uuid.uuid4())
    env = authgate_env(data_dir, secret_key)
    log = data_dir / "management.log"
    own_env = {**env, "AUTHGATE_PORT": str(port)}
    proc = stack.enter_context(child_process(command, log, own_env))
    wait_until_up("authgate management", proc, port, "/health", log, attempts=300)
    seed_authgate(port, secret_key)
    return ControlPlane(port, secret_key, env, data_dir)


def start_authgate_proxy(
    stack: ExitStack,
    command: Sequence[str],
    workers: int,
    control: ControlPlane,
    upstream: Target,
) -> Target:
    """Start ``authgate proxy`` with ``workers`` processes on the control plane's store."""
    name, port = authgate_path_name(workers), free_port()
    log = control.data_dir / f"{name}.log"
    env = {**control.env, "AUTHGATE_PORT": str(port)}
    proc = stack.enter_context(child_process(proxy_command(command, workers), log, env))
    wait_until_up(name, proc, port, "/health", log, attempts=300)
    headers = (
        ("Authorization", f"Bearer {control.secret_key}"),
        ("Connection-Id", CONNECTION_ID),
        ("Provider-Config-Key", INTEGRATION),
        ("Base-Url-Override", f"http://127.0.0.1:{upstream.port}"),
    )
    authorization, body_log = f"Bearer {AUTHGATE_API_KEY}", upstream.body_log
    return Target(
        name, port, "/proxy", headers, proc.pid, authorization, body_log, log, "Nango-Proxy-"
    )
