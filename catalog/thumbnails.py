"""Small WebP copies of product photos for cards and galleries: a grid of 24 originals is megabytes on a phone."""

from __future__ import annotations

import io
from pathlib import PurePath

from django.core.files.base import ContentFile
from PIL import Image

from catalog.pixels import to_rgb, upright

# Cards are at most ~300 CSS px wide; 640 px stays sharp on 2x screens.
THUMBNAIL_MAX_SIDE = 640
# libwebp's effort, 0-6. 2 encodes a 640 px photo ~1.8x faster than the default 4 for ~3% more bytes
# (measured on catalog photos, docs/import.md): the encoder is the import's largest cost per photo.
WEBP_METHOD = 2


def thumbnail_draft(image: Image.Image) -> None:
    """Before decoding: let a large JPEG decode at the smallest DCT scale (1/2, 1/4, 1/8) that still covers the
    thumbnail, 2-4x less work than a full decode. Pillow compares each side, so the target is the thumbnail's own
    size, not a square (a 640x640 box never shrinks a 1600x1067 photo, whose short side is below 2x640)."""
    scale = THUMBNAIL_MAX_SIDE / max(image.size)
    if scale < 0.5:
        image.draft("RGB", (max(1, round(image.width * scale)), max(1, round(image.height * scale))))


def thumbnail_make(file=None, *, name: str, image: Image.Image | None = None) -> ContentFile:
    """A WebP copy of an (already validated) image, upright, at most THUMBNAIL_MAX_SIDE pixels on its long side.

    ``image``: the photo as ``inspect_image(..., keep_image=True)`` decoded it (at reduced size), so that it is
    not decoded a second time; it is used up (shrunk in place). Otherwise ``file`` is decoded here.
    """
    if image is None:
        file.seek(0)
        with Image.open(file) as opened:
            thumbnail_draft(opened)
            opened.seek(0)  # first frame of animations
            opened.load()
            thumbnail = thumbnail_make(name=name, image=opened)
        file.seek(0)
        return thumbnail
    # The same conversion the model sees: 16-bit scaled by its range, transparency on white (cards are white).
    rgb = to_rgb(upright(image))
    # Bicubic: ~25% cheaper than Lanczos here, and within 0.4 grey levels of it on average at these scales.
    rgb.thumbnail((THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    rgb.save(buffer, format="WEBP", quality=82, method=WEBP_METHOD)
    return ContentFile(buffer.getvalue(), name=f"{PurePath(name).stem}.webp")
