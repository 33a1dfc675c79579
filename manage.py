#!/usr/bin/env python
import os
import sys

from config import dotenv


def main():
    dotenv.read()  # first: .env may name the settings module too
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
