"""Create the local admin account once and print how to log in (used by `bin/lookalike run`)."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from config.embedded import STATE_DIR


class Command(BaseCommand):
    help = "Create a superuser 'admin' with a generated password (kept in the state directory) if none exists."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        password_file = STATE_DIR / "admin-password"
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            user_model.objects.create_superuser(username=username, email="", password=password)
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            password_file.write_text(password)
            password_file.chmod(0o600)
        password = password_file.read_text().strip() if password_file.exists() else "(the password you set)"
        self.stdout.write(f"Admin: /admin/  user: {username}  password: {password}")
