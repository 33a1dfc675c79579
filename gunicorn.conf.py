"""gunicorn's settings file: gunicorn reads ./gunicorn.conf.py by itself (the Dockerfile, docker-compose.yml and
bench/http.py all start it from the repository root); options on the command line still win."""

from __future__ import annotations

import os


def model_threads(*, cores: int, workers: int) -> int:
    """onnxruntime threads per web worker: the cores shared out, at least one. With a thread pool per worker sized
    to every core, N workers running the model at once run N x cores threads on the cores and each request waits
    for the others (docs/performance.md)."""
    return max(1, cores // max(1, workers))


def on_starting(server):
    # Runs in the master before it forks the workers, which load Django (and read EMBEDDING_THREADS) after the fork;
    # with --preload the app would be loaded before this hook, so set EMBEDDING_THREADS yourself there.
    if "EMBEDDING_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0))
        os.environ["EMBEDDING_THREADS"] = str(model_threads(cores=cores, workers=server.cfg.workers))
        server.log.info("EMBEDDING_THREADS=%s (%d cores, %d workers)", os.environ["EMBEDDING_THREADS"], cores,
                        server.cfg.workers)
