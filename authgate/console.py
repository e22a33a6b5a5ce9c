"""The operator-facing lines authgate prints (on stderr, prefixed), apart from the logs."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    print(f"authgate: {message}", file=sys.stderr, flush=True)
