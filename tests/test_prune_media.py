"""``manage.py prune_media``: photo files a killed process left without a row are deleted; nothing else is."""

import io
import os
import time

import pytest
from django.core.management import CommandError, call_command

from catalog import services
from tests.factories import uploaded_image

pytestmark = pytest.mark.django_db

TWO_DAYS = 2 * 24 * 3600


def _stored(path, content=b"bytes", *, age=TWO_DAYS):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_only_old_files_that_no_photo_names_are_deleted(product, media_root):
    image = services.product_image_add(product=product, file=uploaded_image())
    kept = [media_root / image.file.name, media_root / image.thumbnail.name]
    for path in kept:
        os.utime(path, (time.time() - TWO_DAYS, time.time() - TWO_DAYS))  # old, but named by a photo
    folder = kept[0].parent
    orphans = [_stored(folder / "killed-mid-import.jpg"), _stored(media_root / "products/thumbs/2020/01/lost.webp")]
    in_progress = _stored(folder / "being-imported.jpg", age=60)  # its transaction may still commit

    listed = io.StringIO()
    call_command("prune_media", "--dry-run", stdout=listed)
    assert all(path.is_file() for path in [*kept, *orphans, in_progress])
    assert sorted(listed.getvalue().splitlines()[:-1]) == sorted(str(p.relative_to(media_root)) for p in orphans)
    assert "2 photo file(s)" in listed.getvalue()

    call_command("prune_media", stdout=io.StringIO())
    assert not any(path.exists() for path in orphans)
    assert all(path.is_file() for path in [*kept, in_progress])


def test_files_younger_than_an_hour_cannot_be_asked_for(db):
    with pytest.raises(CommandError, match="at least 1"):
        call_command("prune_media", "--older-than-hours", "0.1")
