"""Photo files that no row names: what a process killed in the middle of a write (SIGKILL, a power cut, the
out-of-memory killer) had stored before its transaction could commit or clean up. ``manage.py prune_media`` lists
and deletes them; every other way out of a write deletes its files itself (catalog.services).

A crash leaves a few such files. Many, or all, mean that the database is not the one the files belong to (a wrong
DATABASE_URL, a restore in the wrong order, an older backup): ``prune_refusal`` says so, and the command deletes
nothing unless forced."""

from __future__ import annotations

from datetime import datetime

from catalog.models import ProductImage

# Where photos and their thumbnails are stored (the file fields' upload_to), below MEDIA_ROOT.
PHOTO_FILES_ROOT = "products"
# Above this share of the stored photo files, orphans are taken for a database that does not match the files.
PRUNE_MAX_SHARE = 0.2


def photo_folders() -> list[str]:
    """The storage folders below PHOTO_FILES_ROOT, each with the folders inside it after it."""
    storage = _storage()
    folders, pending = [], [PHOTO_FILES_ROOT] if storage.exists(PHOTO_FILES_ROOT) else []
    while pending:
        folder = pending.pop()
        folders.append(folder)
        pending.extend(f"{folder}/{name}" for name in sorted(storage.listdir(folder)[0], reverse=True))
    return folders


def photo_files_in(*, folder: str, stored_before: datetime) -> tuple[int, list[str]]:
    """How many files lie directly in ``folder`` and, of them, those that no photo names as its file or thumbnail
    and that were stored before ``stored_before`` (a younger one may belong to a write still in progress): the
    folder is listed once."""
    storage = _storage()
    names = storage.listdir(folder)[1]
    if not names:
        return 0, []
    prefix = f"{folder}/"
    named = set(ProductImage.objects.filter(file__startswith=prefix).values_list("file", flat=True))
    named |= set(ProductImage.objects.filter(thumbnail__startswith=prefix).values_list("thumbnail", flat=True))
    orphans = [prefix + name for name in sorted(names)
               if prefix + name not in named and storage.get_modified_time(prefix + name) < stored_before]
    return len(names), orphans


def prune_refusal(*, stored: int, orphans: int) -> str:
    """Why deleting ``orphans`` of the ``stored`` photo files looks like a database that does not match them rather
    than a crash's leftovers; "" when it does not."""
    if stored and not ProductImage.objects.exists():
        return (f"the database has no product photos, but {stored} photo file(s) are stored: is DATABASE_URL the "
                f"shop's database, and was it restored before the media?")
    if orphans > stored * PRUNE_MAX_SHARE:
        return (f"{orphans} of the {stored} stored photo files ({orphans / stored:.0%}) are named by no photo, more "
                f"than the {PRUNE_MAX_SHARE:.0%} a crash could leave: is this the shop's database, restored in full?")
    return ""


def _storage():
    return ProductImage._meta.get_field("file").storage
