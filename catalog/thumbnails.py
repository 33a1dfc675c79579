"""Small WebP copies of product photos for cards and galleries: a grid of 24 originals is megabytes on a phone."""

from __future__ import annotations

import io
from pathlib import PurePath

from django.core.files.base import ContentFile
from PIL import Image, ImageOps

from search.preprocessing import to_rgb

# Cards are at most ~300 CSS px wide; 640 px stays sharp on 2x screens.
THUMBNAIL_MAX_SIDE = 640


def thumbnail_make(file, *, name: str) -> ContentFile:
    """A WebP copy of an (already validated) image, upright, at most THUMBNAIL_MAX_SIDE pixels on its long side."""
    file.seek(0)
    with Image.open(file) as image:
        image.draft("RGB", (THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE))  # JPEGs decode straight at reduced size
        image.seek(0)  # first frame of animations
        # The same conversion the model sees: 16-bit scaled by its range, transparency on white (cards are white).
        upright = to_rgb(ImageOps.exif_transpose(image))
        upright.thumbnail((THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        upright.save(buffer, format="WEBP", quality=82, method=4)
    file.seek(0)
    return ContentFile(buffer.getvalue(), name=f"{PurePath(name).stem}.webp")
