"""Real processes a test can break: a private PostgreSQL cluster, an MCP server, a TCP proxy.

Everything here is synchronous and thread-safe enough to call from a test; the blocking calls
have `a...` twins (`astart`, `astop`) that run in a worker thread so an async test keeps its
event loop (and any in-process app on it) running while a server goes down or comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import backend.models  # noqa: F401  (registers the tables)
from backend.config import Settings

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
PG_OS_USER = "postgres"
"""initdb and postgres refuse to run as root; as root we run them as this OS user."""
PG_SUPERUSER = "postgres"

StopMode = Literal["smart", "fast", "immediate"]
CutMode = Literal["refuse", "reset", "hang"]


class SpawnMcpServer(Protocol):
    """The `spawn_mcp_server` fixture: a started (or, with start=False, ready) MCP process."""

    def __call__(
        self, database_url: str, *, env: Mapping[str, str] | None = None, start: bool = True
    ) -> McpServerProcess: ...


class MakeTcpProxy(Protocol):
    """The `tcp_proxy` fixture: a started proxy in front of target_host:target_port."""

    def __call__(self, target_host: str, target_port: int) -> TcpProxy: ...


class FaultSetupError(RuntimeError):
    """A fault fixture's process could not be brought up (or down); the message says why."""


def tail(path: Path, lines: int = 30) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(content[-lines:])


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_answers(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def host_port(url: str) -> tuple[str, int]:
    """The host and port a URL points at (postgresql+asyncpg://, http://)."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"{url} names no host:port")
    return parts.hostname, parts.port


def replace_host_port(url: str, host: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}:{port}"))


def migrate_in_thread(database_url: str, timeout: float = 60.0) -> None:
    """The project's migrations, on a thread of their own (they call asyncio.run)."""
    from backend.cli import migrate

    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(Settings(_env_file=None, database_url=database_url))
        except BaseException as exc:  # re-raised on the caller's thread
            errors.append(exc)

    worker = threading.Thread(target=run, name="migrate", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise FaultSetupError(f"migrating {database_url} took more than {timeout}s")
    if errors:
        raise errors[0]


# --- PostgreSQL ------------------------------------------------------------------------------


def _version_key(bindir: Path) -> int:
    name = bindir.parent.name
    return int(name) if name.isdigit() else -1


def find_postgres_bindir() -> Path | None:
    """$PG_BINDIR, else the newest /usr/lib/postgresql/N/bin, else the pg_ctl on PATH."""
    candidates: list[Path] = []
    if configured := os.environ.get("PG_BINDIR"):
        candidates.append(Path(configured))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    if on_path := shutil.which("pg_ctl"):
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def postgres_unavailable_reason(bindir: Path | None) -> str | None:
    """Why a private cluster cannot run here, or None when it can."""
    if bindir is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found; set PG_BINDIR"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam(PG_OS_USER)
        except KeyError:
            return f"running as root but there is no {PG_OS_USER!r} OS user to run postgres as"
        if shutil.which("runuser") is None and shutil.which("su") is None:
            return "running as root but neither runuser nor su is available"
    return None


class PostgresCluster:
    """A throwaway cluster (initdb'd data directory) on loopback that a test can stop and start.

    Trust authentication as `postgres`, TCP on 127.0.0.1 only (no Unix socket), durability
    off for speed. `url` names the application database (`database`).
    """

    def __init__(
        self,
        bindir: Path,
        base_dir: Path,
        port: int,
        *,
        database: str = "todo",
        max_connections: int = 40,
    ) -> None:
        self.bindir = bindir
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.log_path = base_dir / "postgres.log"
        self.host = LOOPBACK
        self.port = port
        self.database = database
        self.max_connections = max_connections

    # URLs

    def url_for(self, database: str) -> str:
        return f"postgresql+asyncpg://{PG_SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        """The migrated application database, for `Database(url)` / `make_settings`."""
        return self.url_for(self.database)

    @property
    def admin_url(self) -> str:
        return self.url_for("postgres")

    # Processes

    def _command(self, *args: str) -> list[str]:
        if os.geteuid() != 0:
            return list(args)
        if runuser := shutil.which("runuser"):
            return [runuser, "-u", PG_OS_USER, "--", *args]
        return ["su", PG_OS_USER, "-s", "/bin/sh", "-c", shlex.join(args)]

    def _run(
        self, *args: str, timeout: float, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                self._command(*args),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                cwd=self.base_dir,
            )
        except subprocess.TimeoutExpired as exc:
            raise FaultSetupError(
                f"{shlex.join(args)} took more than {timeout}s\n--- server log ---\n"
                f"{tail(self.log_path)}"
            ) from exc
        if check and done.returncode != 0:
            raise FaultSetupError(
                f"{shlex.join(args)} exited {done.returncode}: {done.stderr.strip()}"
                f" {done.stdout.strip()}\n--- server log ---\n{tail(self.log_path)}"
            )
        return done

    def _tool(self, name: str) -> str:
        return str(self.bindir / name)

    def init(self) -> None:
        """initdb a fresh data directory (owned by the postgres OS user when we are root)."""
        self.base_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base_dir, PG_OS_USER, PG_OS_USER)
        self.base_dir.chmod(0o700)
        self._run(
            self._tool("initdb"),
            "--pgdata",
            str(self.data_dir),
            "--auth=trust",
            f"--username={PG_SUPERUSER}",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
            timeout=60,
        )
        settings = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "max_connections": str(self.max_connections),
            "shared_buffers": "'32MB'",
            # Durability against an OS crash is not under test: fsync off. synchronous_commit
            # stays on, so what a test saw committed survives stop("immediate").
            "fsync": "off",
            "full_page_writes": "off",
            "autovacuum": "off",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] '",
        }
        # Appended as root or not, the file stays the postgres user's.
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/faults private cluster\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    @property
    def is_running(self) -> bool:
        """True while a postmaster runs on the data directory (`pg_ctl status`)."""
        if not self.data_dir.exists():
            return False
        status = self._run(
            self._tool("pg_ctl"), "status", "-D", str(self.data_dir), timeout=10, check=False
        )
        return status.returncode == 0

    def start(self, timeout: float = 15.0) -> None:
        """Start (after an immediate stop: crash recovery) and wait until it accepts connections."""
        if self.is_running:
            return
        self._run(
            self._tool("pg_ctl"),
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(max(1, int(timeout))),
            "-s",
            timeout=timeout + 5,
        )
        deadline = time.monotonic() + timeout
        while not port_accepts(self.host, self.port):
            if time.monotonic() > deadline:
                raise FaultSetupError(
                    f"PostgreSQL started but {self.host}:{self.port} refuses connections\n"
                    f"{tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self, mode: StopMode = "fast", timeout: float = 15.0) -> None:
        """Shut down: "fast" ends sessions cleanly, "immediate" is a crash (recovery on start)."""
        if not self.is_running:
            return
        self._run(
            self._tool("pg_ctl"),
            "stop",
            "-D",
            str(self.data_dir),
            "-m",
            mode,
            "-w",
            "-t",
            str(max(1, int(timeout))),
            "-s",
            timeout=timeout + 5,
        )

    async def astart(self, timeout_seconds: float = 15.0) -> None:
        """start() on a worker thread: the test's event loop keeps running meanwhile."""
        await asyncio.to_thread(self.start, timeout_seconds)

    async def astop(self, mode: StopMode = "fast", timeout_seconds: float = 15.0) -> None:
        """stop() on a worker thread: the test's event loop keeps running meanwhile."""
        await asyncio.to_thread(self.stop, mode, timeout_seconds)

    def create_database(self) -> None:
        self._run(
            self._tool("createdb"),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            PG_SUPERUSER,
            self.database,
            timeout=30,
        )

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def destroy(self, keep_log_at: Path | None = None) -> None:
        """Stop the server whatever its state and delete the data directory. Idempotent."""
        try:
            self.stop("immediate", timeout=10)
        except FaultSetupError:
            pid = self._postmaster_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)
        if keep_log_at is not None and self.log_path.exists():
            with contextlib.suppress(OSError):
                shutil.copyfile(self.log_path, keep_log_at)
        shutil.rmtree(self.base_dir, ignore_errors=True)


async def reset_postgres_database(url: str) -> None:
    """Empty every table (ids restart) after ending any other session left on the database."""
    tables = ", ".join(f'"{table.name}"' for table in SQLModel.metadata.sorted_tables)
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SET LOCAL lock_timeout = '5s'"))
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


# --- the MCP server as a subprocess ------------------------------------------------------------


class McpServerProcess:
    """`python -m mcp_server --transport http` on a fixed loopback port; killable, restartable.

    The port stays the same across kill()/start(), so `url` and the settings an API app was
    built with remain valid.
    """

    def __init__(
        self,
        *,
        database_url: str,
        data_dir: Path,
        port: int,
        auth_secret: str,
        mcp_token_secret: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.data_dir = data_dir
        self.host = LOOPBACK
        self.port = port
        self.auth_secret = auth_secret
        self.mcp_token_secret = mcp_token_secret
        self.extra_env = dict(env or {})
        self.log_path = data_dir / "mcp-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def healthz_url(self) -> str:
        return f"{self.base_url}/healthz"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def environment(self) -> dict[str, str]:
        """The child's environment: ours minus every setting the app reads, plus its own."""
        fields = {name.lower() for name in Settings.model_fields}
        env = {key: value for key, value in os.environ.items() if key.lower() not in fields}
        python_path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env.update(
            {
                "APP_ENV": "test",
                "DATA_DIR": str(self.data_dir),
                "DATABASE_URL": self.database_url,
                "AUTH_SECRET": self.auth_secret,
                "MCP_TOKEN_SECRET": self.mcp_token_secret,
                "MCP_URL": self.url,
                "MCP_RESOURCE_URL": self.url,
                "LOG_LEVEL": "WARNING",
                "PYTHONPATH": os.pathsep.join(python_path),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def settings_overrides(self, *, mcp_url: str | None = None) -> dict[str, Any]:
        """What an API app's Settings need to call this server (as `chat_settings` sets).

        `mcp_url` routes the calls elsewhere (e.g. `proxy.url_for(server.url)`) while tokens
        stay minted for this server's resource URL.
        """
        return {
            "mcp_token_secret": self.mcp_token_secret,
            "mcp_url": mcp_url or self.url,
            "mcp_resource_url": self.url,
        }

    def start(self, timeout: float = 20.0) -> None:
        """Spawn the server and wait until /healthz answers."""
        if self.is_running:
            return
        if http_answers(self.healthz_url):
            raise FaultSetupError(f"{self.base_url} is already served by another process")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "mcp_server", "--transport", "http"]
        command += ["--host", self.host, "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts + 1}: {shlex.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                env=self.environment(),
                cwd=self.data_dir,  # no stray .env is read
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest is ours to forward, not the child's
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise FaultSetupError(
                    f"the MCP server exited during start-up (code {code})\n{tail(self.log_path)}"
                )
            if http_answers(self.healthz_url, timeout=0.5):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise FaultSetupError(
                    f"the MCP server did not answer {self.healthz_url} within {timeout}s\n"
                    f"{tail(self.log_path)}"
                )
            time.sleep(0.1)

    async def astart(self, timeout_seconds: float = 20.0) -> None:
        """start() on a worker thread: the test's event loop keeps running meanwhile."""
        await asyncio.to_thread(self.start, timeout_seconds)

    def kill(self) -> None:
        """SIGKILL: no shutdown, in-flight requests die with their connections."""
        self._signal(signal.SIGKILL)

    def terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM (uvicorn's graceful shutdown), SIGKILL if it takes longer than `timeout`."""
        self._signal(signal.SIGTERM, timeout)

    def _signal(self, signum: signal.Signals, timeout: float = 5.0) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


# --- a TCP proxy that can be cut -----------------------------------------------------------------


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a RST (SO_LINGER 0), as a dead peer or a dropped connection looks."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    task: asyncio.Task[None] | None
    upstream: asyncio.StreamWriter | None = None
    cut: bool = False

    def abort(self) -> None:
        self.cut = True
        _abort(self.client)
        if self.upstream is not None:
            _abort(self.upstream)

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None and not writer.is_closing():
                writer.close()


class TcpProxy:
    """A loopback TCP forwarder to `target_host:target_port`, run on its own thread and loop.

    `cut(mode)` breaks it until `restore()`:
    - "refuse": current connections get a RST, the listener closes (new ones: ECONNREFUSED);
    - "reset": current connections get a RST, new ones are accepted and reset at once;
    - "hang": nothing moves any more in either direction and new connections are accepted but
      never connected through, a partition: clients see timeouts, not errors. `restore()`
      lets the held bytes through.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.mode: CutMode | None = None
        self.accepted = 0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._flowing: asyncio.Event | None = None

    # Driving the proxy's loop from the test's thread.

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the proxy is not started")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self) -> TcpProxy:
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"tcp-proxy->{self.target_port}", daemon=True
        )
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None

    def cut(self, mode: CutMode = "refuse") -> None:
        self._call(self._cut(mode))

    def restore(self) -> None:
        self._call(self._restore())

    @property
    def is_cut(self) -> bool:
        return self.mode is not None

    @property
    def active_connections(self) -> int:
        return len(self._links)

    def url_for(self, url: str) -> str:
        """`url` with its host:port replaced by the proxy's (user, path, query kept)."""
        return replace_host_port(url, self.host, self.port)

    # On the proxy's loop.

    async def _listen(self) -> None:
        if self._flowing is None:
            self._flowing = asyncio.Event()
            self._flowing.set()
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _end_links(self) -> None:
        links = list(self._links)
        for link in links:
            link.abort()
            if link.task is not None:
                link.task.cancel()
        tasks = [link.task for link in links if link.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _cut(self, mode: CutMode) -> None:
        assert self._flowing is not None
        self.mode = mode
        if mode == "hang":
            self._flowing.clear()
            return
        self._flowing.set()
        await self._end_links()
        if mode == "refuse" and self._server is not None:
            self._server.close()
            self._server = None

    async def _restore(self) -> None:
        assert self._flowing is not None
        self.mode = None
        self._flowing.set()
        if self._server is None:
            await self._listen()

    async def _shutdown(self) -> None:
        if self._flowing is not None:
            self._flowing.set()
        await self._end_links()
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode in ("reset", "refuse"):
            _abort(writer)
            return
        assert self._flowing is not None
        link = _Link(client=writer, task=asyncio.current_task())
        self._links.add(link)
        try:
            await self._flowing.wait()
            try:
                upstream_reader, upstream = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, self.target_port),
                    self.connect_timeout,
                )
            except (OSError, TimeoutError):
                link.abort()  # the target is down: the client sees its connection reset
                return
            link.upstream = upstream
            await asyncio.gather(
                self._pump(reader, upstream, link), self._pump(upstream_reader, writer, link)
            )
        except asyncio.CancelledError:
            link.abort()  # cut() or close() ended this connection
        finally:
            self._links.discard(link)
            link.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # bytes read just before a "hang" are held too
                if link.cut:
                    return
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            link.abort()  # one side broke: so does the other, as with a real connection
