"""First start on embedded defaults when several workers start at the same moment."""

from __future__ import annotations

import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from authgate.bootstrap import (
    ENCRYPTION_KEY_FILE,
    SECRET_KEY_FILE,
    encryption_keys,
    start_core,
)
from credentials.config import CoreSettings
from credentials.secret_keys import hash_secret_key

STARTERS = 8


def test_workers_starting_together_share_one_encryption_key(tmp_path: Path) -> None:
    settings = CoreSettings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/a.db")
    lines: list[str] = []
    start_line = threading.Barrier(STARTERS)

    def start() -> tuple[bytes, ...]:
        start_line.wait()
        return encryption_keys(settings, lines.append)

    with ThreadPoolExecutor(STARTERS) as pool:
        keys = list(pool.map(lambda _: start(), range(STARTERS)))

    assert len(set(keys)) == 1, "workers would seal rows under different keys"
    assert len(keys[0][0]) == 32
    assert len([line for line in lines if "generated" in line]) == 1
    key_file = tmp_path / ENCRYPTION_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == [ENCRYPTION_KEY_FILE]


async def test_a_secret_key_file_left_from_an_earlier_database_is_adopted(
    tmp_path: Path,
) -> None:
    first = CoreSettings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/first.db")
    core = await start_core(first, lambda _: None)
    await core.close()
    secret_key = (tmp_path / SECRET_KEY_FILE).read_text().strip()

    lines: list[str] = []
    fresh = CoreSettings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/fresh.db")
    core = await start_core(fresh, lines.append)
    try:
        owner = await core.store.find_environment_by_key_hash(hash_secret_key(secret_key))
        assert owner is not None
        assert owner.name == "dev"
        assert (tmp_path / SECRET_KEY_FILE).read_text().strip() == secret_key
        assert all(secret_key not in line for line in lines)
    finally:
        await core.close()
