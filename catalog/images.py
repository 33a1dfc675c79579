"""Checks on uploaded image files. The type is decided by decoding the bytes, never by name or header."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from PIL import Image, UnidentifiedImageError

# Formats a shopper's camera or an admin's export produce; everything else is refused.
ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "HEIF"}


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str
    sha256: str


def inspect_image(file) -> ImageInfo:
    """Validate an uploaded file as an image and describe it. Raises ValidationError with a message users can read."""
    size = getattr(file, "size", None)
    if size == 0:
        raise ValidationError("The file is empty.", code="empty")
    if size is not None and size > settings.UPLOAD_MAX_BYTES:
        limit_mb = settings.UPLOAD_MAX_BYTES // (1024 * 1024)
        raise ValidationError(f"The file is larger than {limit_mb} MB.", code="too_large")

    digest = hashlib.sha256()
    file.seek(0)
    for chunk in iter(lambda: file.read(1024 * 1024), b""):
        digest.update(chunk)
    file.seek(0)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                width, height = image.size
                image_format = image.format
                _check_dimensions(width, height)
                if image_format not in ACCEPTED_FORMATS:
                    raise ValidationError(f"{image_format} images are not supported.", code="format")
                image.load()  # decode fully: catches truncated and corrupt files
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValidationError("The image has too many pixels.", code="too_many_pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ValidationError("The file is not a readable image.", code="invalid_image") from None
    finally:
        file.seek(0)
    return ImageInfo(width=width, height=height, format=image_format, sha256=digest.hexdigest())


def _check_dimensions(width: int, height: int) -> None:
    if width * height > settings.UPLOAD_MAX_PIXELS:
        raise ValidationError(
            f"The image is {width}x{height} pixels; the limit is {settings.UPLOAD_MAX_PIXELS // 1_000_000} megapixels.",
            code="too_many_pixels",
        )
    if min(width, height) < settings.UPLOAD_MIN_SIDE:
        raise ValidationError(
            f"The image is {width}x{height} pixels; each side needs at least {settings.UPLOAD_MIN_SIDE}.",
            code="too_small",
        )
