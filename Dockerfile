# syntax=docker/dockerfile:1
# One image for every Lookalike process: docker-compose.yml runs it as web (gunicorn), worker and beat
# (Celery), which differ only in their command. Production settings: every secret comes from the
# environment at run time; nothing secret is baked in. See docs/deployment.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    LOOKALIKE_STATE_DIR=/app/var \
    MEDIA_ROOT=/data/media \
    WEB_CONCURRENCY=3

WORKDIR /app

# requirements.txt pins torch==2.13.0; from the default index that is the CUDA build (GBs of libraries
# a CPU-only server never uses). Operators pass the PyTorch CPU wheel index as a build argument:
#   docker build --build-arg PIP_EXTRA_INDEX_URL=<PyTorch CPU wheel index> .
# (PIP_INDEX_URL likewise points pip at a mirror.) Empty arguments are unset so pip ignores them.
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
COPY requirements.txt .
RUN [ -n "$PIP_INDEX_URL" ] || unset PIP_INDEX_URL; \
    [ -n "$PIP_EXTRA_INDEX_URL" ] || unset PIP_EXTRA_INDEX_URL; \
    pip install -r requirements.txt

COPY . .

# Static files are collected into the image and served by WhiteNoise. Production settings insist on
# these variables (and base settings would otherwise start embedded servers), so dummy values are
# given to this one command only; collectstatic connects to neither service.
RUN SECRET_KEY=collectstatic-only-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz \
    ALLOWED_HOSTS=build DATABASE_URL=postgres://build@127.0.0.1:1/build \
    REDIS_URL=redis://127.0.0.1:1/0 python manage.py collectstatic --noinput

# Migrations run in the web container only (the command starts with gunicorn), one container at a time:
# a PostgreSQL advisory lock held by the migrating session serialises replicas started together.
# MIGRATE_ON_START=false turns it off (e.g. when a release job migrates instead); the system checks run either way,
# and a database that lacks this release's migrations stops the start.
COPY --chmod=0755 <<'EOF' /usr/local/bin/lookalike-entrypoint
#!/bin/sh
set -e
if [ "$1" = gunicorn ]; then
  python - <<'PY'
import django

django.setup()
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from config.settings.base import env_flag

# Read as the settings read a flag; anything else stops here: "False" taken for not "true" skipped the migrations,
# and an unmigrated site answered healthy.
try:
    migrate = env_flag("MIGRATE_ON_START", default=True)
except Exception as refused:
    raise SystemExit(str(refused))
if migrate:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(hashtext('lookalike-migrate'))")
    call_command("migrate", interactive=False, skip_checks=False)  # call_command skips the system checks otherwise
else:
    call_command("check")  # a release step migrates: the settings are checked here all the same
    # ... and must have: a site started on the schema before it answered healthy, and failed wherever it changed.
    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        raise SystemExit("MIGRATE_ON_START=false, and the database lacks migrations this release has: run "
                         "`python manage.py migrate` (the release step) first")
PY
fi
exec "$@"
EOF

# An unprivileged user; it owns only what it writes: uploads (a volume in compose) and its state dir
# (model cache, beat schedule).
RUN useradd --system --user-group --uid 1000 --home-dir /app/var --shell /usr/sbin/nologin app \
 && mkdir -p /data/media /app/var \
 && chown app:app /data/media /app/var
USER app

EXPOSE 8000
ENTRYPOINT ["lookalike-entrypoint"]
# gunicorn reads its worker count from WEB_CONCURRENCY.
CMD ["gunicorn", "config.wsgi:application", "--config", "python:config.gunicorn", "--bind", "0.0.0.0:8000", \
     "--access-logfile", "-", "--timeout", "60"]
