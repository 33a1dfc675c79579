"""Upload handling for every form and API that takes a file."""

from __future__ import annotations

import os

from django.core.files.uploadhandler import TemporaryFileUploadHandler

# An upload's type is decided by decoding it, never by its name (catalog/images.py), so a longer extension carries
# nothing; it only has to fit the file system's 255-byte names beside Django's temporary-file prefix.
EXTENSION_MAX_CHARS = 16


class ShortNameTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Django's handler for uploads too big to keep in memory, with the client's extension cut short: Django names
    the temporary file after it, and a name with a 250-character extension failed with "File name too long" while
    the request was read, a 500 before any view could answer."""

    def new_file(self, field_name, file_name, *args, **kwargs):
        stem, extension = os.path.splitext(file_name)
        super().new_file(field_name, stem + extension[:EXTENSION_MAX_CHARS], *args, **kwargs)
