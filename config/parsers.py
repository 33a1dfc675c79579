"""The API's JSON parser (REST_FRAMEWORK's DEFAULT_PARSER_CLASSES)."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError

from config.text import postgresql_refuses


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, answering 400 for two bodies that were 500s.

    A body nested deeper than Python's recursion limit ("[" * 100000): json raises RecursionError, which DRF
    lets through. A string, key or value at any depth, holding NUL or an unpaired surrogate (JSON writes both as
    ``\\u`` escapes): PostgreSQL's driver cannot send either, and not every string reaches a DRF field that
    refuses them (a category slug went straight to its lookup), so no view or field has to remember to.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
        if _holds_text_postgresql_refuses(data):
            raise ParseError("JSON parse error - a string holds a NUL character or an unpaired surrogate.")
        return data


def _holds_text_postgresql_refuses(data) -> bool:
    # A loop, not recursion: the document may be nested nearly to the recursion limit json itself stopped at.
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if postgresql_refuses(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False
