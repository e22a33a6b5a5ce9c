"""npm packages the tests run for real (the official Nango clients), installed from the
registry exactly as a directory's package-lock.json pins them.

`PinnedPackage.install()` runs `npm ci` (or `npm install` while there is no lock yet),
skipped when the stamp left by the last install still matches package.json, the lock
and the installed version. One installer runs at a time, since parallel pytest workers
share the directory; the lock file lives outside node_modules, which `npm ci` deletes.
A missing npm or a failed install fails the test that needed it, saying why: nothing
is skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

INSTALL_TIMEOUT: Final = 300.0
_MANIFESTS: Final = ("package.json", "package-lock.json")
_STAMP_NAME: Final = ".authgate-install-stamp"


@dataclass(frozen=True, slots=True)
class PinnedPackage:
    directory: Path
    """Holds package.json and package-lock.json; node_modules goes here."""
    name: str
    version: str
    lock_file: Path

    @property
    def modules(self) -> Path:
        return self.directory / "node_modules"

    @property
    def root(self) -> Path:
        """The installed package's own directory."""
        return self.modules / self.name

    def install(self) -> None:
        """node_modules as the lock pins it, or the test fails saying why."""
        if shutil.which("npm") is None:
            pytest.fail(f"`npm` is not on PATH: the tests install {self.name} with npm")
        with self._exclusive():
            if self._up_to_date():
                return
            self._run_npm()
            installed = self._installed_version()
            if installed != self.version:
                pytest.fail(f"installed {self.name} is {installed}, expected {self.version}")
            (self.modules / _STAMP_NAME).write_text(self._digest() + "\n")

    def _run_npm(self) -> None:
        has_lock = (self.directory / "package-lock.json").exists()
        command = ["npm", "ci" if has_lock else "install", "--no-audit", "--no-fund"]
        command += ["--ignore-scripts", "--loglevel=error"]
        environ = {**os.environ, "npm_config_update_notifier": "false"}
        try:
            done = subprocess.run(
                command,
                cwd=self.directory,
                env=environ,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(command)}` did not finish in {INSTALL_TIMEOUT} s")
        if done.returncode != 0:
            pytest.fail(
                f"`{' '.join(command)}` in {self.directory} failed ({done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}"
            )

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        with self.lock_file.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _digest(self) -> str:
        digest = hashlib.sha256()
        for name in _MANIFESTS:
            path = self.directory / name
            digest.update(name.encode() + b"\0")
            digest.update(path.read_bytes() if path.exists() else b"<absent>")
            digest.update(b"\0")
        return digest.hexdigest()

    def _installed_version(self) -> str | None:
        try:
            version = json.loads((self.root / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            return None
        return str(version)

    def _up_to_date(self) -> bool:
        try:
            stamp = (self.modules / _STAMP_NAME).read_text().strip()
        except OSError:
            return False
        return stamp == self._digest() and self._installed_version() == self.version
