"""Create the local admin account once and print how to log in (used by `bin/lookalike run`)."""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from config.embedded import STATE_DIR


class Command(BaseCommand):
    help = "Create a superuser 'admin' with a generated password (kept in the state directory) if none exists."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        # Checked before the account is made: the name also names the file that keeps its password
        user_model = get_user_model()
        longest = user_model._meta.get_field(user_model.USERNAME_FIELD).max_length
        if not username or "/" in username or username in (".", "..") or len(username) > longest:
            raise CommandError(f"--username {username[:longest]!r}{'...' if len(username) > longest else ''} cannot "
                               f"name an account (at most {longest} characters) and its password file")
        password_file = STATE_DIR / f"{username}-password"
        user = user_model.objects.filter(username=username).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            try:
                with transaction.atomic():  # no account whose password could not be kept
                    user = user_model.objects.create_superuser(username=username, email="", password=password)
                    STATE_DIR.mkdir(parents=True, exist_ok=True)
                    # Created readable by its owner only: it holds a password.
                    with os.fdopen(os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
                        file.write(password)
            except OSError as error:  # a name too long for a file, a state directory not writable
                raise CommandError(f"cannot keep the password of {username!r} in {password_file}: "
                                   f"{error.strerror}; no account was made") from None
        elif not (user.is_active and user.is_staff):  # a login printed that the admin refuses
            raise CommandError(f"{username!r} is an account that cannot open the admin (not active staff); name "
                               "another --username, or make it staff")
        stored = password_file.read_text().strip() if password_file.exists() else ""
        # Printed only while it is the account's password: not once it was changed, nor for another account.
        password = stored if stored and user.check_password(stored) else "(the password you set)"
        self.stdout.write(f"Admin: /admin/  user: {username}  password: {password}")
