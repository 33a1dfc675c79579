"""Developer machine: debug on, a throwaway secret, the embedded services unless URLs are given."""

import os

os.environ.setdefault("SECRET_KEY", "insecure-local-development-key-never-use-in-production")
os.environ.setdefault("DEBUG", "true")

from .base import *  # noqa: E402,F403
