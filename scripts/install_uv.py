"""Install uv from its wheel on PyPI with nothing but the standard library.

The last route of `scripts/uv`, for a Python without pip (Debian and Ubuntu leave pip out of
the base system, and their Python refuses `pip install` anyway: PEP 668). The wheel is the
one PyPI lists for this platform; its sha256 is checked before the binary is extracted.

    python3 scripts/install_uv.py DEST_DIR        # writes DEST_DIR/uv

UV_BOOTSTRAP_INDEX names another index serving PyPI's JSON API (default https://pypi.org/pypi);
UV_BOOTSTRAP_VERSION pins a uv version (default: the newest).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

DEFAULT_INDEX = "https://pypi.org/pypi"
TIMEOUT_SECONDS = 60
# PEP 600 names the old manylinux tags by the glibc they need.
LEGACY_MANYLINUX = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "i386": "i686"}


def _version(text: str) -> tuple[int, int]:
    numbers = [int(part) for part in re.findall(r"\d+", text)] + [0, 0]
    return numbers[0], numbers[1]


def platform_matches(tag: str, system: str, machine: str, libc: tuple[str, str]) -> bool:
    """Whether a wheel platform tag runs here (system: `sys.platform`; libc for Linux)."""
    arch = ARCH_ALIASES.get(machine.lower(), machine.lower())
    if system == "darwin":
        found = re.fullmatch(r"macosx_(\d+)_(\d+)_(\w+)", tag)
        mac_arch = "arm64" if arch == "aarch64" else arch
        return found is not None and found[3] in {mac_arch, "universal2"}
    if not system.startswith("linux"):
        return False
    if tag == f"linux_{arch}":
        return True
    glibc = libc[0] == "glibc"
    for legacy, needed in LEGACY_MANYLINUX.items():
        if tag == f"{legacy}_{arch}":
            return glibc and needed <= _version(libc[1])
    found = re.fullmatch(r"(many|musl)linux_(\d+)_(\d+)_(\w+)", tag)
    if not found or found[4] != arch:
        return False
    if found[1] == "musl":
        return not glibc
    return glibc and (int(found[2]), int(found[3])) <= _version(libc[1])


def pick_wheel(
    files: list[dict[str, Any]], system: str, machine: str, libc: tuple[str, str]
) -> dict[str, Any]:
    for file in files:
        name: str = file["filename"]
        if not name.endswith(".whl"):
            continue
        tags = name[: -len(".whl")].split("-")[-1].split(".")
        if any(platform_matches(tag, system, machine, libc) for tag in tags):
            return file
    raise SystemExit(f"install_uv: no uv wheel for {system} {machine} {libc[0]} {libc[1]}".rstrip())


def _fetch_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
        document: dict[str, Any] = json.load(response)
    return document


def _download(url: str, into: Path, sha256: str) -> None:
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, into.open("wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256.lower():
        raise SystemExit(
            f"install_uv: sha256 mismatch for {url}: expected {sha256}, got {digest.hexdigest()}"
        )


def _extract_binary(wheel: Path, dest_dir: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if re.fullmatch(r"[^/]+\.data/scripts/uv", m)]
        if not members:
            raise SystemExit(f"install_uv: {wheel.name} holds no uv binary")
        dest_dir.mkdir(parents=True, exist_ok=True)
        partial = dest_dir / f".uv.partial-{os.getpid()}"
        with archive.open(members[0]) as source, partial.open("wb") as out:
            shutil.copyfileobj(source, out)
    partial.chmod(0o755)
    target = dest_dir / "uv"
    # A rename, so a concurrent `make` never runs half a binary.
    partial.replace(target)
    return target


def install(dest_dir: Path, index: str, version: str | None) -> Path:
    project = (
        f"{index.rstrip('/')}/uv/{version}/json" if version else f"{index.rstrip('/')}/uv/json"
    )
    release = _fetch_json(project)
    libc = platform.libc_ver() if sys.platform.startswith("linux") else ("", "")
    wheel = pick_wheel(release["urls"], sys.platform, platform.machine(), libc)
    with tempfile.TemporaryDirectory(prefix="uv-wheel-") as tmp:
        path = Path(tmp) / wheel["filename"]
        # Mirrors may answer with URLs relative to the JSON document.
        url = urllib.parse.urljoin(project, wheel["url"])
        _download(url, path, wheel["digests"]["sha256"])
        target = _extract_binary(path, dest_dir)
    sys.stderr.write(f"install_uv: {wheel['filename']} (sha256 checked) -> {target}\n")
    return target


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python3 scripts/install_uv.py DEST_DIR")
    index = os.environ.get("UV_BOOTSTRAP_INDEX") or DEFAULT_INDEX
    install(Path(argv[0]), index, os.environ.get("UV_BOOTSTRAP_VERSION") or None)


if __name__ == "__main__":
    main(sys.argv[1:])
