"""What the files under deploy/ say, read with real parsers, and what the code reads.

The deployment tests compare two sides: the Dockerfile, the compose file and the
Kubernetes manifests on one, the settings and the command line of the code on the other.
Nothing here restates what the code reads: the variable names come from calling the real
`from_env` functions, the commands are checked with the real `authgate` parser.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from authgate.cli import _parser
from authgate.settings import ServingSettings
from authgate.workers import MULTIPROC_VARIABLE
from credentials.activity import ActivitySettings
from credentials.config import CoreSettings
from management.settings import ManagementSettings
from proxy.settings import ProxySettings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE_FILE = DEPLOY / "compose.yaml"
KUSTOMIZATION = "kustomization.yaml"
IMAGE = "authgate"
"""The image name every deployment runs, as `docker build -t` names it in the READMEs."""

SERVER_ROLES = ("serve", "proxy", "management")

Document = dict[str, Any]


# --- YAML ------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(path for path in DEPLOY.rglob("*") if path.suffix in (".yaml", ".yml"))


def load_documents(path: Path) -> list[Any]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


def relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


# --- What the code reads -----------------------------------------------------------------


class RecordingEnviron(Mapping[str, str]):
    """An empty environment that remembers every name the code asks it for.

    `get` and `in` are Mapping's own, both built on `__getitem__`, so one method sees
    every kind of lookup."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


Reader = Callable[[Mapping[str, str]], object]

# Which settings each command reads, as authgate/cli.py wires them; every other command
# (env, key, keys) reads the shared core settings only.
_ROLE_READERS: dict[str, tuple[Reader, ...]] = {
    "proxy": (ProxySettings.from_env, ServingSettings.from_env, ActivitySettings.from_env),
    "management": (ManagementSettings.from_env, ServingSettings.from_env),
    "serve": (
        ProxySettings.from_env,
        ManagementSettings.from_env,
        ServingSettings.from_env,
        ActivitySettings.from_env,
    ),
}
_OPERATOR_READERS: tuple[Reader, ...] = (CoreSettings.from_env,)


def variables_read_by(role: str) -> frozenset[str]:
    """Every environment variable the role's settings look up, plus prometheus-client's
    multiprocess directory (read by the library, not by a settings class)."""
    environ = RecordingEnviron()
    for read in _ROLE_READERS.get(role, _OPERATOR_READERS):
        read(environ)
    return frozenset({*environ.asked, MULTIPROC_VARIABLE})


def variables_read_by_any_role() -> frozenset[str]:
    return frozenset().union(*(variables_read_by(role) for role in SERVER_ROLES))


def check_settings(role: str, environ: Mapping[str, str]) -> None:
    """Raises the code's own ConfigError when a value in `environ` is invalid for `role`."""
    for read in _ROLE_READERS.get(role, _OPERATOR_READERS):
        read(environ)


def serving_settings(environ: Mapping[str, str]) -> ServingSettings:
    return ServingSettings.from_env(environ)


# --- The command line --------------------------------------------------------------------


class CommandLineError(AssertionError):
    pass


def parse_command(arguments: Sequence[str]) -> argparse.Namespace:
    """The arguments after `authgate`, parsed by the real CLI parser."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            return _parser().parse_args(list(arguments))
    except SystemExit:
        raise CommandLineError(
            f"`authgate {shlex.join(arguments)}` does not parse: {errors.getvalue().strip()}"
        ) from None


def authgate_arguments(argv: Sequence[str]) -> list[str]:
    """The arguments of an `authgate ...` command line; fails on any other program."""
    if not argv or PurePosixPath(argv[0]).name != "authgate":
        raise CommandLineError(f"not an authgate command: {list(argv)}")
    return list(argv[1:])


# --- The Dockerfile ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array of CMD, ENTRYPOINT or `HEALTHCHECK ... CMD`."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            found = re.search(r"(?:^|\s)CMD\s+(.*)$", text)
            assert found is not None, f"HEALTHCHECK without CMD: {text}"
            text = found.group(1)
        value = json.loads(text)
        assert isinstance(value, list), f"{self.keyword} is not in exec form: {self.arguments}"
        return [str(item) for item in value]


@dataclass(frozen=True, slots=True)
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def environment(self) -> dict[str, str]:
        """Its ENV settings (the `NAME=value ...` form), later ones winning."""
        values: dict[str, str] = {}
        for item in self.all("ENV"):
            for word in shlex.split(item.arguments):
                name, separator, value = word.partition("=")
                assert separator, f"ENV {item.arguments!r}: use the NAME=value form"
                values[name] = value
        return values


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        if whole:
            keyword, _, arguments = whole.partition(" ")
            instructions.append(Instruction(keyword.upper(), " ".join(arguments.split())))
    return instructions


def dockerfile_stages(text: str) -> list[Stage]:
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in dockerfile_instructions(text):
        if instruction.keyword == "ARG" and not stages:
            name, _, default = instruction.arguments.partition("=")
            arguments[name] = default
        elif instruction.keyword == "FROM":
            words = instruction.arguments.split()
            base = re.sub(
                r"\$\{(\w+)\}|\$(\w+)",
                lambda found: arguments[found.group(1) or found.group(2)],
                words[0],
            )
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, alias))
        elif stages:
            stages[-1].instructions.append(instruction)
    return stages


@functools.cache
def final_stage() -> Stage:
    return dockerfile_stages(DOCKERFILE.read_text())[-1]


def image_environment() -> dict[str, str]:
    """The authgate variables the image sets, which every container starts with."""
    return {
        name: value
        for name, value in final_stage().environment().items()
        if name.startswith("AUTHGATE_")
    }


def image_command() -> list[str]:
    return final_stage().last("CMD").exec_form()


def image_entrypoint() -> list[str]:
    return final_stage().last("ENTRYPOINT").exec_form()


# --- .dockerignore -------------------------------------------------------------------------


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's matching: `**` spans directories, `*` and `?` stay within one."""
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts))


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, pattern) per line, in order: the last rule that matches decides."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        excludes = not entry.startswith("!")
        cleaned = entry.lstrip("!").strip().strip("/")
        rules.append((excludes, pattern_regex(cleaned)))
    return rules


def is_ignored(path: str, rules: Sequence[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether `path` (relative to the build context) stays out of the context. A rule
    naming a directory covers everything below it."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: length + 1]) for length in range(len(parts))]
    ignored = False
    for excludes, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            ignored = excludes
    return ignored


# --- Kubernetes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Manifest:
    path: Path
    document: Document

    @property
    def kind(self) -> str:
        return str(self.document["kind"])

    @property
    def name(self) -> str:
        return str(self.document["metadata"]["name"])

    def __str__(self) -> str:
        return f"{relative(self.path)}: {self.kind}/{self.name}"


def kustomization_dirs() -> list[Path]:
    return sorted(path.parent for path in K8S.rglob(KUSTOMIZATION))


def manifests() -> list[Manifest]:
    """Every Kubernetes document under deploy/k8s, kustomizations aside."""
    return list(_read_manifests())


@functools.cache
def _read_manifests() -> tuple[Manifest, ...]:
    # Read once per session: the tests only look at the documents, never change them.
    found: list[Manifest] = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name != KUSTOMIZATION:
            found.extend(Manifest(path, document) for document in load_documents(path))
    return tuple(found)


def of_kind(kind: str) -> list[Manifest]:
    return [manifest for manifest in manifests() if manifest.kind == kind]


def pod_template(manifest: Manifest) -> Document:
    template: Document = manifest.document["spec"]["template"]
    return template


@dataclass(frozen=True, slots=True)
class Container:
    """One container of a pod template, with what the image adds to it."""

    owner: Manifest
    spec: Document
    init: bool

    def __str__(self) -> str:
        return f"{self.owner} container {self.spec['name']}"

    @property
    def pod(self) -> Document:
        pod: Document = pod_template(self.owner)["spec"]
        return pod

    @property
    def runs_authgate(self) -> bool:
        image = str(self.spec["image"]).split("@")[0].rsplit("/", 1)[-1]
        return image.split(":")[0] == IMAGE

    @property
    def argv(self) -> list[str]:
        """The process the container runs: `command` replaces the image's entrypoint,
        `args` its CMD (Kubernetes' rules)."""
        command = self.spec.get("command") or image_entrypoint()
        arguments = self.spec.get("args")
        if arguments is None and "command" not in self.spec:
            arguments = image_command()
        return [*command, *(arguments or [])]

    @property
    def role(self) -> str:
        command: str = parse_command(authgate_arguments(self.argv)).command
        return command

    @property
    def env_entries(self) -> list[Document]:
        entries: list[Document] = self.spec.get("env", [])
        return entries

    @property
    def literal_env(self) -> dict[str, str]:
        entries = self.env_entries
        return {entry["name"]: str(entry["value"]) for entry in entries if "value" in entry}

    @property
    def effective_env(self) -> dict[str, str]:
        """The literal authgate environment the process sees: the image's, then the pod's."""
        return {**image_environment(), **self.literal_env}

    @property
    def secret_refs(self) -> list[tuple[str, str]]:
        references = []
        for entry in self.env_entries:
            reference = entry.get("valueFrom", {}).get("secretKeyRef")
            if reference is not None:
                references.append((str(reference["name"]), str(reference["key"])))
        return references

    @property
    def probes(self) -> dict[str, Document]:
        kinds = ("startupProbe", "livenessProbe", "readinessProbe")
        return {kind: self.spec[kind] for kind in kinds if kind in self.spec}

    def container_port(self, port: int | str) -> int:
        """A probe's or Service's port: a number, or the name of one of the ports."""
        if isinstance(port, int):
            return port
        for declared in self.spec.get("ports", []):
            if declared.get("name") == port:
                return int(declared["containerPort"])
        raise AssertionError(f"{self} has no port named {port!r}")


def containers(manifest: Manifest) -> list[Container]:
    spec = pod_template(manifest)["spec"]
    return [Container(manifest, item, True) for item in spec.get("initContainers", [])] + [
        Container(manifest, item, False) for item in spec["containers"]
    ]


def workloads() -> list[Manifest]:
    return [manifest for manifest in manifests() if manifest.kind in ("Deployment", "StatefulSet")]


def authgate_containers() -> list[Container]:
    return [item for workload in workloads() for item in containers(workload) if item.runs_authgate]


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def selected_workloads(selector: Mapping[str, str]) -> list[Manifest]:
    return [
        workload
        for workload in workloads()
        if selects(selector, pod_template(workload)["metadata"].get("labels", {}))
    ]


# --- Compose ---------------------------------------------------------------------------------


@functools.cache
def compose() -> Document:
    document: Document = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def compose_environment(service: Document) -> dict[str, str]:
    """A service's `environment`, in either of compose's two forms."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (str(item).partition("=") for item in environment)
        return {name: value for name, _, value in pairs}
    return {str(name): "" if value is None else str(value) for name, value in environment.items()}


def is_interpolated(value: str) -> bool:
    """Whether compose fills the value in from the caller's environment."""
    return "${" in value


class MissingVariable(LookupError):
    """A `${NAME:?message}` whose variable is unset: compose refuses to start."""


_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, values: Mapping[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}` and
    `${NAME?error}`, filled from `values`."""

    def replace(found: re.Match[str]) -> str:
        name, operator, argument = found.group(1), found.group(2) or "", found.group(3)
        value = values.get(name)
        if value is not None and not (operator.startswith(":") and value == ""):
            return value
        if operator.endswith("-"):
            return argument
        if operator.endswith("?"):
            raise MissingVariable(f"{name}: {argument}")
        return ""

    return _VARIABLE.sub(replace, text)


def compose_argv(service: Document) -> list[str]:
    command = service.get("command")
    if isinstance(command, str):
        command = shlex.split(command)
    entrypoint = service.get("entrypoint") or image_entrypoint()
    return [*entrypoint, *(command if command is not None else image_command())]


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def compose_duration(text: str) -> float:
    """Seconds of a compose duration such as `1m30s` or `40s`."""
    matches = list(_DURATION.finditer(text))
    assert matches, text
    assert "".join(item.group(0) for item in matches) == text, text
    return sum(float(item.group(1)) * _UNIT_SECONDS[item.group(2)] for item in matches)


# --- READMEs -----------------------------------------------------------------------------------


def shell_lines(markdown: str) -> list[str]:
    """The lines of the fenced `sh`/`bash`/`shell` blocks, stripped, comments removed."""
    lines: list[str] = []
    inside = False
    for line in markdown.splitlines():
        fence = line.strip()
        if fence.startswith("```"):
            inside = not inside and fence[3:].strip() in ("sh", "bash", "shell", "console")
            continue
        if inside:
            command = line.split(" #", 1)[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def tool_commands(markdown: str, tools: Sequence[str] = ("docker", "kubectl")) -> list[str]:
    return [line for line in shell_lines(markdown) if line.split()[0] in tools]
