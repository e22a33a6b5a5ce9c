"""The generated nginx configurations are valid and keep every file inside their prefix."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from loadtest.fake_provider import SMALL_BODY
from loadtest.nginx import nginx_config, proxy_server, proxy_upstream, start_nginx, upstream_server
from loadtest.processes import BenchError, free_port, http_request

MakeConf = Callable[[Path, int], str]


def upstream_conf(prefix: Path, port: int) -> str:
    return nginx_config(prefix, port, upstream_server(prefix.parent / "www"))


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


@pytest.mark.parametrize("make_conf", [upstream_conf, proxy_conf])
def test_every_file_nginx_writes_is_inside_the_prefix(tmp_path: Path, make_conf: MakeConf) -> None:
    conf = make_conf(tmp_path, 8080)
    written = re.findall(r"^\s*(?:pid|error_log|\w+_temp_path)\s+(\S+?);?\s", conf, re.M)
    assert len(written) == 7
    assert all(path.startswith(f"{tmp_path}/") for path in written)


def test_configuration_listens_on_loopback_only(tmp_path: Path) -> None:
    listens = re.findall(r"listen\s+(\S+);", proxy_conf(tmp_path, 8080))
    assert listens == ["127.0.0.1:8080"]


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
