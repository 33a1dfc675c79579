"""Pixel conversions shared by everything that shows or reads a photo: thumbnails here, the model's input and
the query preview in search (which imports this; the catalog never imports search)."""

from __future__ import annotations

import numpy as np
from PIL import ExifTags, Image

WHITE = (255, 255, 255)

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # and 32-bit int/float
_ROWS_AT_A_TIME = 256


# How to turn the stored pixels upright for each EXIF orientation (as ImageOps.exif_transpose does).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# Those of the turns that swap width and height: every portrait photo from a phone.
SIDE_SWAPPING_TURNS = {Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE,
                       Image.Transpose.ROTATE_90}


def upright_turn(image: Image.Image) -> Image.Transpose | None:
    """How to turn ``image``'s stored pixels upright, as its EXIF orientation says; None when it says nothing
    usable (no orientation, a malformed one, EXIF Pillow cannot parse at all)."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - no orientation to go by
        return None
    return _UPRIGHT.get(orientation) if isinstance(orientation, int) else None


def upright(image: Image.Image) -> Image.Image:
    """A decoded ``image`` turned as its EXIF orientation says, or ``image`` itself when it says nothing.

    Only the pixels are turned. ImageOps.exif_transpose also rewrites the EXIF, and that raises on a photo whose
    EXIF holds one malformed entry (some editing apps write them), which is otherwise a good photo."""
    turn = upright_turn(image)
    return image.transpose(turn) if turn is not None else image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode (palette, CMYK, 16-bit, greyscale, with or without alpha) -> 8-bit RGB."""
    if image.mode in _SIXTEEN_BIT_MODES:
        image = Image.fromarray(_scaled_to_bytes(np.asarray(image)))  # 2-D uint8: mode L
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "La":  # premultiplied grey (a TIFF can be): Pillow converts it to LA only
        image = image.convert("LA")
    if image.mode in ("LA", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, WHITE)
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode == "CMYK":
        # Pillow's naive CMYK->RGB; good enough for features (no ICC transform without littlecms profiles).
        return image.convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def _scaled_to_bytes(array: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit) grey values scaled by their real range to 0-255: Pillow's own conversion clips them to 255.

    A band of rows at a time: a float copy of the whole photo, and the temporaries of the arithmetic on it, took
    16 bytes a pixel, 0.8 GB for a 50-megapixel PNG that compresses to 100 KB, which anyone may upload."""
    low, high = float(np.nanmin(array)), float(np.nanmax(array))
    scale = 255.0 / (high - low) if high > low else 0.0
    scaled = np.empty(array.shape, dtype=np.uint8)
    for start in range(0, array.shape[0], _ROWS_AT_A_TIME):
        band = array[start : start + _ROWS_AT_A_TIME].astype(np.float32)
        band -= low
        band *= scale
        np.rint(band, out=band)
        scaled[start : start + _ROWS_AT_A_TIME] = np.nan_to_num(band)
    return scaled
