from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


@pytest.fixture
def nginx() -> str:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx-light)")
    return NGINX


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not tmp_path: pytest's base directory is private (0700), and nginx workers started
    # by root run as an unprivileged user who must read the static files.
    with tempfile.TemporaryDirectory(prefix="authgate-bench-test-") as tmp:
        path = Path(tmp)
        path.chmod(0o755)
        yield path


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as children:
        yield children
