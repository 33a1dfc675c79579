"""Pixel conversions shared by everything that shows or reads a photo: thumbnails here, the model's input and
the query preview in search (which imports this; the catalog never imports search)."""

from __future__ import annotations

import numpy as np
from PIL import ExifTags, Image, ImageOps

WHITE = (255, 255, 255)

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # and 32-bit int/float


def upright(image: Image.Image) -> Image.Image:
    """A decoded ``image`` turned as its EXIF orientation says, or ``image`` itself when it says nothing:
    exif_transpose copies the pixels even when it has nothing to turn."""
    turned = image.getexif().get(ExifTags.Base.Orientation, 1) != 1
    return ImageOps.exif_transpose(image) if turned else image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode (palette, CMYK, 16-bit, greyscale, with or without alpha) -> 8-bit RGB."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow clips 16-bit values to 255 when converting; scale by the real range instead.
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        image = Image.fromarray(((array - low) * scale).round().astype(np.uint8))  # 2-D uint8: mode L
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, WHITE)
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode == "CMYK":
        # Pillow's naive CMYK->RGB; good enough for features (no ICC transform without littlecms profiles).
        return image.convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image
