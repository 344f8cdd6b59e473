"""Run the benchmarks: `python -m bench` runs each with small sizes and prints its figures;
`python -m bench NAME [OPTIONS]` runs one (options after the small defaults, so they win;
`python -m bench NAME --help` lists them)."""

from __future__ import annotations

import argparse
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# Enough samples for a median and a p95 in well under a minute each.
SMALL: dict[str, list[str]] = {
    "chat_turn": ["--turns", "40", "--users", "4", "--rounds", "4"],
    "history_scaling": ["--turns", "40", "--rounds", "4"],
    "soak": ["--turns", "500", "--warmup", "100", "--sample-every", "100"],
    "mcp_call": ["--iterations", "40", "--budget", "3"],
    "events": ["--requests", "100", "--events", "1000", "--tasks", "50"],
    "reminders": "--reminders 1000 --users 100 --conversations 10 --spread 10".split(),
    "rest_list": ["--requests", "1000", "--rounds", "2"],
}


def benchmarks() -> dict[str, str]:
    """Each benchmark module in this package, with the first line of its docstring."""
    found: dict[str, str] = {}
    for module in pkgutil.iter_modules([str(PACKAGE_DIR)]):
        if module.name.startswith("_"):
            continue
        source = (PACKAGE_DIR / f"{module.name}.py").read_text(encoding="utf-8")
        # Parsed, not imported: listing them must not load the whole application.
        doc = ast.get_docstring(ast.parse(source)) or ""
        summary = doc.splitlines()[0] if doc else ""
        found[module.name] = summary.split(": `")[0].rstrip(".")
    return found


def command(name: str, options: list[str]) -> list[str]:
    return [sys.executable, "-m", f"bench.{name}", *SMALL.get(name, []), *options]


def _parser(available: dict[str, str]) -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<16} {summary}" for name, summary in available.items())
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        epilog=f"benchmarks:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", nargs="?", choices=sorted(available), help="run only this one")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="passed to that benchmark")
    return parser


def main(argv: list[str] | None = None) -> int:
    available = benchmarks()
    args = _parser(available).parse_args(argv)
    names = [args.name] if args.name else sorted(available)
    failed = 0
    for name in names:
        print(f"== {name}: {available[name]}", flush=True)
        # Each in its own process: a benchmark owns its servers, event loop and exit code.
        failed |= subprocess.run(command(name, args.options), check=False).returncode != 0
        print(flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
