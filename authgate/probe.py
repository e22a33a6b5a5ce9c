"""`authgate health`: one GET to the local server, for container health checks.

Standard library only, so a probe costs a fraction of what starting the server's
modules would, and works in an image without curl.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

HEALTHY = 0
UNHEALTHY = 1


def probe(url: str, *, timeout: float) -> int:
    """0 when `url` answers 200; otherwise 1, with the reason on stderr."""
    # No proxy from the environment: the server being checked is the local one.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as answer:
            status = answer.status
    except urllib.error.HTTPError as refused:
        body = refused.read(2048).decode("utf-8", "replace")
        print(f"authgate health: {url} answered {refused.code}: {body}", file=sys.stderr)
        return UNHEALTHY
    except (urllib.error.URLError, OSError) as failure:
        reason = getattr(failure, "reason", failure)
        print(f"authgate health: {url} unreachable: {reason}", file=sys.stderr)
        return UNHEALTHY
    return HEALTHY if status == 200 else UNHEALTHY
