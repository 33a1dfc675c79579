"""A photo search that runs alone on its host runs the network on every core; one that has company keeps its share.

The table of running searches is shared across real forked processes, as the gunicorn master shares it with its
workers (config/gunicorn.py).
"""

import multiprocessing
import os
import signal
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from search import lone_search
from search.embeddings import EfficientNetLite0, active_embedder

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def shared_table(monkeypatch):
    """A fresh table for the test, dropped afterwards (the module global is restored)."""
    monkeypatch.setattr(lone_search, "_running", None)
    lone_search.share_among_workers(slots=3)


def _search_in_another_worker(started, finish) -> None:
    with lone_search.searching():
        started.set()
        finish.wait(30)


def _worker_searching():
    started, finish = FORK.Event(), FORK.Event()
    worker = FORK.Process(target=_search_in_another_worker, args=(started, finish))
    worker.start()
    assert started.wait(30)
    return worker, finish


def test_outside_gunicorn_a_search_keeps_its_threads(monkeypatch):
    monkeypatch.setattr(lone_search, "_running", None)
    with lone_search.searching() as alone:
        assert not alone


def test_a_host_that_cannot_share_the_table_still_serves_every_search_on_its_share(monkeypatch, caplog):
    def no_shared_memory(*args, **kwargs):
        raise OSError(38, "Function not implemented")  # what sem_open gives where /dev/shm is missing

    monkeypatch.setattr(lone_search, "_running", None)
    monkeypatch.setattr(multiprocessing, "Array", no_shared_memory)
    lone_search.share_among_workers(slots=3)
    assert "cannot share the table of running searches" in caplog.text
    with lone_search.searching() as alone:
        assert not alone


def test_a_search_is_alone_only_while_no_other_worker_is_searching(shared_table):
    with lone_search.searching() as alone:
        assert alone
    worker, finish = _worker_searching()
    with lone_search.searching() as alone:
        assert not alone
    finish.set()
    worker.join(30)
    with lone_search.searching() as alone:
        assert alone


def test_a_worker_that_dies_mid_search_frees_its_slot_when_the_master_hears_of_it(shared_table):
    worker, _finish = _worker_searching()
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(30)
    with lone_search.searching() as alone:
        assert not alone  # the dead worker's slot is still taken
    lone_search.worker_exited(worker.pid)
    with lone_search.searching() as alone:
        assert alone


def test_a_search_that_finds_no_free_slot_is_not_alone(monkeypatch):
    monkeypatch.setattr(lone_search, "_running", None)
    lone_search.share_among_workers(slots=1)
    worker, finish = _worker_searching()
    with lone_search.searching() as alone:
        assert not alone
    finish.set()
    worker.join(30)


def test_the_gunicorn_master_shares_the_table_with_a_slot_per_worker_thread(monkeypatch):
    from gunicorn.app.wsgiapp import WSGIApplication
    from gunicorn.config import Config

    monkeypatch.setattr(lone_search, "_running", None)
    monkeypatch.delenv("EMBEDDING_POOL_PROCESSES", raising=False)  # restored afterwards, whatever the hook sets
    site = WSGIApplication.__new__(WSGIApplication)  # the settings gunicorn reads for `--config python:config.gunicorn`
    site.cfg = Config()
    site.load_config_from_module_name_or_filename("python:config.gunicorn")
    site.cfg.set("workers", 3)
    site.cfg.set("threads", 2)
    site.cfg.on_starting(SimpleNamespace(cfg=site.cfg))  # what the master runs before it forks the workers
    assert len(lone_search._running) == 6
    worker, _finish = _worker_searching()
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(30)
    site.cfg.child_exit(SimpleNamespace(cfg=site.cfg), SimpleNamespace(pid=worker.pid))
    with lone_search.searching() as alone:
        assert alone


@pytest.mark.model
def test_the_network_on_every_core_gives_the_same_vectors(test_images):
    embedder = EfficientNetLite0(threads=1, cache_dir=active_embedder().cache_dir)  # the site's cached graph
    photos = [embedder.load_image(path) for path in sorted(test_images.glob("*.jpg"))[:4]]
    photos.append(Image.new("RGB", (40, 90), (200, 30, 30)))
    wide = embedder.network_on_every_core()
    assert wide is not embedder.network and wide is embedder.network_on_every_core()  # loaded once
    assert np.array_equal(embedder.embed_images(photos, every_core=True), embedder.embed_images(photos))


@pytest.mark.model
def test_an_embedder_already_on_every_core_has_no_second_network():
    embedder = EfficientNetLite0(threads=0, cache_dir=active_embedder().cache_dir)
    assert embedder.network_on_every_core() is embedder.network


@pytest.mark.model
def test_a_shoppers_photo_is_embedded_on_every_core_only_when_no_other_worker_is_searching(
    shared_table, monkeypatch, test_images
):
    from search.query import query_image_read, query_vector

    embedder = active_embedder()
    monkeypatch.setattr(embedder, "threads", 1)  # as in a gunicorn worker sharing two cores with two others
    monkeypatch.setattr(embedder, "_network_on_every_core", None)
    with open(sorted(test_images.glob("*.jpg"))[0], "rb") as file:
        image = query_image_read(file)
    worker, finish = _worker_searching()
    busy = query_vector(image=image, model=embedder.id)
    assert embedder._network_on_every_core is None  # another worker was searching: the worker's own share
    finish.set()
    worker.join(30)
    alone = query_vector(image=image, model=embedder.id)
    assert embedder._network_on_every_core is not None
    assert np.array_equal(alone, busy)


@pytest.mark.model
def test_an_operator_can_keep_every_search_on_its_workers_share(shared_table, monkeypatch, settings, test_images):
    from search.query import query_image_read, query_vector

    settings.SEARCH_EVERY_CORE_WHEN_ALONE = False
    embedder = active_embedder()
    monkeypatch.setattr(embedder, "threads", 1)
    monkeypatch.setattr(embedder, "_network_on_every_core", None)
    with open(sorted(test_images.glob("*.jpg"))[0], "rb") as file:
        query_vector(image=query_image_read(file), model=embedder.id)
    assert embedder._network_on_every_core is None
