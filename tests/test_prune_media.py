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
    kept = []
    for n in range(4):  # 2 orphans of 11 files: under the share it deletes without --force
        image = services.product_image_add(product=product, file=uploaded_image(color=(n * 60, 0, 0)))
        kept += [media_root / image.file.name, media_root / image.thumbnail.name]
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


@pytest.mark.parametrize("hours", ["0.1", "nan", "inf", "1e9"])
def test_files_younger_than_an_hour_or_an_age_past_counting_cannot_be_asked_for(db, hours):
    """NaN, infinity and a billion hours passed the check, then failed in the date arithmetic with a traceback."""
    with pytest.raises(CommandError, match="must be from 1 to"):
        call_command("prune_media", "--older-than-hours", hours)


def _photo_files(media_root):
    return sorted(path for path in (media_root / "products").rglob("*") if path.is_file())


def test_an_empty_database_deletes_no_photo_file(db, media_root):
    """Pointed at an empty database (a restore in the wrong order, a wrong DATABASE_URL), every photo file is named by
    no row: it deleted the shop's every photo."""
    files = [_stored(media_root / f"products/2026/01/photo-{n}.jpg") for n in range(3)]
    with pytest.raises(CommandError, match="no product photos, but 3 photo file") as refused:
        call_command("prune_media", stdout=io.StringIO())
    assert refused.value.returncode == 1
    assert all(path.is_file() for path in files)


def test_deleting_more_than_a_fifth_of_the_photo_files_needs_force(product, media_root):
    """A database restored from an older backup names only some of the files: more than a crash leaves behind."""
    kept = []
    for n in range(3):
        image = services.product_image_add(product=product, file=uploaded_image(color=(n * 80, 0, 0)))
        kept += [media_root / image.file.name, media_root / image.thumbnail.name]
    orphans = [_stored(media_root / f"products/2026/01/lost-{n}.jpg") for n in range(2)]  # 2 of 8 files

    with pytest.raises(CommandError, match=r"2 of the 8 stored photo files \(25%\)"):
        call_command("prune_media", stdout=io.StringIO())
    assert all(path.is_file() for path in [*kept, *orphans])

    listed, warned = io.StringIO(), io.StringIO()
    call_command("prune_media", "--dry-run", stdout=listed, stderr=warned)  # lists them; deletes nothing
    assert "2 photo file(s)" in listed.getvalue() and all(path.is_file() for path in orphans)
    assert "without --dry-run this would refuse" in warned.getvalue()

    call_command("prune_media", "--force", stdout=io.StringIO())
    assert not any(path.exists() for path in orphans)
    assert _photo_files(media_root) == sorted(kept)
