"""The embedded PostgreSQL (the zero-config default) is tuned for vector search on its first start, and only then."""

import os
import subprocess
import sys

import psycopg
import pytest

from config import embedded
from tests.services_support import ROOT

pytestmark = pytest.mark.system


def _start(state_dir) -> str:
    env = {**os.environ, "LOOKALIKE_STATE_DIR": str(state_dir)}
    result = subprocess.run([sys.executable, "-c", "from config.embedded import postgres_url; print(postgres_url())"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    log = state_dir / "postgres" / "log"
    assert result.returncode == 0, result.stderr[-3000:] + (log.read_text()[-3000:] if log.is_file() else "")
    return result.stdout.strip().splitlines()[-1]


def _postmaster_pid(state_dir) -> str:
    return (state_dir / "postgres" / "postmaster.pid").read_text().split()[0]


def test_a_new_embedded_server_gets_shared_buffers_for_the_index_and_keeps_its_socket(tmp_path):
    wanted = embedded.tuning()
    try:
        url = _start(tmp_path)
        started_pid = _postmaster_pid(tmp_path)

        # The URL handed out after the tuning restart answers, with the settings in force.
        with psycopg.connect(url) as connection:
            buffers_mb = connection.execute(
                "SELECT setting::bigint * pg_size_bytes(unit) / 2^20 FROM pg_settings WHERE name = 'shared_buffers'"
            ).fetchone()[0]
            maintenance_mb = connection.execute(
                "SELECT pg_size_bytes(current_setting('maintenance_work_mem')) / 2^20"
            ).fetchone()[0]
        assert buffers_mb == int(wanted["shared_buffers"].removesuffix("MB")) > 128  # above PostgreSQL's default
        assert maintenance_mb == int(wanted["maintenance_work_mem"].removesuffix("MB"))

        # A second process finds the tuned server as it is: no second restart.
        assert _start(tmp_path) == url
        assert _postmaster_pid(tmp_path) == started_pid
    finally:
        subprocess.run([sys.executable, "-m", "config.embedded", "stop"], cwd=ROOT, timeout=60,
                       env={**os.environ, "LOOKALIKE_STATE_DIR": str(tmp_path)}, capture_output=True)  # fmt: skip
