"""Image file -> model input, with Pillow and numpy only (torchvision cannot be imported here).

One pipeline serves catalog photos (product on a plain background, any aspect ratio) and shopper
snapshots (phone photos: EXIF-rotated, cluttered edges) alike:

1. ``load_rgb``: decode upright RGB; large JPEGs at reduced size (DCT scaling); transparency on white.
2. ``model_views``: the views whose features are averaged into one vector, for catalog photos and shopper
   photos alike: the photo padded to a square (never crop the product away), its mirror image and a centre crop,
   resized and normalised for EfficientNet-Lite (docs/embeddings.md measures why).

``trim_margins`` (crop uniform background margins) and ``to_model_input`` (one view, optionally trimmed) remain for
the benchmarks; searching no longer trims: a shopper's photo has a
background of its own, and trimming only the catalog's white studio margins left the two framed differently
(R@1 0.01-0.07 lower on the benchmark domains).

Any change here changes the vectors: bump ``PREPROCESSING_VERSION`` so ``Embedder.id`` changes too.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageChops

from catalog.pixels import WHITE, to_rgb, upright  # noqa: F401 - to_rgb is part of this module's pipeline (step 1)

PREPROCESSING_VERSION = 5

# A pixel is background when every channel is within this distance of the background colour; JPEG
# noise and soft studio shadows stay below it, product edges do not.
TRIM_TOLERANCE = 24
# The background colour is taken from the border only if this share of border pixels agrees with it;
# photos of scenes (shopper snapshots) have no uniform border and are left as they are.
TRIM_MIN_UNIFORM_BORDER = 0.5
# Margin kept around the trimmed product, as a share of its longer side.
TRIM_KEEP_MARGIN = 0.04
# The centre view keeps this share of each side of the photo.
CENTRE_VIEW_KEEP = 0.8


def load_rgb(source, *, draft_size: int | None = None) -> Image.Image:
    """Open a file or path and return an upright 8-bit RGB image; transparent parts become white.

    With ``draft_size`` a large JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps
    both sides >= ``draft_size``: 4-8x less work than a full decode followed by a resize.
    Animated images (GIF, WebP, APNG) give their first frame.
    """
    image = Image.open(source)
    image.seek(0)
    if draft_size and image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))
    image.load()  # decoded here, while the source is open
    return to_rgb(upright(image))


def border_colour(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """Median colour of the one-pixel border and the share of border pixels within tolerance of it."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]]).astype(np.int16)
    colour = np.median(border, axis=0).astype(np.int16)
    uniform = float((np.abs(border - colour).max(axis=1) <= TRIM_TOLERANCE).mean())
    return colour, uniform


def trim_margins(image: Image.Image) -> tuple[Image.Image, tuple[int, int, int]]:
    """Crop uniform background margins; returns the cropped image and the background colour.

    Images without a uniform border come back unchanged with a white background colour.
    """
    width, height = image.size
    # Find the box on a copy of ~128 px (box-filtered, which also averages JPEG noise away): ~10x
    # cheaper than on the decoded image, and a few pixels of precision do not matter under the margin.
    factor = max(1, min(width, height) // 128)
    small = image.reduce(factor) if factor > 1 else image
    if small.width < 3 or small.height < 3:
        return image, WHITE
    colour, uniform = border_colour(np.asarray(small))
    if uniform < TRIM_MIN_UNIFORM_BORDER:
        return image, WHITE
    background = tuple(int(c) for c in colour)
    # Largest per-channel difference from the background, computed by Pillow in C.
    red, green, blue = ImageChops.difference(small, Image.new("RGB", small.size, background)).split()
    foreground = np.asarray(ImageChops.lighter(ImageChops.lighter(red, green), blue)) > TRIM_TOLERANCE
    # A row or column is part of the product only if several pixels differ: single specks of
    # noise or dust must not stop the trim.
    rows = np.flatnonzero(foreground.sum(axis=1) >= max(2, foreground.shape[1] // 100))
    cols = np.flatnonzero(foreground.sum(axis=0) >= max(2, foreground.shape[0] // 100))
    if rows.size == 0 or cols.size == 0:  # a blank image: nothing to centre on
        return image, background
    top, bottom = rows[0] * factor, (rows[-1] + 1) * factor
    left, right = cols[0] * factor, (cols[-1] + 1) * factor
    keep = int(round(TRIM_KEEP_MARGIN * max(bottom - top, right - left)))
    box = (max(0, left - keep), max(0, top - keep), min(width, right + keep), min(height, bottom + keep))
    if box == (0, 0, width, height):
        return image, background
    return image.crop(box), background


def pad_to_square(image: Image.Image, fill=WHITE, *, size: int | None = None) -> Image.Image:
    """Keep the whole product in view: pad the short side instead of cropping it away.

    With ``size`` the image is first resized to fit a ``size`` square, so only real pixels are
    resampled, never the padding (cheaper, same result).
    """
    if size is not None:
        scale = size / max(image.size)
        fitted = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(fitted, Image.Resampling.BILINEAR, reducing_gap=3.0)
    width, height = image.size
    side = size or max(width, height)
    if width == height == side:
        return image
    square = Image.new("RGB", (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def centre_crop(image: Image.Image) -> Image.Image:
    """The largest centred square (the usual ImageNet evaluation crop); measured against padding."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def to_model_input(image: Image.Image, size: int, *, fit: str = "pad", trim: bool = True) -> np.ndarray:
    """RGB image -> float32 CHW array in [-1, 1] (EfficientNet-Lite: mean 0.5, std 0.5).

    ``fit`` is "pad" (shipped: see docs/embeddings.md for the measurement) or "crop".
    """
    fill = WHITE
    if trim:
        image, fill = trim_margins(image)
    # BILINEAR in Pillow averages over the whole footprint when shrinking, so it does not alias;
    # reducing_gap first shrinks by an integer factor, which is faster on large inputs.
    if fit == "pad":
        square = pad_to_square(image, fill, size=size)
    else:
        square = centre_crop(image).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return _normalised(square)


# EfficientNet-Lite's input normalisation: mean 0.5, std 0.5 on [0, 1] pixels, i.e. x / 127.5 - 1.
_SCALE = np.float32(1 / 127.5)


def _normalised(square: Image.Image, out: np.ndarray | None = None) -> np.ndarray:
    """``square`` as float32 CHW in [-1, 1], written into ``out`` when given (one pass from the uint8 pixels, no
    temporaries)."""
    if out is None:
        out = np.empty((3, square.height, square.width), dtype=np.float32)
    np.multiply(np.asarray(square).transpose(2, 0, 1), _SCALE, out=out)
    out -= np.float32(1.0)
    return out


def model_views(image: Image.Image, size: int) -> np.ndarray:
    """The views of one photo that its vector averages, as one (3, 3, size, size) float32 array: padded, mirrored,
    centre crop.

    A shopper's snapshot is framed, mirrored and cropped differently from the catalog photo; averaging the same
    three views on both sides makes the two vectors agree more than either single view does (docs/embeddings.md).
    """
    padded = pad_to_square(image, WHITE, size=size)
    width, height = image.size
    keep_w, keep_h = max(1, round(width * CENTRE_VIEW_KEEP)), max(1, round(height * CENTRE_VIEW_KEEP))
    left, top = (width - keep_w) // 2, (height - keep_h) // 2
    centre = pad_to_square(image.crop((left, top, left + keep_w, top + keep_h)), WHITE, size=size)
    views = np.empty((3, 3, size, size), dtype=np.float32)
    _normalised(padded, views[0])
    # The mirror view is the padded view's columns reversed: the same numbers as normalising a flipped image.
    views[1] = views[0][:, :, ::-1]
    _normalised(centre, views[2])
    return views
