"""Developer machine: debug on, a throwaway secret, the embedded services unless URLs are given."""

import os

from config import dotenv

dotenv.read()  # a DEBUG or SECRET_KEY given there wins over the defaults below
os.environ.setdefault("SECRET_KEY", "insecure-local-development-key-never-use-in-production")
os.environ.setdefault("DEBUG", "true")

from .base import *  # noqa: E402,F403

import warnings  # noqa: E402

# runserver serves static files from the apps' folders; STATIC_ROOT only exists after collectstatic.
warnings.filterwarnings("ignore", message="No directory at", module="whitenoise.base")
