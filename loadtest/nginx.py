"""nginx as the benchmark's upstream and as the reference reverse proxy.

Each instance is a foreground child with one worker, its own prefix directory, and every
file it writes (pid, error log, temp dirs) inside that directory.
"""

from __future__ import annotations

import subprocess
from contextlib import ExitStack
from pathlib import Path
from typing import Final

from loadtest.processes import child_process, wait_until_up


def nginx_config(prefix: Path, port: int, server: str, http_extra: str = "") -> str:
    """A self-contained nginx.conf whose pid, logs and temp files stay inside ``prefix``."""
    temp_paths = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
worker_processes 1;
worker_rlimit_nofile 16384;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    server_tokens off;
    sendfile on;
    # No tcp_nopush: with it, some 64 KiB answers stall for a 40 ms delayed ACK on
    # loopback, which puts the baseline's p99 at ~40 ms.
    tcp_nodelay on;
    keepalive_timeout 65s;
    # The default (1000) would make wrk reconnect mid-run on the fast paths only.
    keepalive_requests 1000000;
{temp_paths}
{http_extra}    server {{
        listen 127.0.0.1:{port};
{server}
    }}
}}
"""


# The header that marks the bench's own check request on /upload, and the log of the
# bodies such requests carried.
CHECK_HEADER: Final = "X-Bench-Check"
BODY_LOG: Final = "upload-bodies.log"


def upstream_http() -> str:
    # escape=none: the log line holds the body byte for byte, so the check can compare it.
    fields = f"$http_{_variable(CHECK_HEADER)} $request_method $request_body"
    return f"""\
    log_format bench_body escape=none '{fields}';
"""


def upstream_server(root: Path, prefix: Path, port: int, upload_answer: str) -> str:
    """Static files, ``/auth`` (echoes the Authorization seen) and ``POST /upload``.

    ``/upload`` answers ``upload_answer`` and discards the body; nginx still reads it off
    the socket, so keep-alive continues. A request carrying ``X-Bench-Check`` goes through
    ``/upload-check`` instead, where nginx reads the body into memory (by proxying it to
    itself) and logs it, so the bench can see which bytes arrived. The loaded runs never
    send that header.
    """
    check = _variable(CHECK_HEADER)
    return f"""\
        root {root};
        default_type application/json;
        open_file_cache max=16 inactive=600s;
        open_file_cache_valid 600s;
        # Lets the bench check which credential actually reached the upstream.
        location = /auth {{
            return 200 $http_authorization;
        }}
        location = /upload {{
            if ($request_method != POST) {{
                return 405;
            }}
            if ($http_{check}) {{
                rewrite ^ /upload-check last;
            }}
            return 200 '{upload_answer}';
        }}
        location = /upload-check {{
            internal;
            client_body_buffer_size 128k;
            client_body_in_single_buffer on;
            access_log {prefix}/{BODY_LOG} bench_body;
            proxy_pass http://127.0.0.1:{port}/upload-sink;
        }}
        location = /upload-sink {{
            return 200 '{upload_answer}';
        }}"""


def _variable(header: str) -> str:
    return header.lower().replace("-", "_")


def proxy_upstream(upstream_port: int) -> str:
    # Without an upstream block and "keepalive", nginx opens a connection per request.
    return f"""\
    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
"""


def proxy_server(token: str) -> str:
    return f"""\
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {token}";
            # Keeps a 64 KiB request body in memory instead of a temporary file.
            client_body_buffer_size 128k;
        }}"""


def start_nginx(
    stack: ExitStack, nginx: str, prefix: Path, name: str, conf: str, port: int
) -> subprocess.Popen[bytes]:
    """Start nginx with ``conf`` and wait until it serves ``/small``."""
    prefix.mkdir()
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(conf)
    command = [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf_path)]
    log = prefix / "stdout.log"
    proc = stack.enter_context(child_process([*command, "-g", "daemon off;"], log))
    wait_until_up(name, proc, port, "/small", prefix / "error.log", attempts=100)
    return proc
