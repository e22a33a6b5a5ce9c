"""`authgate`: run the services, and operate environments and keys.

    authgate serve                 proxy + management on one port (embedded default)
    authgate proxy                 the data plane only
    authgate management            the control plane only
    authgate health [--ready]      exit 0 when the local server answers /health (or
                                   /ready) with 200: for container health checks
    authgate env create NAME       a new environment; prints its secret key
    authgate env list              environments, each with its number of active keys
    authgate env set-var ENV NAME VALUE
                                   set a variable (VALUE `-`: read it from stdin)
    authgate env unset-var ENV NAME
                                   remove a variable
    authgate key create ENV        a new secret key for ENV; prints it
    authgate key revoke KEY        revoke a secret key (KEY `-`: read it from stdin)
    authgate keys rotate           re-encrypt every stored secret under the first
                                   AUTHGATE_ENCRYPTION_KEY (safe while serving; rerun
                                   after an interruption)

Configuration comes from environment variables only (see README); an invalid value
stops the process with a message naming the variable (exit 2). A database that cannot
be reached stops it with exit 3.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from authgate.console import say
from authgate.settings import ServingSettings
from credentials.config import ConfigError, CoreSettings, read_int
from credentials.database import StoreUnavailable
from credentials.jsonlog import configure_logging
from management.settings import ManagementSettings
from proxy.settings import ProxySettings

EXIT_CONFIG = 2
EXIT_STORE_UNAVAILABLE = 3

if TYPE_CHECKING:
    # Generic only in the type stubs; at run time the class cannot be subscripted.
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as problem:
        print(f"authgate: configuration error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreUnavailable as problem:
        # The message names the dialect and the failure only, never the DSN.
        print(f"authgate: {problem}", file=sys.stderr)
        return EXIT_STORE_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authgate", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="proxy and management on one port").set_defaults(run=_serve)
    proxy = commands.add_parser("proxy", help="the data plane only")
    proxy.add_argument(
        "--workers",
        type=_positive_int,
        help="worker processes sharing the port (SO_REUSEPORT), under a supervisor; "
        "default AUTHGATE_WORKERS, else one per core",
    )
    proxy.set_defaults(run=_proxy)
    commands.add_parser("management", help="the control plane only").set_defaults(run=_management)
    _health_command(commands)
    _environment_commands(commands)
    _key_commands(commands)
    _encryption_key_commands(commands)
    return parser


def _health_command(commands: Subparsers) -> None:
    health = commands.add_parser(
        "health", help="check the local server: exit 0 when it answers 200, else 1"
    )
    health.add_argument(
        "--ready", action="store_true", help="check /ready (store, Redis) instead of /health"
    )
    health.add_argument("--host", default="127.0.0.1")
    health.add_argument("--port", type=int, help="default AUTHGATE_PORT, else 3003")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    health.set_defaults(run=_health)


def _environment_commands(commands: Subparsers) -> None:
    env = commands.add_parser("env", help="environments").add_subparsers(
        dest="action", required=True
    )
    create = env.add_parser("create", help="create an environment and print its key")
    create.add_argument("name")
    create.set_defaults(run=_env_create)
    listing = env.add_parser("list", help="list environments: name, tab, active key count")
    listing.set_defaults(run=_env_list)
    set_var = env.add_parser("set-var", help="set an environment variable")
    set_var.add_argument("environment")
    set_var.add_argument("name")
    set_var.add_argument(
        "value", help="the value, or - to read it from stdin (keeps secrets out of shell history)"
    )
    set_var.set_defaults(run=_env_set_var)
    unset_var = env.add_parser("unset-var", help="remove an environment variable")
    unset_var.add_argument("environment")
    unset_var.add_argument("name")
    unset_var.set_defaults(run=_env_unset_var)


def _key_commands(commands: Subparsers) -> None:
    key = commands.add_parser("key", help="secret keys").add_subparsers(
        dest="action", required=True
    )
    create = key.add_parser("create", help="create a secret key for an environment")
    create.add_argument("environment")
    create.set_defaults(run=_key_create)
    revoke = key.add_parser("revoke", help="revoke a secret key")
    revoke.add_argument("secret_key", help="the key, or - to read it from stdin")
    revoke.set_defaults(run=_key_revoke)


def _encryption_key_commands(commands: Subparsers) -> None:
    keys = commands.add_parser("keys", help="encryption keys").add_subparsers(
        dest="action", required=True
    )
    rotate = keys.add_parser(
        "rotate", help="re-encrypt every stored secret under the first AUTHGATE_ENCRYPTION_KEY"
    )
    rotate.add_argument(
        "--batch-size",
        type=_positive_int,
        help="rows read per query (default 500)",
    )
    rotate.set_defaults(run=_keys_rotate)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _serve(args: argparse.Namespace) -> int:
    from authgate.serving import run_serve

    settings = ProxySettings.from_env(os.environ)
    management = ManagementSettings.from_env(os.environ)
    serving = ServingSettings.from_env(os.environ)
    configure_logging(settings.log_level)
    run_serve(settings, management, serving)
    return 0


def _proxy(args: argparse.Namespace) -> int:
    settings = ProxySettings.from_env(os.environ)
    serving = ServingSettings.from_env(os.environ)
    configure_logging(settings.log_level)
    workers = args.workers or serving.workers
    if workers > 1:
        from authgate.workers import Supervisor

        return Supervisor(workers, say).run()
    from authgate.serving import run_proxy
    from authgate.workers import WORKER_VARIABLE

    run_proxy(settings, serving, reuse_port=os.environ.get(WORKER_VARIABLE) == "1")
    return 0


def _management(args: argparse.Namespace) -> int:
    from authgate.serving import run_management

    settings = ManagementSettings.from_env(os.environ)
    serving = ServingSettings.from_env(os.environ)
    configure_logging("INFO")
    run_management(settings, serving)
    return 0


def _health(args: argparse.Namespace) -> int:
    from authgate.probe import probe

    port = args.port or read_int(os.environ, "AUTHGATE_PORT", 3003, minimum=1, maximum=65535)
    path = "/ready" if args.ready else "/health"
    return probe(f"http://{args.host}:{port}{path}", timeout=args.timeout)


def _env_create(args: argparse.Namespace) -> int:
    from authgate.operator import create_environment

    return _run_operator(create_environment(_core_settings(), args.name))


def _env_list(args: argparse.Namespace) -> int:
    from authgate.operator import list_environments

    return _run_operator(list_environments(_core_settings()))


def _env_set_var(args: argparse.Namespace) -> int:
    from authgate.operator import set_variable

    value = _argument_or_stdin(args.value)
    return _run_operator(set_variable(_core_settings(), args.environment, args.name, value))


def _env_unset_var(args: argparse.Namespace) -> int:
    from authgate.operator import unset_variable

    return _run_operator(unset_variable(_core_settings(), args.environment, args.name))


def _key_create(args: argparse.Namespace) -> int:
    from authgate.operator import create_key

    return _run_operator(create_key(_core_settings(), args.environment))


def _key_revoke(args: argparse.Namespace) -> int:
    from authgate.operator import revoke_key

    secret_key = _argument_or_stdin(args.secret_key).strip()
    return _run_operator(revoke_key(_core_settings(), secret_key))


def _keys_rotate(args: argparse.Namespace) -> int:
    from authgate.operator import ROTATION_BATCH_SIZE, rotate_keys

    batch_size = args.batch_size or ROTATION_BATCH_SIZE
    return _run_operator(rotate_keys(_core_settings(), batch_size=batch_size))


def _argument_or_stdin(value: str) -> str:
    """`-` means stdin, minus the one line break `echo` or a here-string adds."""
    if value != "-":
        return value
    text = sys.stdin.read()
    return text.removesuffix("\n").removesuffix("\r")


def _core_settings() -> CoreSettings:
    # Read before the coroutine is built, so a configuration error never leaves an
    # un-awaited coroutine behind.
    return CoreSettings.from_env(os.environ)


def _run_operator(command: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(command)


if __name__ == "__main__":
    sys.exit(main())
