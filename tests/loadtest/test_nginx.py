"""The generated nginx configurations are valid, keep every file inside their prefix, and
the upstream's /upload reads and discards the body or, for a marked check, logs it."""

from __future__ import annotations

import http.client
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from loadtest.fake_provider import SMALL_BODY
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
from loadtest.processes import BenchError, free_port, http_request
from loadtest.targets import logged_body

MakeConf = Callable[[Path, int], str]
ANSWER = '{"received":true}'


def upstream_conf(prefix: Path, port: int) -> str:
    server = upstream_server(prefix.parent / "www", prefix, port, ANSWER)
    return nginx_config(prefix, port, server, upstream_http())


def proxy_conf(prefix: Path, port: int) -> str:
    return nginx_config(prefix, port, proxy_server("t0ken"), proxy_upstream(port + 1))


def nginx_test(nginx: str, prefix: Path, conf: str) -> subprocess.CompletedProcess[str]:
    prefix.mkdir(exist_ok=True)
    (prefix / "nginx.conf").write_text(conf)
    command = [nginx, "-t", "-p", str(prefix), "-e", str(prefix / "error.log")]
    return subprocess.run(
        [*command, "-c", str(prefix / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("make_conf", [upstream_conf, proxy_conf])
def test_nginx_accepts_the_generated_configuration(
    nginx: str, tmp_path: Path, make_conf: MakeConf
) -> None:
    done = nginx_test(nginx, tmp_path, make_conf(tmp_path, 8080))
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


@pytest.mark.parametrize(("make_conf", "files"), [(upstream_conf, 8), (proxy_conf, 7)])
def test_every_file_nginx_writes_is_inside_the_prefix(
    tmp_path: Path, make_conf: MakeConf, files: int
) -> None:
    conf = make_conf(tmp_path, 8080)
    pattern = r"^\s*(?:pid|error_log|access_log|\w+_temp_path)\s+(\S+?);?\s"
    written = [path for path in re.findall(pattern, conf, re.M) if path != "off"]
    assert len(written) == files
    assert all(path.startswith(f"{tmp_path}/") for path in written)


def test_configuration_listens_on_loopback_only(tmp_path: Path) -> None:
    for conf in (proxy_conf(tmp_path, 8080), upstream_conf(tmp_path, 8080)):
        assert re.findall(r"listen\s+(\S+);", conf) == ["127.0.0.1:8080"]


def test_the_upstream_checks_its_bodies_through_itself(tmp_path: Path) -> None:
    conf = upstream_conf(tmp_path, 8080)
    assert "proxy_pass http://127.0.0.1:8080/upload-sink;" in conf
    assert f"return 200 '{ANSWER}';" in conf


def test_start_nginx_serves_the_files(nginx: str, workdir: Path, stack: ExitStack) -> None:
    (workdir / "www").mkdir()
    (workdir / "www" / "small").write_bytes(SMALL_BODY)
    port = free_port()
    conf = upstream_conf(workdir / "up", port)
    proc = start_nginx(stack, nginx, workdir / "up", "up", conf, port)
    assert proc.poll() is None
    assert http_request(port, "GET", "/small") == (200, SMALL_BODY)


def test_start_nginx_reports_a_bad_configuration(
    nginx: str, workdir: Path, stack: ExitStack
) -> None:
    conf = upstream_conf(workdir / "up", free_port()).replace("sendfile on;", "sendfile maybe;")
    with pytest.raises(BenchError, match=r"(?s)exited with 1.*emerg.*sendfile"):
        start_nginx(stack, nginx, workdir / "up", "up", conf, 1)


# --- POST /upload on a real upstream -------------------------------------------------------

BODY = b'{"data":"' + b"0123456789abcdef" * 4096 + b'"}'


@pytest.fixture
def upstream_port(nginx: str, workdir: Path, stack: ExitStack) -> int:
    (workdir / "www").mkdir()
    (workdir / "www" / "small").write_bytes(SMALL_BODY)
    port = free_port()
    start_nginx(stack, nginx, workdir / "up", "up", upstream_conf(workdir / "up", port), port)
    return port


@pytest.fixture
def connection(upstream_port: int) -> Iterator[http.client.HTTPConnection]:
    conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=5)
    yield conn
    conn.close()


def exchange(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    **headers: str,
) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def test_upload_reads_the_body_and_keeps_the_connection(
    connection: http.client.HTTPConnection, workdir: Path
) -> None:
    # nginx must consume each body off the socket; otherwise the next request on the same
    # connection would be parsed from the middle of the previous body.
    assert exchange(connection, "POST", "/upload", BODY) == (200, ANSWER.encode())
    sock = connection.sock
    assert sock is not None, "nginx closed the connection after the first upload"
    assert exchange(connection, "POST", "/upload", BODY) == (200, ANSWER.encode())
    assert exchange(connection, "GET", "/small") == (200, SMALL_BODY)
    assert connection.sock is sock, "the connection was not kept alive"
    assert (workdir / "up" / BODY_LOG).read_bytes() == b"", "unmarked requests are not logged"


def test_a_chunked_upload_is_read_as_well(connection: http.client.HTTPConnection) -> None:
    connection.request("POST", "/upload", body=iter([BODY[:1000], BODY[1000:]]))
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, ANSWER.encode())
    assert exchange(connection, "GET", "/small") == (200, SMALL_BODY)


def test_upload_refuses_other_methods(connection: http.client.HTTPConnection) -> None:
    assert exchange(connection, "GET", "/upload")[0] == 405


def test_a_marked_upload_logs_its_body(
    connection: http.client.HTTPConnection, workdir: Path
) -> None:
    log = workdir / "up" / BODY_LOG
    assert exchange(connection, "POST", "/upload", BODY, **{CHECK_HEADER: "n-1"})[0] == 200
    assert exchange(connection, "POST", "/upload", b"", **{CHECK_HEADER: "n-2"})[0] == 200
    assert logged_body(log, "n-1") == BODY
    assert logged_body(log, "n-2") == b""
    assert logged_body(log, "n-3", wait=0.1) is None
