"""A pytest plugin that scans all log output of the suite for the credential values the
tests used, and fails the run on any hit.

What is scanned: every log record of every logger, rendered exactly as production writes
it (`credentials.jsonlog.JsonFormatter`) plus the message of any attached exception, and
the output files of child processes (`tests/e2e/processes.py` registers them). The root
logger runs at INFO for the whole session and aiohttp's access log is disabled, as
`configure_logging` does in production, so what is scanned is what an operator would see.

Which values: a registry, filled from four places.

- The source of every test module, statically: string literals written as the value of
  a secret-looking name (`ACCESS_TOKEN = "..."`, `{"client_secret": "..."}`,
  `password="..."`, `assert body["access_token"] == "..."`).
- The values of test modules' globals, and, before each test's fixtures are torn down,
  everything reachable from its fixture values (dataclasses, mappings, sequences,
  closures of factory fixtures, test servers and their apps, the core settings): strings
  held under secret-looking names, such as each app's `AUTHGATE_SECRET_KEY` and
  `AUTHGATE_ENCRYPTION_KEY`. These belong to that test only.
- The environment of every child process `processes.py` starts.
- Whatever a test adds through the `secret_registry` fixture.

Values shorter than `MIN_SECRET_LENGTH` and plain words are ignored: they would match
ordinary text. A hit is reported by test, logger (or file) and where the value was
registered, never with the value itself. Under pytest-xdist each worker sends its hits to
the controller, which fails the run.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import dataclasses
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from credentials.jsonlog import JsonFormatter

MIN_SECRET_LENGTH = 8
WORKER_OUTPUT_KEY = "authgate_log_scan_hits"
SESSION = "<outside any test>"

# Parts of a (lower-cased, alphanumeric-only) name that say the value is a credential...
_SECRET_NAME_PARTS = (
    "token",
    "secret",
    "password",
    "passwd",
    "apikey",
    "privatekey",
    "encryptionkey",
    "signingkey",
    "accesskey",
    "consumerkey",
    "authorization",
    "credential",
)
# ...unless the name ends in one of these: then it names something about a credential.
_NOT_SECRET_ENDINGS = (
    "url",
    "urls",
    "uri",
    "path",
    "paths",
    "header",
    "headers",
    "name",
    "names",
    "type",
    "types",
    "prefix",
    "file",
    "dir",
    "pattern",
    "length",
    "count",
    "hash",
    "hashes",
    "error",
    "errors",
    "message",
    "field",
    "fields",
    "endpoint",
    "ttl",
    "at",
    "seconds",
    "mode",
    "label",
    "location",
    "param",
    "params",
    "issuer",
    "scope",
    "scopes",
    "expiry",
    "expires",
    "expiresin",
    "expiration",
    "method",
    "template",
    "format",
    "id",
    "ids",
    "delay",
    "lifetime",
    "status",
    "kind",
    "version",
)
# Not credentials, and they would match ordinary log text: plain words and phrases
# ("password", "Bearer token", "expired-token"), a template (`${credentials.apiKey}`) and
# a response path (`data.session.token`).
_PLAIN_WORDS = re.compile(r"[A-Za-z]+(?:[-_ ][A-Za-z]+)*")
_PLAIN_WORDS_MAX_LENGTH = 16
_DOTTED_PATH = re.compile(r"[A-Za-z_]+(?:\.[A-Za-z_]+)+")
# Modules whose dataclasses and objects are walked for values; nothing else is (the
# provider catalogue alone would cost more than the test).
_WALKED_MODULES = (
    "tests.",
    "credentials.config",
    "credentials.runtime",
    "credentials.models",
    "proxy.settings",
    "management.settings",
)
_MAX_DEPTH = 8
_MAX_NODES = 20_000


def is_secret_name(name: str) -> bool:
    folded = "".join(ch for ch in name.lower() if ch.isalnum())
    return any(part in folded for part in _SECRET_NAME_PARTS) and not folded.endswith(
        _NOT_SECRET_ENDINGS
    )


def spellings(value: str | bytes) -> list[str]:
    """The forms in which `value` could appear in a log: as is, JSON-escaped, and for
    bytes their base64 and hex encodings (how keys travel in configuration)."""
    if isinstance(value, bytes):
        forms = [base64.b64encode(value).decode(), base64.urlsafe_b64encode(value).decode()]
        forms.append(value.hex())
        with contextlib.suppress(UnicodeDecodeError):
            forms.append(value.decode("utf-8"))
    else:
        forms = [value]
    found: list[str] = []
    for form in forms:
        if not _may_be_secret(form):
            continue
        found.append(form)
        escaped = orjson.dumps(form).decode()[1:-1]
        if escaped != form:
            found.append(escaped)
    return list(dict.fromkeys(found))


def _may_be_secret(text: str) -> bool:
    if len(text) < MIN_SECRET_LENGTH or "${" in text or _DOTTED_PATH.fullmatch(text):
        return False
    return not (len(text) < _PLAIN_WORDS_MAX_LENGTH and _PLAIN_WORDS.fullmatch(text))


# --- the registry --------------------------------------------------------------------------


class SecretRegistry:
    """Values to look for, each with where it came from (the only thing ever reported)."""

    def __init__(self) -> None:
        self.everywhere: dict[str, str] = {}
        self.this_test: dict[str, str] = {}
        # Test modules outside the `tests` package whose objects are walked too.
        self.test_modules: set[str] = set()

    def add(self, value: str | bytes, origin: str, *, everywhere: bool = False) -> None:
        target = self.everywhere if everywhere else self.this_test
        for form in spellings(value):
            if form not in self.everywhere:
                target.setdefault(form, origin)

    def add_environment(self, environ: Mapping[str, str], origin: str) -> None:
        for name, value in environ.items():
            if is_secret_name(name):
                self.add(value, f"{origin} {name}")

    def harvest(self, value: Any, origin: str, *, everywhere: bool = False) -> None:
        """Register every secret-named string reachable from `value` (see module doc)."""
        # An object that cannot be walked (a property that raises) has nothing to give.
        with contextlib.suppress(Exception):
            for where, found in _Walker(self.test_modules).walk(value, origin):
                self.add(found, where, everywhere=everywhere)

    def hits(self, text: str, *, include_test: bool = True) -> Iterator[str]:
        """The origins of registered values found in `text`."""
        sources = (self.everywhere, self.this_test) if include_test else (self.everywhere,)
        for source in sources:
            for value, origin in source.items():
                if value in text:
                    yield origin


class _Walker:
    def __init__(self, test_modules: set[str]) -> None:
        self._seen: set[int] = set()
        self._budget = _MAX_NODES
        self._test_modules = test_modules

    def walk(self, value: Any, origin: str, name: str = "", depth: int = 0) -> Iterator[Any]:
        if isinstance(value, str | bytes):
            if is_secret_name(name):
                yield f"{origin}.{name}" if name else origin, value
            return
        if depth >= _MAX_DEPTH or self._budget <= 0 or id(value) in self._seen:
            return
        self._seen.add(id(value))
        self._budget -= 1
        for child_name, child in self._children(value, name):
            yield from self.walk(child, origin, child_name, depth + 1)

    def _children(self, value: Any, name: str) -> Iterator[tuple[str, Any]]:
        if isinstance(value, web.Application):
            for item in value.values():
                yield "", item
        elif isinstance(value, TestServer | TestClient):
            yield "", value.app
        elif isinstance(value, dict):
            # Plain dicts only: other mappings (a schema loader, a lazy registry) may
            # compute, or fail, on iteration. A fake's `{token: grant}` index holds its
            # tokens as keys.
            keys_are_tokens = is_secret_name(name) and "token" in name.lower()
            for key, item in value.items():
                if keys_are_tokens and isinstance(key, str):
                    yield name, key
                yield (key if isinstance(key, str) else ""), item
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                yield name, item
        elif isinstance(value, FunctionType):
            cells = value.__closure__ or ()
            for free, cell in zip(value.__code__.co_freevars, cells, strict=True):
                try:
                    yield free, cell.cell_contents
                except ValueError:  # an empty cell
                    continue
        elif self._walked(type(value).__module__):
            yield from _attributes(value)

    def _walked(self, module: str) -> bool:
        return module.startswith(_WALKED_MODULES) or module in self._test_modules


def _attributes(value: Any) -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield item.name, getattr(value, item.name, None)
    elif hasattr(value, "__dict__") and not isinstance(value, type | ModuleType):
        yield from vars(value).items()


def literal_secrets(source: str) -> Iterator[tuple[int, str, str]]:
    """`(line, name, value)` for string literals a test module writes as the value of a
    secret-looking name: assignments, dict entries, keyword arguments, defaults, and
    comparisons with a secret-named subscript."""
    for node in ast.walk(ast.parse(source)):
        for name, value in _named_values(node):
            if (
                isinstance(value, ast.Constant)
                and isinstance(value.value, str)
                and is_secret_name(name)
            ):
                yield value.lineno, name, value.value


def _named_values(node: ast.AST) -> list[tuple[str, ast.expr | None]]:
    """The (name, value expression) pairs a node writes."""
    if isinstance(node, ast.Assign):
        return [(target.id, node.value) for target in node.targets if isinstance(target, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [(node.target.id, node.value)]
    if isinstance(node, ast.Dict):
        return [
            (key.value, value)
            for key, value in zip(node.keys, node.values, strict=True)
            if isinstance(key, ast.Constant) and isinstance(key.value, str)
        ]
    if isinstance(node, ast.keyword) and node.arg is not None:
        return [(node.arg, node.value)]
    if isinstance(node, ast.arguments):
        return _defaults(node)
    if isinstance(node, ast.Compare) and isinstance(node.left, ast.Subscript):
        key = node.left.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return [(key.value, comparator) for comparator in node.comparators]
    return []


def _defaults(node: ast.arguments) -> list[tuple[str, ast.expr | None]]:
    positional = [*node.posonlyargs, *node.args]
    # Defaults belong to the last positional parameters.
    with_default = positional[len(positional) - len(node.defaults) :]
    pairs: list[tuple[str, ast.expr | None]] = [
        (arg.arg, default) for arg, default in zip(with_default, node.defaults, strict=True)
    ]
    pairs += [
        (arg.arg, default) for arg, default in zip(node.kwonlyargs, node.kw_defaults, strict=True)
    ]
    return pairs


# --- capture ---------------------------------------------------------------------------------


@dataclass
class Captured:
    """Log output of one test (or of the session outside tests), until it is scanned."""

    records: list[tuple[str, str]] = field(default_factory=list)  # (logger, rendering)
    files: list[Path] = field(default_factory=list)


class ScanHandler(logging.Handler):
    def __init__(self, scan: LogScan) -> None:
        super().__init__(logging.NOTSET)
        self._scan = scan
        self._formatter = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self._scan.current.records.append((record.name, self.render(record)))

    def render(self, record: logging.LogRecord) -> str:
        try:
            parts = [self._formatter.format(record)]
        except Exception:
            parts = [str(record.msg), repr(record.args)]
        error = record.exc_info[1] if record.exc_info else None
        while error is not None:
            # Production omits exception messages; they must be clean anyway.
            parts.append(f"{type(error).__name__}: {error}")
            error = error.__cause__ or error.__context__
        return "\n".join(parts)


@dataclass(frozen=True)
class Hit:
    test: str
    source: str  # a logger name, or a child process's output file
    origin: str  # where the value was registered

    def describe(self) -> str:
        return f"{self.test}: {self.source} wrote the value registered as {self.origin}"


# --- the plugin ------------------------------------------------------------------------------


class LogScan:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.registry = SecretRegistry()
        self.session_capture = Captured()
        self.current = self.session_capture
        self.hits: list[Hit] = []
        self._handler = ScanHandler(self)
        self._saved_root_level = logging.NOTSET
        self._saved_access_disabled = False
        self._seen_modules: set[str] = set()

    # --- session --------------------------------------------------------------------------

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        root = logging.getLogger()
        self._saved_root_level = root.level
        access = logging.getLogger("aiohttp.access")
        self._saved_access_disabled = access.disabled
        access.disabled = True
        self._attach()

    def _attach(self) -> None:
        root = logging.getLogger()
        if self._handler not in root.handlers:
            root.addHandler(self._handler)
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.harvest_modules()

    def harvest_modules(self) -> None:
        if len(sys.modules) == len(self._seen_modules):
            return  # nothing imported since the last look
        for name, module in list(sys.modules.items()):
            if name in self._seen_modules:
                continue
            self._seen_modules.add(name)
            if self._is_test_module(name, module):
                self.registry.test_modules.add(name)
                self._harvest_module(name, module)

    def _is_test_module(self, name: str, module: ModuleType) -> bool:
        """The `tests` package, and test modules and conftests anywhere under the root."""
        if name.startswith("tests."):
            return True
        path = getattr(module, "__file__", None)
        if path is None:
            return False
        file = Path(path)
        is_test = file.name.startswith("test_") or file.name == "conftest.py"
        return (
            is_test
            and file.is_relative_to(self.config.rootpath)
            and "site-packages" not in file.parts
        )

    def _harvest_module(self, name: str, module: ModuleType) -> None:
        path = getattr(module, "__file__", None)
        if path is not None and path.endswith(".py"):
            try:
                source = Path(path).read_text()
                found = list(literal_secrets(source))
            except (OSError, SyntaxError, ValueError):
                found = []
            for line, variable, value in found:
                self.registry.add(value, f"{name}:{line} {variable}", everywhere=True)
        for variable, value in list(vars(module).items()):
            if not variable.startswith("__") and not isinstance(
                value, type | ModuleType | FunctionType
            ):
                self.registry.harvest(value, f"{name}.{variable}", everywhere=True)
                if isinstance(value, str | bytes) and is_secret_name(variable):
                    self.registry.add(value, f"{name}.{variable}", everywhere=True)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._scan(SESSION, self.session_capture, include_test=False)
        logging.getLogger().removeHandler(self._handler)
        logging.getLogger().setLevel(self._saved_root_level)
        logging.getLogger("aiohttp.access").disabled = self._saved_access_disabled
        worker_output = getattr(self.config, "workeroutput", None)
        if worker_output is not None:
            worker_output[WORKER_OUTPUT_KEY] = [dataclasses.astuple(hit) for hit in self.hits]
        if self.hits and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: collect a worker's hits."""
        output = getattr(node, "workeroutput", {}) or {}
        self.hits.extend(Hit(*hit) for hit in output.get(WORKER_OUTPUT_KEY, []))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.hits:
            return
        terminalreporter.section("log scan: credential values in log output", red=True)
        for hit in self.hits:
            terminalreporter.line(hit.describe(), red=True)
        terminalreporter.line(
            f"{len(self.hits)} hit(s); the values are not shown. Rerun the test and search its"
            " log output for the registered value."
        )

    # --- tests ----------------------------------------------------------------------------

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.current = Captured()
        self.registry.this_test = {}
        self.harvest_modules()  # modules a test imported lazily
        self._attach()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        # Before the fixtures go: their values (and the apps they built) are still there.
        for name, value in getattr(item, "funcargs", {}).items():
            if name != "secret_registry":
                self.registry.harvest(value, f"fixture {name}")

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self._scan(nodeid, self.current, include_test=True)
        self.current = self.session_capture
        self.registry.this_test = {}

    def _scan(self, test: str, captured: Captured, *, include_test: bool) -> None:
        found: dict[tuple[str, str], None] = {}
        for source, text in captured.records:
            for origin in self.registry.hits(text, include_test=include_test):
                found[(source, origin)] = None
        for path in captured.files:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            for origin in self.registry.hits(text, include_test=include_test):
                found[(str(path.name), origin)] = None
        self.hits.extend(Hit(test, source, origin) for source, origin in found)
        captured.records.clear()
        captured.files.clear()

    # --- what processes.py and tests call -------------------------------------------------

    def watch_file(self, path: Path) -> None:
        self.current.files.append(path)


_active: LogScan | None = None


def watch_child(environ: Mapping[str, str] | None, *outputs: Path) -> None:
    """Scan a child process's output files at the end of the current test, and look for
    the secrets of its environment in everything. A no-op outside a scanned session."""
    if _active is None:
        return
    if environ is not None:
        _active.registry.add_environment(environ, "child environment")
    for path in outputs:
        _active.watch_file(path)


def pytest_configure(config: pytest.Config) -> None:
    global _active
    _active = LogScan(config)
    config.pluginmanager.register(_active, "authgate-log-scan")


def pytest_unconfigure(config: pytest.Config) -> None:
    global _active
    if _active is not None:
        config.pluginmanager.unregister(_active)
        _active = None


@pytest.fixture
def secret_registry() -> SecretRegistry:
    """The scan's registry: `secret_registry.add(value, "what it is")` makes the scan look
    for a value this test created that no name gives away."""
    assert _active is not None, "the log scan plugin is not active"
    return _active.registry
