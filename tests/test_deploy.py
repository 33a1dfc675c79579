"""The deployment files: docker-compose.yml, the Dockerfile and its entrypoint.

No Docker engine runs here, so the compose file is checked by `docker compose config` where a compose
CLI exists and always by its parsed structure; the Dockerfile's entrypoint script is cut out and run for real.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
APP_SERVICES = ("web", "worker", "beat")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


def _command(service: dict) -> str:
    command = service["command"]
    return " ".join(command) if isinstance(command, list) else command


def _healthcheck(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


# --- docker compose itself, where the plugin is installed ---


def _compose_command() -> list[str] | None:
    """`docker compose` (the plugin) or the standalone `docker-compose`, whichever is installed."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


COMPOSE = _compose_command()
# What compose refuses to start without, with values it accepts.
REQUIRED = {"SECRET_KEY": "x" * 60, "POSTGRES_PASSWORD": "0123abcd" * 3, "ALLOWED_HOSTS": "shop.example.com"}


@pytest.mark.skipif(COMPOSE is None, reason="neither docker compose nor docker-compose is installed")
@pytest.mark.parametrize("secret", ["SECRET_KEY", "POSTGRES_PASSWORD", "ALLOWED_HOSTS"])
def test_docker_compose_accepts_the_file_and_requires_each_secret(tmp_path, secret):
    """No insecure default: without either secret, or the site's host names, compose refuses to start, naming it."""
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED}
    secrets = dict(REQUIRED)
    cmd = [*COMPOSE, "-f", str(COMPOSE_FILE), "config", "-q"]
    ok = subprocess.run(cmd, cwd=tmp_path, env={**env, **secrets}, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    without = {name: value for name, value in secrets.items() if name != secret}
    missing = subprocess.run(cmd, cwd=tmp_path, env={**env, **without}, capture_output=True, text=True)
    assert missing.returncode != 0
    assert secret in missing.stderr


# --- the compose file's structure ---


def test_compose_has_the_database_broker_and_app_services(compose):
    services = compose["services"]
    assert set(services) >= {"db", "redis", *APP_SERVICES}
    assert services["db"]["image"].startswith("pgvector/pgvector:")
    assert services["redis"]["image"].startswith("redis:7")
    redis_command = " ".join(services["redis"]["command"])  # memory capped; only entries with a lifetime give way
    assert "--maxmemory ${REDIS_MAXMEMORY:-512mb}" in redis_command and "--maxmemory-policy volatile-lru" in redis_command


def test_app_services_share_one_image_and_differ_in_command(compose):
    services = compose["services"]
    web = services["web"]
    for name in APP_SERVICES:
        service = services[name]
        assert service["build"] == web["build"], name
        assert service["image"] == web["image"], name
        assert service["environment"] == web["environment"], name
        assert service["volumes"] == web["volumes"], name
    assert _command(web).startswith("gunicorn config.wsgi")
    assert "--config python:config.gunicorn" in _command(web)  # the workers share the cores for the model
    assert "--workers ${WEB_CONCURRENCY" in _command(web)
    assert _command(services["worker"]).startswith("celery -A config worker")
    assert _command(services["beat"]).startswith("celery -A config beat")
    for name in ("worker", "beat"):  # Celery sets the root logger's level from its option, not from LOG_LEVEL
        assert "--loglevel=${LOG_LEVEL:-INFO}" in _command(services[name]), name
    # Beat schedules periodic tasks, so exactly one process may run it however many workers scale out.
    runs_beat = [name for name in APP_SERVICES if re.search(r"(^| )(--)?beat( |$)", _command(services[name]))]
    assert runs_beat == ["beat"]


def test_a_stopped_worker_puts_its_unfinished_tasks_back_in_the_queue_within_its_grace_period(compose):
    """A warm shutdown waited for every task; killed at the grace period, the ones cut short stayed unacknowledged
    until the broker's visibility timeout, two hours."""
    env, worker = compose["services"]["worker"]["environment"], compose["services"]["worker"]
    assert env["REMAP_SIGTERM"] == "SIGQUIT"  # a stop is a cold shutdown: soft first, then the rest requeued
    soft = float(re.fullmatch(r"\$\{CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT:-([0-9.]+)\}",
                              env["CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT"])[1])
    assert 0 < soft < int(worker["stop_grace_period"].rstrip("s"))


def test_app_environment_is_production_and_secret_key_is_required(compose):
    env = compose["services"]["web"]["environment"]
    assert env["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
    for name in ("SECRET_KEY", "ALLOWED_HOSTS"):  # required: a default host would answer 400 to every real request
        assert re.fullmatch(rf"\$\{{{name}:\?.+\}}", env[name]), name
    for name in ("ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL", "MEDIA_ROOT"):
        assert env[name], name
    assert env["DATABASE_URL"].startswith("postgres://") and "@db:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379/")


def test_every_service_has_a_healthcheck_and_web_probes_healthz(compose):
    services = compose["services"]
    assert "pg_isready" in _healthcheck(services["db"])
    assert "redis-cli ping" in _healthcheck(services["redis"])
    web_check = _healthcheck(services["web"])
    assert "/healthz" in web_check
    assert "curl" not in web_check and "wget" not in web_check  # neither exists in the slim image
    # A worker that hangs or lost its broker went unnoticed: it must answer a ping by its own node name.
    assert "celery -A config inspect ping -d celery@$$HOSTNAME" in _healthcheck(services["worker"])


def test_app_services_wait_for_healthy_dependencies(compose):
    services = compose["services"]
    for name in ("web", "worker"):
        depends = services[name]["depends_on"]
        for dependency in ("db", "redis"):
            assert depends[dependency]["condition"] == "service_healthy", (name, dependency)
    # Workers start once web is healthy, i.e. after the web entrypoint has migrated.
    assert services["worker"]["depends_on"]["web"]["condition"] == "service_healthy"


def test_media_is_a_named_volume_mounted_at_media_root(compose):
    assert "media" in compose["volumes"]
    media_root = compose["services"]["web"]["environment"]["MEDIA_ROOT"]
    for name in ("web", "worker"):
        assert f"media:{media_root}" in compose["services"][name]["volumes"], name


def test_web_healthcheck_passes_on_a_healthy_app_and_fails_on_a_disallowed_host(live_server):
    """Run the healthcheck command itself against a live server (the test settings allow localhost)."""
    test = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["web"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code = test[3].replace("http://127.0.0.1:8000", live_server.url)
    assert code != test[3]

    def probe(allowed_hosts):
        env = {**os.environ, "ALLOWED_HOSTS": allowed_hosts}
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)

    healthy = probe("localhost,shop.example.com")
    assert healthy.returncode == 0, healthy.stderr
    assert probe("*").returncode == 0  # a wildcard is not a Host header: falls back to localhost
    disallowed = probe("shop.example.com")
    assert disallowed.returncode != 0 and "400" in disallowed.stderr


@pytest.mark.worker
def test_worker_healthcheck_passes_on_a_running_worker_and_fails_for_one_that_does_not_answer(celery_worker_process):
    """Run the worker's healthcheck command itself, as the container's shell would, against a real worker."""
    import socket

    from django.conf import settings

    test = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = test[1].replace("$$", "$")  # compose's escape: the shell in the container sees $HOSTNAME

    def probe(hostname):
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HOSTNAME": hostname,
               "DJANGO_SETTINGS_MODULE": "config.settings.test", "REDIS_URL": settings.REDIS_URL}
        return subprocess.run(["sh", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    alive = probe(socket.gethostname())  # a worker's default node name is celery@ its host name
    assert alive.returncode == 0, alive.stderr
    silent = probe("another-host")  # no worker of that name answers: as a dead or disconnected one
    assert silent.returncode != 0


# --- the Dockerfile ---


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and heredoc bodies skipped."""
    result, lines = [], iter(dockerfile.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        keyword, _, args = line.strip().partition(" ")
        result.append((keyword.upper(), args))
        heredoc = re.search(r"<<'?(\w+)'?", args)
        if heredoc:
            for body in lines:
                if body == heredoc.group(1):
                    break
    return result


def test_dockerfile_installs_requirements_and_collects_static(dockerfile):
    instructions = _instructions(dockerfile)
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any("pip install -r requirements.txt" in run for run in runs)
    assert any("manage.py collectstatic --noinput" in run for run in runs)
    # No registry or index host is baked into the image definition: operators pass one as a build arg.
    assert not re.search(r"https?://(?!127\.0\.0\.1)", dockerfile)


def test_the_images_collectstatic_step_passes_the_production_settings(dockerfile, tmp_path):
    """The build runs it under the production settings with a throwaway key: one they refuse stops the build."""
    run = next(args for keyword, args in _instructions(dockerfile) if keyword == "RUN" and "collectstatic" in args)
    given = dict(re.findall(r"(\w+)=(\S+)", run.split("python manage.py")[0]))
    assert set(given) >= {"SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"}
    env = {**{k: v for k, v in os.environ.items() if k not in given}, **given,
           "DJANGO_SETTINGS_MODULE": "config.settings.production", "LOOKALIKE_STATE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_images_default_command_is_the_web_services(dockerfile, compose):
    import json

    default = " ".join(json.loads(next(args for keyword, args in _instructions(dockerfile) if keyword == "CMD")))
    web = _command(compose["services"]["web"])
    assert default.startswith("gunicorn config.wsgi:application --config python:config.gunicorn")
    assert web.startswith("gunicorn config.wsgi:application --config python:config.gunicorn")


def test_dockerfile_runs_as_an_unprivileged_user(dockerfile):
    users = [args for keyword, args in _instructions(dockerfile) if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    keywords = [keyword for keyword, _ in _instructions(dockerfile)]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


# --- the entrypoint, cut out of the Dockerfile and run ---


@pytest.fixture(scope="module")
def entrypoint(tmp_path_factory, dockerfile) -> Path:
    pattern = r"^COPY --chmod=0755 <<'EOF' /usr/local/bin/lookalike-entrypoint\n(.*?)^EOF$"
    body = re.search(pattern, dockerfile, re.M | re.S)
    assert body, "the entrypoint heredoc is missing from the Dockerfile"
    path = tmp_path_factory.mktemp("entrypoint") / "lookalike-entrypoint"
    path.write_text(body.group(1))
    path.chmod(0o755)
    return path


def _entrypoint_env(**overrides) -> dict:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": "entrypoint-test-" + "k" * 50,
        "ALLOWED_HOSTS": "localhost",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        **overrides,
    }


def _test_database_url() -> str:
    """The session's DATABASE_URL pointed at the test database (host, port or socket options kept)."""
    from django.conf import settings
    from django.db import connection

    return urlunsplit(urlsplit(settings.DATABASE_URL)._replace(path="/" + connection.settings_dict["NAME"]))


# Nothing listens on port 1: any attempt to reach this database fails at once.
UNREACHABLE_DB = "postgres://nobody@127.0.0.1:1/none"


def _gunicorn_started(entrypoint, **env) -> subprocess.CompletedProcess:
    """The web container's start (its entrypoint before `gunicorn --version`) with ``env`` over the defaults."""
    return subprocess.run([str(entrypoint), "gunicorn", "--version"], cwd=ROOT, env=_entrypoint_env(**env),
                          capture_output=True, text=True, timeout=120)


def test_entrypoint_runs_worker_commands_without_touching_the_database(entrypoint):
    result = subprocess.run(
        [str(entrypoint), "python", "-c", "print('worker ran')"],
        cwd=ROOT, env=_entrypoint_env(DATABASE_URL=UNREACHABLE_DB), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "worker ran"


@pytest.mark.parametrize("flag", [None, "True", " 1"])  # "True" skipped them: only "true" was read as true
def test_entrypoint_migrates_before_starting_gunicorn(entrypoint, db, flag):
    result = _gunicorn_started(entrypoint, DATABASE_URL=_test_database_url(),
                               **({} if flag is None else {"MIGRATE_ON_START": flag}))
    assert result.returncode == 0, result.stderr
    assert "Running migrations:" in result.stdout
    assert "gunicorn" in result.stdout + result.stderr


def test_entrypoint_stops_before_gunicorn_on_a_setting_the_checks_refuse(entrypoint, db):
    """call_command runs no system checks unless told: a mistyped EMBEDDING_MODEL migrated, started, answered healthy,
    and failed every photo."""
    result = _gunicorn_started(entrypoint, DATABASE_URL=_test_database_url(), EMBEDDING_MODEL="efficientnet-lite9")
    assert result.returncode != 0
    assert "search.E001" in result.stderr and "efficientnet-lite9" in result.stderr
    assert "gunicorn (version" not in result.stdout + result.stderr
    # A release step migrates: the settings are checked all the same.
    skipped = _gunicorn_started(entrypoint, DATABASE_URL=UNREACHABLE_DB, MIGRATE_ON_START="false",
                                EMBEDDING_MODEL="efficientnet-lite9")
    assert skipped.returncode != 0 and "search.E001" in skipped.stderr


def test_entrypoint_stops_when_migrations_fail_and_can_leave_them_to_a_release_step(entrypoint, db):
    failing = _gunicorn_started(entrypoint, DATABASE_URL=UNREACHABLE_DB)
    assert failing.returncode != 0
    assert "OperationalError" in failing.stderr  # it did try the database, and stopped there
    assert "gunicorn (version" not in failing.stdout + failing.stderr
    for flag in ("false", "False", "0"):
        # The release step has migrated this one.
        skipped = _gunicorn_started(entrypoint, DATABASE_URL=_test_database_url(), MIGRATE_ON_START=flag)
        assert skipped.returncode == 0, skipped.stderr
        assert "Running migrations:" not in skipped.stdout and "gunicorn (version" in skipped.stdout + skipped.stderr
    # Not migrated (the server's maintenance database): a site on the schema before answered healthy, and failed
    # wherever the schema had changed.
    unmigrated = urlunsplit(urlsplit(_test_database_url())._replace(path="/postgres"))
    refused = _gunicorn_started(entrypoint, DATABASE_URL=unmigrated, MIGRATE_ON_START="false")
    assert refused.returncode != 0 and "the database lacks migrations this release has" in refused.stderr
    assert "gunicorn (version" not in refused.stdout + refused.stderr
    mistyped = _gunicorn_started(entrypoint, DATABASE_URL=UNREACHABLE_DB, MIGRATE_ON_START="flase")
    assert mistyped.returncode != 0 and "MIGRATE_ON_START='flase': set it to true or false" in mistyped.stderr
    assert "gunicorn (version" not in mistyped.stdout + mistyped.stderr


def test_proxy_serves_media_read_only_and_forwards_the_rest():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    proxy = compose["services"]["proxy"]
    assert "media:/data/media:ro" in proxy["volumes"]
    assert proxy["depends_on"]["web"]["condition"] == "service_healthy"
    assert "ports" not in compose["services"]["web"]  # only the proxy is published, on the loopback by default
    assert compose["services"]["proxy"]["ports"] == ["${WEB_BIND:-127.0.0.1}:${WEB_PORT:-8000}:8080"]
    conf = (ROOT / "config" / "nginx" / "lookalike.conf").read_text()
    assert "location /media/" in conf and "alias /data/media/;" in conf
    assert "proxy_pass http://lookalike_web;" in conf and "server web:8000;" in conf
    assert "X-Forwarded-Proto" in conf


def test_the_replica_profile_adds_a_streaming_standby_of_db(compose):
    services = compose["services"]
    replica, db = services["db-replica"], services["db"]
    assert replica["profiles"] == ["replica"]  # started only when asked: `--profile replica`
    assert replica["image"] == db["image"]
    assert replica["depends_on"]["db"]["condition"] == "service_healthy"
    script = " ".join(replica["command"])
    assert "pg_basebackup -h db" in script and " -R " in script  # a physical copy that configures itself as standby
    assert "exec docker-entrypoint.sh postgres" in script
    assert "pg_isready" in _healthcheck(replica)
    assert replica["volumes"] == ["pgdata-replica:/var/lib/postgresql/data"] and "pgdata-replica" in compose["volumes"]
    # The primary lets standbys connect for replication, and keeps WAL for one that falls behind.
    init = next(volume for volume in db["volumes"] if "docker-entrypoint-initdb.d" in volume)
    host_path = ROOT / init.split(":")[0]
    assert "host replication all all scram-sha-256" in host_path.read_text()
    assert any("wal_keep_size=" in part for part in db["command"])
    # The app reads replicas only when told: the variable passes through, empty by default.
    assert compose["services"]["web"]["environment"]["DATABASE_REPLICA_URLS"] == "${DATABASE_REPLICA_URLS:-}"


@pytest.mark.skipif(COMPOSE is None, reason="neither docker compose nor docker-compose is installed")
def test_docker_compose_reads_the_replica_profile(tmp_path):
    """The installed compose tool knows ``profiles`` (compose >= 1.28): it keeps db-replica out of a plain ``up``."""
    env = {**os.environ, **REQUIRED}
    result = subprocess.run([*COMPOSE, "-f", str(COMPOSE_FILE), "--profile", "replica", "config"], cwd=tmp_path,
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert rendered["services"]["db-replica"]["profiles"] == ["replica"]
    assert "profiles" not in rendered["services"]["db"]

