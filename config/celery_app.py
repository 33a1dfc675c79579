import os

from celery import Celery
from celery.signals import worker_init

from config import dotenv

dotenv.read()  # first: .env may name the settings module too
# Whether the settings module is this development default, named neither by the environment nor by .env. The
# package imports this module before any other of its own, the WSGI app's too, which takes the production
# default instead (config/wsgi.py).
DEVELOPMENT_SETTINGS = "config.settings.local"
SETTINGS_DEFAULTED = "DJANGO_SETTINGS_MODULE" not in os.environ
os.environ.setdefault("DJANGO_SETTINGS_MODULE", DEVELOPMENT_SETTINGS)

app = Celery("lookalike")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _pool_processes_announce(sender, **kwargs):
    """Tell the embedder how many processes share the cores (EMBEDDING_POOL_PROCESSES, inherited by each pool
    process): with EMBEDDING_THREADS=0 each then runs the network on its share of the cores, not on all of them."""
    pool = getattr(sender, "pool_cls", "")  # "prefork", or the class the command line hands over
    prefork = "prefork" in f"{getattr(pool, '__module__', '')} {pool}"
    concurrency = sender.concurrency if isinstance(sender.concurrency, int) else os.cpu_count()  # "auto": a core each
    os.environ["EMBEDDING_POOL_PROCESSES"] = str(concurrency if prefork else 1)
