"""A smoke run of loadtest/locustfile.py, so that the scenario never rots.

A real ``authgate serve`` and the fake provider run on free ports; locust runs headless as
a subprocess for a few seconds with a few users, seeding through its ``init`` event, and
its CSV stats must show requests in every task group and no failures at all (every
provider 429 and 5xx in the scenario is one authgate must retry past).

The authgate command is ``python -m authgate`` unless ``LOADTEST_AUTHGATE_CMD`` gives
another prefix (shell words, the role is appended), e.g. to try a snapshot while the
working tree is mid-change:

    LOADTEST_AUTHGATE_CMD="env PYTHONPATH=/tmp/ag-head .venv/bin/python -m authgate"

locust is never imported here: it monkey-patches the process for gevent.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Final

import pytest

from loadtest.processes import BenchError
from loadtest.seed import (
    CATALOGUE,
    REPO_ROOT,
    Authgate,
    ManagementClient,
    SeedPlan,
    api_connection_ids,
    api_key_of,
    authgate_prefix,
    child_environment,
    error_summary,
    oauth_connection_ids,
    seed,
    start_authgate,
    start_fake_provider,
)
from tests.log_scan import SecretRegistry, watch_child

LOCUSTFILE: Final = REPO_ROOT / "loadtest" / "locustfile.py"
API_CONNECTIONS: Final = 10
OAUTH_CONNECTIONS: Final = 4
TASK_GROUPS: Final = {
    ("GET", "/proxy/small"),
    ("GET", "/proxy/big"),
    ("POST", "/proxy/echo"),
    ("GET", "/proxy/stream [download]"),
    ("GET", "/proxy/oauth/me [refresh]"),
    ("GET", "/proxy/fail/429 [Retry-After]"),
    ("GET", "/proxy/fail/5xx [Retries]"),
}
LOCUST_TIMEOUT: Final = 90.0


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Authgate, int]]:
    command = authgate_prefix(os.environ.get("LOADTEST_AUTHGATE_CMD"))
    with ExitStack() as stack:
        provider_port = start_fake_provider(stack, tmp_path)
        authgate = start_authgate(stack, command, tmp_path, split=False)
        watch_child(authgate.environment, *authgate.logs)
        yield authgate, provider_port


def run_locust(
    authgate: Authgate, provider_port: int, workdir: Path, *extra: str
) -> tuple[subprocess.CompletedProcess[bytes], Path]:
    prefix = workdir / "locust"
    output = workdir / "locust.log"
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        "10",
        "--spawn-rate",
        "10",
        "--run-time",
        "6s",
        "--stop-timeout",
        "5",
        "--only-summary",
        "--host",
        authgate.proxy_url,
        "--provider-port",
        str(provider_port),
        "--api-connections",
        str(API_CONNECTIONS),
        "--oauth-connections",
        str(OAUTH_CONNECTIONS),
        # Tokens renewed every ~2 s, so renewals also happen mid-run, not only at first use.
        "--token-lifetime",
        "4",
        "--download-mib",
        "1",
        "--csv",
        str(prefix),
        *extra,
    ]
    env = child_environment(AUTHGATE_SECRET_KEY=authgate.secret_key)
    watch_child(env, output)
    with output.open("wb") as out:
        done = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=LOCUST_TIMEOUT,
            check=False,
        )
    return done, prefix


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_every_task_group_runs_without_failures(
    deployment: tuple[Authgate, int], tmp_path: Path, secret_registry: SecretRegistry
) -> None:
    authgate, provider_port = deployment
    for connection_id in api_connection_ids(API_CONNECTIONS):
        secret_registry.add(api_key_of(connection_id), "seeded API key")
    done, prefix = run_locust(authgate, provider_port, tmp_path)
    log = (tmp_path / "locust.log").read_text(errors="replace")
    assert done.returncode == 0, log[-3000:]
    stats = read_csv(Path(f"{prefix}_stats.csv"))
    rows = {(row["Type"], row["Name"]): row for row in stats if row["Name"] != "Aggregated"}
    assert set(rows) == TASK_GROUPS, log[-3000:]
    for key, row in rows.items():
        assert int(row["Request Count"]) > 0, key
        assert int(row["Failure Count"]) == 0, (key, read_csv(Path(f"{prefix}_failures.csv")))
    assert read_csv(Path(f"{prefix}_failures.csv")) == []
    # The download group carried its megabyte every time.
    download = rows[("GET", "/proxy/stream [download]")]
    assert float(download["Average Content Size"]) == 1024 * 1024
    # Every OAuth connection started expired: each was renewed at least once.
    assert renewals(authgate.logs[0]) >= OAUTH_CONNECTIONS


def renewals(log: Path) -> int:
    """Proxied requests whose access-log line says authgate renewed the token first."""
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the ready line and other plain text
        if isinstance(record, dict) and record.get("refresh") == "renewed":
            count += 1
    return count


def test_a_run_without_its_seed_fails_where_credentials_are_missing(
    deployment: tuple[Authgate, int], tmp_path: Path
) -> None:
    # --no-seed on an empty authgate: every call names an unknown connection (404), so
    # the smoke test above would notice a scenario that stopped checking statuses.
    authgate, provider_port = deployment
    done, prefix = run_locust(authgate, provider_port, tmp_path, "--no-seed", "--run-time", "3s")
    assert done.returncode == 1
    stats = read_csv(Path(f"{prefix}_stats.csv"))
    rows = {(row["Type"], row["Name"]): row for row in stats if row["Name"] != "Aggregated"}
    assert set(rows) <= TASK_GROUPS
    assert rows
    for key, row in rows.items():
        assert row["Failure Count"] == row["Request Count"], key
    errors = " ".join(row["Error"] for row in read_csv(Path(f"{prefix}_failures.csv")))
    assert "404" in errors


# --- seeding -------------------------------------------------------------------------------


def connection_ids(client: ManagementClient) -> list[str]:
    status, body = client.request("GET", "/connections")
    assert status == 200, body
    return sorted(row["connection_id"] for row in json.loads(body)["connections"])


def test_seeding_twice_keeps_the_integrations_and_upserts_the_connections(
    deployment: tuple[Authgate, int],
) -> None:
    authgate, provider_port = deployment
    client = ManagementClient(authgate.management_url, authgate.secret_key)
    seed(client, SeedPlan(provider_port, api_connections=3, oauth_connections=2))
    seed(client, SeedPlan(provider_port, api_connections=4, oauth_connections=2))
    expected = sorted(api_connection_ids(4) + oauth_connection_ids(2))
    assert connection_ids(client) == expected
    status, _ = client.request("GET", "/integrations/lt-oauth")
    assert status == 200


def test_the_seed_command_seeds_with_the_key_from_the_environment(
    deployment: tuple[Authgate, int],
) -> None:
    authgate, provider_port = deployment
    command = [
        sys.executable,
        "-m",
        "loadtest.seed",
        "connections",
        "--management-url",
        authgate.management_url,
        "--provider-port",
        str(provider_port),
        "--api-connections",
        "2",
        "--oauth-connections",
        "1",
    ]
    env = child_environment(AUTHGATE_SECRET_KEY=authgate.secret_key)
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert b"seeded 2 API-key and 1 OAuth 2 connections" in done.stdout
    client = ManagementClient(authgate.management_url, authgate.secret_key)
    assert connection_ids(client) == ["api-000", "api-001", "oauth-000"]
    # Without the key it refuses before calling anything.
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=child_environment(), capture_output=True, timeout=60
    )
    assert done.returncode == 2
    assert b"AUTHGATE_SECRET_KEY" in done.stderr


def test_a_refused_seed_names_the_error_not_the_request(deployment: tuple[Authgate, int]) -> None:
    authgate, provider_port = deployment
    client = ManagementClient(authgate.management_url, "0f9b8a1e-3c55-4b0e-9a51-4f6f0a2d7c11")
    with pytest.raises(BenchError, match="answered 401") as raised:
        seed(client, SeedPlan(provider_port))
    assert "0f9b8a1e" not in str(raised.value)


def test_error_summaries_keep_only_the_code_and_message() -> None:
    body = json.dumps({"error": {"code": "invalid_body", "message": "bad", "echo": "sk-x"}})
    assert error_summary(body.encode()) == "invalid_body: bad"
    assert error_summary(b"<html>") == "6 bytes that are not a JSON object"
    assert error_summary(b'{"error": "plain"}') == "plain"


def test_the_catalogue_command_prints_the_catalogue(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "loadtest.seed", "catalogue"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, timeout=60, check=True)
    assert done.stdout.decode() == CATALOGUE
    target = tmp_path / "providers.yaml"
    subprocess.run([*command, str(target)], cwd=REPO_ROOT, timeout=60, check=True)
    assert target.read_text() == CATALOGUE
