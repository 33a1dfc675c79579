"""Photo files that no row names: what a process killed in the middle of a write (SIGKILL, a power cut, the
out-of-memory killer) had stored before its transaction could commit or clean up. ``manage.py prune_media`` lists
and deletes them; every other way out of a write deletes its files itself (catalog.services)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from catalog.models import ProductImage

# Where photos and their thumbnails are stored (the file fields' upload_to), below MEDIA_ROOT.
PHOTO_FILES_ROOT = "products"


def photo_folders() -> list[str]:
    """The storage folders below PHOTO_FILES_ROOT, each with the folders inside it after it."""
    storage = _storage()
    folders, pending = [], [PHOTO_FILES_ROOT] if storage.exists(PHOTO_FILES_ROOT) else []
    while pending:
        folder = pending.pop()
        folders.append(folder)
        pending.extend(f"{folder}/{name}" for name in sorted(storage.listdir(folder)[0], reverse=True))
    return folders


def orphaned_photo_files(*, folder: str, stored_before: datetime) -> Iterator[str]:
    """The files directly in ``folder`` that no photo names as its file or thumbnail and that were stored before
    ``stored_before`` (a younger one may belong to a write still in progress)."""
    storage = _storage()
    names = storage.listdir(folder)[1]
    if not names:
        return
    prefix = f"{folder}/"
    named = set(ProductImage.objects.filter(file__startswith=prefix).values_list("file", flat=True))
    named |= set(ProductImage.objects.filter(thumbnail__startswith=prefix).values_list("thumbnail", flat=True))
    for name in sorted(names):
        path = prefix + name
        if path not in named and storage.get_modified_time(path) < stored_before:
            yield path


def _storage():
    return ProductImage._meta.get_field("file").storage
