"""How the server processes run and stop: workers, keep-alive and the drain on SIGTERM.

Shared by the three roles; read once from the environment like the other settings.

A stop (SIGTERM or SIGINT) runs in three steps, so that a load balancer or Kubernetes
takes the process out of rotation before anything is refused:

1. `/ready` answers 503 with `"draining": true`; requests are still served for
   `AUTHGATE_DRAIN_DELAY` seconds (0 by default; a few seconds behind a balancer that
   polls readiness);
2. the listening socket closes and idle keep-alive connections with it; a busy connection
   closes after its current response, which says `Connection: close`;
3. requests and streams in flight get up to `AUTHGATE_DRAIN_TIMEOUT` seconds to finish,
   then the rest are cut and the process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from credentials.config import read_float, read_int

# Longer than the common load-balancer idle timeouts (60 s), so the balancer, not us,
# closes idle keep-alive connections and never sends a request into a closing socket.
DEFAULT_KEEPALIVE_TIMEOUT = 61.0
DEFAULT_DRAIN_TIMEOUT = 30.0
DEFAULT_DRAIN_DELAY = 0.0
MAX_WORKERS = 256

WORKERS_VARIABLE = "AUTHGATE_WORKERS"
KEEPALIVE_VARIABLE = "AUTHGATE_KEEPALIVE_TIMEOUT"
DRAIN_TIMEOUT_VARIABLE = "AUTHGATE_DRAIN_TIMEOUT"
DRAIN_DELAY_VARIABLE = "AUTHGATE_DRAIN_DELAY"


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class ServingSettings:
    workers: int = 1
    """Worker processes of `authgate proxy`; the default read from the environment is
    one per usable core."""
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    drain_delay: float = DEFAULT_DRAIN_DELAY

    @property
    def stop_seconds(self) -> float:
        """The longest a stop takes before the process exits."""
        return self.drain_delay + self.drain_timeout

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServingSettings:
        return cls(
            workers=read_int(
                environ, WORKERS_VARIABLE, usable_cores(), minimum=1, maximum=MAX_WORKERS
            ),
            keepalive_timeout=read_float(
                environ, KEEPALIVE_VARIABLE, DEFAULT_KEEPALIVE_TIMEOUT, minimum=1.0
            ),
            drain_timeout=read_float(environ, DRAIN_TIMEOUT_VARIABLE, DEFAULT_DRAIN_TIMEOUT),
            drain_delay=read_float(environ, DRAIN_DELAY_VARIABLE, DEFAULT_DRAIN_DELAY),
        )
