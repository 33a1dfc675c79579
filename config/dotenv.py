"""The optional ``.env`` file, for operators who keep their variables in a file: read before anything decides a
setting from the environment (the embedded services' state directory, the development defaults). Variables
already set in the environment win. LOOKALIKE_ENV_FILE names another file (a deployment's, or a test's)."""

import os
from pathlib import Path

import environ

ENV_FILE = Path(os.environ.get("LOOKALIKE_ENV_FILE") or Path(__file__).resolve().parent.parent / ".env")


def read() -> None:
    environ.Env.read_env(ENV_FILE, overwrite=False)
