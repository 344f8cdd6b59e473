"""The two README commands' plumbing: the Makefile, the uv bootstrap, `python -m bench`.

The whole walk-through (a copy of the tree, `make run` on an externally managed Python, the
README's commands) needs the network and a minute, so it is `.ci/front_door.py`, run by CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import SMALL, benchmarks, command
from tests.conftest import load_script

REPO_ROOT = Path(__file__).resolve().parents[1]
FAKE_UV = '#!/bin/sh\necho "uv 9.9.9 (fake)"\n'

# Some of uv 0.13.9's files on PyPI: what the installer chooses from.
UV_WHEELS = [
    "uv-0.13.9-py3-none-linux_armv6l.whl",
    "uv-0.13.9-py3-none-macosx_10_12_x86_64.whl",
    "uv-0.13.9-py3-none-macosx_11_0_arm64.whl",
    "uv-0.13.9-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64.whl",
    "uv-0.13.9-py3-none-manylinux_2_17_i686.manylinux2014_i686.whl",
    "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "uv-0.13.9-py3-none-manylinux_2_28_aarch64.whl",
    "uv-0.13.9-py3-none-musllinux_1_1_x86_64.whl",
    "uv-0.13.9-py3-none-win_amd64.whl",
    "uv-0.13.9.tar.gz",
]


install_uv = load_script(REPO_ROOT / "scripts" / "install_uv.py")


def _make(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in {"PORT", "MCP_PORT", "PYTHON"}}
    return subprocess.run(
        ["make", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def _path_without_uv() -> str:
    dirs = [d for d in ("/usr/local/bin", "/usr/bin", "/bin") if not Path(d, "uv").exists()]
    return os.pathsep.join(dirs)


def _python_without_pip(tmp_path: Path) -> Path:
    """A Python with neither pip nor uv, as Debian's base system has."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "py")], check=True
    )
    return tmp_path / "py" / "bin" / "python"


def _fake_index(tmp_path: Path, sha256: str | None = None) -> Path:
    """A PyPI JSON API on disk offering one uv wheel for this machine."""
    if sys.platform == "darwin":
        tag = "macosx_11_0_arm64" if platform.machine() == "arm64" else "macosx_10_12_x86_64"
    else:
        tag = f"linux_{platform.machine()}"
    wheel = tmp_path / "wheels" / f"uv-9.9.9-py3-none-{tag}.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("uv-9.9.9.data/scripts/uv", FAKE_UV)
        archive.writestr("uv-9.9.9.dist-info/METADATA", "Name: uv\nVersion: 9.9.9\n")
    digest = sha256 or hashlib.sha256(wheel.read_bytes()).hexdigest()
    release = {
        "urls": [{"filename": wheel.name, "url": wheel.as_uri(), "digests": {"sha256": digest}}]
    }
    index = tmp_path / "index"
    (index / "uv").mkdir(parents=True)
    (index / "uv" / "json").write_text(json.dumps(release))
    return index


def _bootstrap(tmp_path: Path, index: Path, python: Path) -> subprocess.CompletedProcess[str]:
    """`scripts/uv --version` in a checkout, with no uv on PATH and a Python without pip."""
    checkout = tmp_path / "checkout"
    if not checkout.exists():
        shutil.copytree(REPO_ROOT / "scripts", checkout / "scripts")
    env = {
        "HOME": str(tmp_path),
        "PATH": _path_without_uv(),
        "PYTHON": str(python),
        "UV_BOOTSTRAP_INDEX": index.as_uri(),
    }
    return subprocess.run(
        [str(checkout / "scripts" / "uv"), "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_run_passes_the_ports_to_serve() -> None:
    result = _make("-n", "run", "PORT=8010", "MCP_PORT=8011")

    assert result.returncode == 0, result.stderr
    serve = [line for line in result.stdout.splitlines() if "todo-assistant serve" in line]
    assert len(serve) == 1
    assert serve[0].split("todo-assistant serve", 1)[1].split() == [
        "--port",
        "8010",
        "--mcp-port",
        "8011",
    ]


def test_make_run_leaves_the_default_ports_to_the_cli() -> None:
    result = _make("-n", "run")

    serve = [line for line in result.stdout.splitlines() if "todo-assistant serve" in line]
    assert serve[0].split("todo-assistant serve", 1)[1].split() == []


def test_every_make_target_runs_the_bootstrapped_uv() -> None:
    result = _make("-n", "test", "run", "migrate", "bench")

    commands = [line for line in result.stdout.splitlines() if " uv" in line or "uv " in line]
    assert commands
    for line in commands:
        assert line.removeprefix("exec ").startswith('env PYTHON="python3" scripts/uv '), line


def test_make_refuses_a_python_older_than_3_11_with_the_way_out(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copytree(REPO_ROOT / "scripts", tmp_path / "scripts")
    old = tmp_path / "python3.9"
    old.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "Python 3.9.2" && exit 0\nexit 1\n')
    old.chmod(0o755)

    result = _make("run", f"PYTHON={old}", cwd=tmp_path)

    assert result.returncode != 0
    assert "needs Python 3.11 or newer" in result.stderr
    assert "Python 3.9.2" in result.stderr
    assert "make run PYTHON=python3.11" in result.stderr
    assert not (tmp_path / ".venv").exists()
    assert not (tmp_path / ".tools").exists()


def test_uv_bootstrap_without_pip_installs_the_checked_wheel_once(tmp_path: Path) -> None:
    index, python = _fake_index(tmp_path), _python_without_pip(tmp_path)

    first = _bootstrap(tmp_path, index, python)

    assert first.returncode == 0, first.stderr
    assert first.stdout == "uv 9.9.9 (fake)\n"
    assert "downloading it into .tools/bin from PyPI" in first.stderr
    assert "sha256 checked" in first.stderr
    tools = tmp_path / "checkout" / ".tools"
    assert (tools / ".gitignore").read_text() == "*\n"
    assert os.access(tools / "bin" / "uv", os.X_OK)

    shutil.rmtree(index)
    second = _bootstrap(tmp_path, index, python)

    assert second.returncode == 0, second.stderr
    assert second.stdout == "uv 9.9.9 (fake)\n"
    assert second.stderr == ""


def test_uv_bootstrap_refuses_a_wheel_whose_sha256_differs(tmp_path: Path) -> None:
    index = _fake_index(tmp_path, sha256="0" * 64)

    result = _bootstrap(tmp_path, index, _python_without_pip(tmp_path))

    assert result.returncode != 0
    assert "sha256 mismatch" in result.stderr
    assert not (tmp_path / "checkout" / ".tools" / "bin" / "uv").exists()
    assert list((tmp_path / "checkout" / ".tools" / "bin").iterdir()) == []


@pytest.mark.parametrize(
    ("system", "machine", "libc", "expected"),
    [
        ("linux", "x86_64", ("glibc", "2.36"), "manylinux_2_17_x86_64.manylinux2014_x86_64"),
        ("linux", "x86_64", ("", ""), "musllinux_1_1_x86_64"),
        ("linux", "aarch64", ("glibc", "2.17"), "manylinux_2_17_aarch64.manylinux2014"),
        ("linux", "arm64", ("glibc", "2.31"), "manylinux_2_17_aarch64.manylinux2014"),
        ("linux", "armv6l", ("glibc", "2.31"), "linux_armv6l"),
        ("darwin", "arm64", ("", ""), "macosx_11_0_arm64"),
        ("darwin", "x86_64", ("", ""), "macosx_10_12_x86_64"),
    ],
)
def test_uv_installer_picks_the_wheel_for_the_platform(
    system: str, machine: str, libc: tuple[str, str], expected: str
) -> None:
    files: list[dict[str, Any]] = [{"filename": name} for name in UV_WHEELS]

    chosen = install_uv.pick_wheel(files, system, machine, libc)

    assert expected in chosen["filename"]


@pytest.mark.parametrize(
    ("system", "machine", "libc"),
    [
        ("linux", "x86_64", ("glibc", "2.4")),
        ("linux", "riscv64", ("glibc", "2.36")),
        ("win32", "AMD64", ("", "")),
    ],
)
def test_uv_installer_refuses_a_platform_without_a_wheel(
    system: str, machine: str, libc: tuple[str, str]
) -> None:
    files: list[dict[str, Any]] = [{"filename": name} for name in UV_WHEELS]

    with pytest.raises(SystemExit, match="no uv wheel"):
        install_uv.pick_wheel(files, system, machine, libc)


def test_bench_lists_every_benchmark() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "chat_turn        What a chat turn costs" in result.stdout
    assert "mcp_call         What one MCP tool call costs" in result.stdout
    assert "events           Task events" in result.stdout
    expected = {"chat_turn", "history_scaling", "soak", "rest_list", "mcp_call", "events"}
    assert set(benchmarks()) == {*expected, "reminders"} == set(SMALL)


def test_bench_options_come_after_the_small_defaults_so_they_win() -> None:
    argv = command("chat_turn", ["--turns", "50"])

    assert argv[:3] == [sys.executable, "-m", "bench.chat_turn"]
    assert argv[3:] == [*SMALL["chat_turn"], "--turns", "50"]
