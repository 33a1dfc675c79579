"""Django's database sessions, with the keys it can have made checked before any query."""

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore


class SessionStore(DatabaseSessionStore):
    """A session cookie that Django cannot have set (its keys are ASCII letters and digits) is no session. One
    holding NUL, which a quoted cookie can spell as ``\\000``, reached PostgreSQL, which refuses NUL in text: an
    error on every page and API call, and the photo search's limit, which reads the user, let it through."""

    def _validate_session_key(self, key):
        return super()._validate_session_key(key) and key.isascii() and key.isalnum()
