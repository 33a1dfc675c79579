"""Pairs for fitting the reduction: a catalog photo and a photo of the same product taken another way.

The learned whitening (search/reduction.py) learns which directions of the features change between two photos of
one product, and weighs them down. Its pairs come from this generator, written apart from the relevance benchmark's
shopper snapshots (bench/shopper.py) and unlike them on purpose, so that the benchmark measures the whitening on
changes of a kind it was not fitted on, not just on domains it was not fitted on:

- backgrounds are gradients, blotches or a photo-like blur of another colour field, never stripes or checks;
- rotation up to ±25 degrees, the crop keeps 65-100 % of each side and may cut into the product;
- contrast and brightness (not saturation) scaled by 0.6-1.4, a colour cast, sensor noise;
- the picture shrunk to 30-100 % and enlarged back (a distant or low-resolution photo), or sharpened;
- JPEG quality 35-95, or PNG.

Pair ``i`` of a photo is the same on every machine (seeded by the caller's generator).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from bench.shopper import at_working_size, product_cutout


def _backdrop(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    width, height = size
    first, second = rng.uniform(20, 245, size=(2, 3))
    if rng.random() < 0.5:  # a gradient at an angle: a wall in uneven light
        angle = rng.uniform(0, 2 * np.pi)
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        ramp = x * np.cos(angle) + y * np.sin(angle)
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
        pixels = first + ramp[..., None] * (second - first)
    else:  # large soft blotches: a cluttered, out-of-focus room
        field = rng.uniform(20, 245, size=(4, 4, 3))
        pixels = np.asarray(
            Image.fromarray(field.astype(np.uint8)).resize(size, Image.Resampling.BILINEAR), dtype=np.float32
        )
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def other_photo(image: Image.Image, rng: np.random.Generator) -> bytes:
    """Another photo of the product in ``image``, as the file a shopper might send."""
    product = at_working_size(product_cutout(image), Image.Resampling.BILINEAR)
    margin = rng.uniform(0.0, 0.35)
    canvas = _backdrop((round(product.width * (1 + 2 * margin)), round(product.height * (1 + 2 * margin))), rng)
    canvas.paste(product, ((canvas.width - product.width) // 2, (canvas.height - product.height) // 2), product)
    canvas = canvas.rotate(float(rng.uniform(-25, 25)), resample=Image.Resampling.BILINEAR, expand=True,
                           fillcolor=tuple(int(c) for c in rng.uniform(20, 245, size=3)))
    keep_w, keep_h = rng.uniform(0.65, 1.0, size=2)
    crop_w, crop_h = max(1, int(canvas.width * keep_w)), max(1, int(canvas.height * keep_h))
    left, top = int(rng.integers(0, canvas.width - crop_w + 1)), int(rng.integers(0, canvas.height - crop_h + 1))
    view = canvas.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    view = ImageEnhance.Contrast(view).enhance(float(rng.uniform(0.6, 1.4)))
    view = ImageEnhance.Brightness(view).enhance(float(rng.uniform(0.6, 1.4)))
    pixels = np.asarray(view, dtype=np.float32) * rng.uniform(0.85, 1.15, size=3)  # a colour cast
    pixels += rng.normal(0, rng.uniform(0, 8), size=pixels.shape)  # sensor noise
    view = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < 0.6:  # far away or a low-resolution camera
        shrink = rng.uniform(0.3, 1.0)
        small = (max(8, round(view.width * shrink)), max(8, round(view.height * shrink)))
        view = view.resize(small, Image.Resampling.BOX).resize(view.size, Image.Resampling.BILINEAR)
    else:
        view = view.filter(ImageFilter.UnsharpMask(radius=2, percent=int(rng.integers(50, 150))))
    buffer = io.BytesIO()
    if rng.random() < 0.8:
        view.save(buffer, "JPEG", quality=int(rng.integers(35, 96)))
    else:
        view.save(buffer, "PNG")
    return buffer.getvalue()
