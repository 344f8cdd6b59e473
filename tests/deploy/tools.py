"""The command-line tools the deploy checks run, rendered output cached per process.

In CI (`CI` set) a missing tool fails the test with the package to install; elsewhere the
test is skipped with the same words, so a laptop without them still runs the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type hints

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "prod")
TIMEOUT_SECONDS = 60


def missing(what: str, install: str) -> NoReturn:
    message = f"{what} is not installed ({install})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI must install it (.ci/run)")
    pytest.skip(message)


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        argv,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(argv)}` failed ({done.returncode}):\n{done.stderr.strip()}")
    return done.stdout


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        missing("kubectl", "apt-get install kubernetes-client")
    return found


@cache
def _kustomize(overlay: str) -> str:
    # Warnings about the older kustomization fields go to stderr; the output is the same.
    return run([kubectl(), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)])


def render(overlay: str) -> list[dict[str, Any]]:
    """Every object of an overlay, as `kubectl kustomize` renders it (a fresh copy)."""
    documents = yaml.safe_load_all(_kustomize(overlay))
    return [document for document in documents if document]


def compose_command() -> list[str]:
    """Debian's docker-compose, or Docker's compose plugin where that is what is there."""
    if found := shutil.which("docker-compose"):
        return [found]
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=TIMEOUT_SECONDS
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    missing("docker-compose", "apt-get install --no-install-recommends docker-compose")


@cache
def _compose_config(profiles: tuple[str, ...], variables: tuple[tuple[str, str], ...]) -> str:
    # Only what the file interpolates: no variable of the machine leaks into the result.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    env.update(variables)
    flags = [part for profile in profiles for part in ("--profile", profile)]
    return run([*compose_command(), "--file", "docker-compose.yml", *flags, "config"], env=env)


def compose_config(*profiles: str, **variables: str) -> dict[str, Any]:
    """`docker-compose config` with these profiles and variables, parsed."""
    # A placeholder for the one variable the file requires; never a real secret.
    variables.setdefault("MCP_TOKEN_SECRET", "placeholder-" + "x" * 32)
    text = _compose_config(tuple(profiles), tuple(sorted(variables.items())))
    config = yaml.safe_load(text)
    assert isinstance(config, dict)
    return config


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))
