"""Text PostgreSQL cannot hold, recognised in one place: a lookup or write that sends it fails in the driver (a 500)."""

from __future__ import annotations

import re

# NUL, which PostgreSQL text refuses, and any surrogate code point, which UTF-8 cannot encode. In a decoded string a
# surrogate is always a lone one: a pair written as JSON escapes decodes to the one character it stands for.
_REFUSED_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


def postgresql_refuses(text: str) -> bool:
    """Whether ``text`` holds a character PostgreSQL's driver cannot send."""
    return _REFUSED_CHARACTERS.search(text) is not None
