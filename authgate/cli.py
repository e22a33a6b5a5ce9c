"""`authgate`: run the services, and operate environments and keys.

    authgate serve                 proxy + management on one port (embedded default)
    authgate proxy                 the data plane only
    authgate management            the control plane only
    authgate env create NAME       a new environment; prints its secret key
    authgate key create ENV        a new secret key for ENV; prints it

Configuration comes from environment variables only (see README); an invalid value
stops the process with a message naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from credentials.config import ConfigError, CoreSettings
from credentials.jsonlog import configure_logging
from management.settings import ManagementSettings
from proxy.settings import ProxySettings

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as problem:
        print(f"authgate: configuration error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authgate", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="proxy and management on one port").set_defaults(run=_serve)
    commands.add_parser("proxy", help="the data plane only").set_defaults(run=_proxy)
    commands.add_parser("management", help="the control plane only").set_defaults(run=_management)
    env = commands.add_parser("env", help="environments").add_subparsers(
        dest="action", required=True
    )
    create_env = env.add_parser("create", help="create an environment and print its key")
    create_env.add_argument("name")
    create_env.set_defaults(run=_env_create)
    key = commands.add_parser("key", help="secret keys").add_subparsers(
        dest="action", required=True
    )
    create_key = key.add_parser("create", help="create a secret key for an environment")
    create_key.add_argument("environment")
    create_key.set_defaults(run=_key_create)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from authgate.serving import run_serve

    settings = ProxySettings.from_env(os.environ)
    configure_logging(settings.log_level)
    run_serve(settings, ManagementSettings.from_env(os.environ))
    return 0


def _proxy(args: argparse.Namespace) -> int:
    from authgate.serving import run_proxy

    settings = ProxySettings.from_env(os.environ)
    configure_logging(settings.log_level)
    run_proxy(settings)
    return 0


def _management(args: argparse.Namespace) -> int:
    from authgate.serving import run_management

    settings = ManagementSettings.from_env(os.environ)
    configure_logging("INFO")
    run_management(settings)
    return 0


def _env_create(args: argparse.Namespace) -> int:
    from authgate.operator import create_environment

    return _run_operator(create_environment, args.name)


def _key_create(args: argparse.Namespace) -> int:
    from authgate.operator import create_key

    return _run_operator(create_key, args.environment)


def _run_operator(
    command: Callable[[CoreSettings, str], Coroutine[Any, Any, int]], argument: str
) -> int:
    settings = CoreSettings.from_env(os.environ)
    return asyncio.run(command(settings, argument))


if __name__ == "__main__":
    sys.exit(main())
