"""The optional .env file (config/dotenv.py): read before anything decides a setting from the environment."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
GIVEN_HERE = ("DEBUG", "SECRET_KEY", "LOOKALIKE_STATE_DIR", "MEDIA_ROOT", "DJANGO_SETTINGS_MODULE",
              "LOOKALIKE_ENV_FILE")


@pytest.fixture
def env_file(tmp_path):
    """A .env of the test's own (LOOKALIKE_ENV_FILE), never the checkout's."""
    return tmp_path / ".env"


def _settings_env(env_file, **variables) -> dict:
    env = {name: value for name, value in os.environ.items() if name not in GIVEN_HERE}
    # The session's servers: the settings then start no embedded ones in a new state directory.
    env.update(DJANGO_SETTINGS_MODULE="config.settings.local", DATABASE_URL=settings.DATABASE_URL,
               REDIS_URL=settings.REDIS_URL, LOOKALIKE_ENV_FILE=str(env_file), **variables)
    return env


def _python(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_development_defaults_and_the_state_directory_come_from_it(env_file, tmp_path):
    """The embedded services' state directory was decided before the file was read, and the development settings
    set DEBUG and SECRET_KEY before it too: values given only in .env were ignored."""
    state = tmp_path / "state"
    env_file.write_text(f"DEBUG=false\nSECRET_KEY=from-the-file\nLOOKALIKE_STATE_DIR={state}\n")
    env = _settings_env(env_file)
    code = ("from django.conf import settings; from config import embedded; "
            "print(settings.DEBUG, settings.SECRET_KEY, embedded.STATE_DIR, settings.MEDIA_ROOT)")
    result = _python(env, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "from-the-file", str(state), str(state / "media")]


def test_the_environment_wins_over_it(env_file, tmp_path):
    env_file.write_text("SECRET_KEY=from-the-file\n")
    env = _settings_env(env_file, SECRET_KEY="from-the-environment", LOOKALIKE_STATE_DIR=str(tmp_path / "state"))
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    result = _python(env, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["from-the-environment"]


def test_the_settings_module_may_be_named_in_it(env_file, tmp_path):
    """manage.py and Celery chose their default settings before the file was read: a .env naming the production
    settings gave the development ones (DEBUG on) to every command and worker."""
    env_file.write_text("DJANGO_SETTINGS_MODULE=config.settings.test\n")
    env = _settings_env(env_file, LOOKALIKE_STATE_DIR=str(tmp_path / "state"))
    del env["DJANGO_SETTINGS_MODULE"]
    result = _python(env, "manage.py", "shell", "-v", "0", "-c",
                     "import os; print(os.environ['DJANGO_SETTINGS_MODULE'])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["config.settings.test"]
    code = "import config.celery_app, os; print(os.environ['DJANGO_SETTINGS_MODULE'])"
    result = _python(env, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["config.settings.test"]


def test_the_wsgi_app_takes_the_production_settings_when_none_are_named(env_file, tmp_path):
    """Importing it imported the package, whose Celery app set the development default first: gunicorn started
    without the variable ran with DEBUG on and the embedded services."""
    env = _settings_env(env_file, SECRET_KEY="wsgi-test-key-" + "0123456789" * 5, ALLOWED_HOSTS="shop.example.com",
                        LOOKALIKE_STATE_DIR=str(tmp_path / "state"), MEDIA_ROOT=str(tmp_path / "media"))
    del env["DJANGO_SETTINGS_MODULE"]
    code = ("import config.wsgi, os; from django.conf import settings; "
            "print(os.environ['DJANGO_SETTINGS_MODULE'], settings.DEBUG)")
    result = _python(env, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["config.settings.production", "False"]


def test_a_settings_module_named_after_the_package_was_imported_is_kept_by_the_wsgi_app(env_file, tmp_path):
    """gunicorn imports the package with its config, then applies its --env: the WSGI app must not take that for
    the development default."""
    env = _settings_env(env_file, LOOKALIKE_STATE_DIR=str(tmp_path / "state"), MEDIA_ROOT=str(tmp_path / "media"))
    del env["DJANGO_SETTINGS_MODULE"]
    code = ("import config, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings.test'; import config.wsgi; "
            "print(os.environ['DJANGO_SETTINGS_MODULE'])")
    result = _python(env, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["config.settings.test"]
