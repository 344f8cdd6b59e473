"""`logs tail` follows until Ctrl-C or SIGTERM, then stops quietly whatever it was doing."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.cli.support import CLI_TIMEOUT_SECONDS, cli_command, cli_env, run_cli


def test_tail_stops_cleanly_even_when_the_signal_lands_mid_query(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    assert run_cli(env, tmp_path, "migrate").code == 0
    # Polling every millisecond keeps a query in flight most of the time, so the signals
    # below land during database work as often as during the wait.
    stops = [
        (signal.SIGINT, 0.013),
        (signal.SIGINT, 0.057),
        (signal.SIGTERM, 0.0),
        (signal.SIGTERM, 0.031),
    ]
    for signum, delay in stops:
        process = subprocess.Popen(
            cli_command("logs", "tail", "--interval", "0.001"),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        header = process.stdout.readline()
        assert "status" in header, header
        time.sleep(delay)
        process.send_signal(signum)
        out, err = process.communicate(timeout=CLI_TIMEOUT_SECONDS)
        assert process.returncode == 0, (signum, delay, out, err)
        assert err == "", (signum, delay, err)
