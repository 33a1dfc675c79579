"""gunicorn's settings for the web service, loaded with ``--config python:config.gunicorn`` (docker-compose.yml, the
Dockerfile, the benchmarks' and tests' sites)."""

from __future__ import annotations

import os

# numpy's BLAS in a web worker multiplies only small matrices (a query's projection, its detail matching,
# search/details.py); with a thread per core its threads spin for a while after each product and take the cores
# from the network: the detail order cost 5 ms a search on 2 cores that way, 1.8 ms on one thread
# (docs/performance.md). Set before anything imports numpy; an operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from search import lone_search  # noqa: E402

# gunicorn's highest: a request line that nginx passes (up to its 8 KB buffers) reaches Django, whose errors under
# /api/ are JSON, instead of gunicorn's own HTML 414 at 4 KB.
limit_request_line = 8190


def on_starting(server) -> None:
    """Tell the embedder how many workers share the cores (EMBEDDING_POOL_PROCESSES, inherited by each worker), as
    config/celery_app.py does for a prefork Celery worker: with EMBEDDING_THREADS=0 each worker then runs the network
    on its share of the cores. On 2 cores, 3 workers of one thread each served 3-13 % more photo searches at 8
    clients than 3 workers of every core each, at the same latency for one client (docs/performance.md). A search
    that runs alone on the host still gets every core (search/lone_search.py)."""
    os.environ["EMBEDDING_POOL_PROCESSES"] = str(server.cfg.workers)
    lone_search.share_among_workers(slots=server.cfg.workers * server.cfg.threads)


def child_exit(server, worker) -> None:
    lone_search.worker_exited(worker.pid)
