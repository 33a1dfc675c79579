"""Shopper-style snapshots of catalog photos: what a phone photo of a product on a screen or a shelf looks like.

Each step follows the relevance benchmark's definition (docs/relevance.md), in this order:

1. the product is set on a coloured or textured background (its own plain background or transparency replaced,
   with a margin of the new background around it);
2. rotated by up to ±15 degrees;
3. cropped to 75-95 % of each side at a random, off-centre position;
4. mirrored half of the time;
5. brightness and colour saturation each scaled by 0.7-1.3;
6. blurred (Gaussian, up to about 1 % of the short side);
7. saved as a JPEG of quality 50-85.

Images smaller than ``MIN_WORKING_SIDE`` (Fashion-MNIST's 28 px) are first enlarged, as a phone photo of a small
picture is, so the crop and rotation keep a product to look at. Snapshot ``i`` of an image is the same on every
machine (seeded by the caller's generator).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from search.preprocessing import TRIM_TOLERANCE, border_colour

MIN_WORKING_SIDE = 224
MAX_WORKING_SIDE = 640


def product_cutout(image: Image.Image) -> Image.Image:
    """The product as RGBA: transparency kept, a uniform border colour made transparent (the studio background)."""
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        if np.asarray(rgba.getchannel("A")).min() < 250:
            return rgba
    rgb = image.convert("RGB")
    pixels = np.asarray(rgb)
    colour, uniform = border_colour(pixels)
    if uniform < 0.5:  # a scene: no background to replace; the whole photo is the subject
        return rgb.convert("RGBA")
    difference = np.abs(pixels.astype(np.int16) - colour).max(axis=2)
    alpha = Image.fromarray(np.where(difference > TRIM_TOLERANCE, 255, 0).astype(np.uint8))
    if min(rgb.size) >= 100:  # close small gaps in the mask; on a thumbnail one pixel is too much
        alpha = alpha.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.GaussianBlur(1))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(alpha)
    return rgba


def background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A plain colour, or a texture: smooth colour noise, stripes or a check, as tables, walls and fabrics are."""
    width, height = size
    base = rng.uniform(40, 235, size=3)
    kind = rng.integers(0, 4)
    if kind == 0:
        return Image.new("RGB", size, tuple(int(c) for c in base))
    if kind == 1:  # smooth noise: upsampled random field
        field = rng.normal(0, 30, size=(8, 8, 3)) + base
        noise = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
        grain = rng.normal(0, 6, size=(height, width, 3))
        return Image.fromarray(np.clip(np.asarray(noise, dtype=np.float32) + grain, 0, 255).astype(np.uint8))
    other = rng.uniform(40, 235, size=3)
    period = max(4, int(min(size) * rng.uniform(0.03, 0.12)))
    y, x = np.mgrid[0:height, 0:width]
    if kind == 2:  # stripes at an angle
        angle = rng.uniform(0, np.pi)
        mask = (((x * np.cos(angle) + y * np.sin(angle)) // period) % 2).astype(bool)
    else:  # check
        mask = ((x // period + y // period) % 2).astype(bool)
    pixels = np.where(mask[..., None], other, base)
    return Image.fromarray(pixels.astype(np.uint8))


def at_working_size(product: Image.Image, resample: Image.Resampling) -> Image.Image:
    """``product`` enlarged to MIN_WORKING_SIDE on its short side or shrunk to MAX_WORKING_SIDE on its long side."""
    scale = 1.0
    if min(product.size) < MIN_WORKING_SIDE:
        scale = MIN_WORKING_SIDE / min(product.size)
    elif max(product.size) > MAX_WORKING_SIDE:
        scale = MAX_WORKING_SIDE / max(product.size)
    if scale == 1.0:
        return product
    return product.resize((max(1, round(product.width * scale)), max(1, round(product.height * scale))), resample)


def snapshot(image: Image.Image, rng: np.random.Generator) -> bytes:
    """One shopper-style snapshot of ``image``: the JPEG file a shopper would upload."""
    product = at_working_size(product_cutout(image), Image.Resampling.BICUBIC)
    # 1. on a new background, with a margin of it around the product
    margin = rng.uniform(0.05, 0.25)
    canvas_size = (round(product.width * (1 + 2 * margin)), round(product.height * (1 + 2 * margin)))
    canvas = background(canvas_size, rng)
    canvas.paste(product, ((canvas.width - product.width) // 2, (canvas.height - product.height) // 2), product)
    # 2. rotated; the corners that come into view show more of the background
    angle = float(rng.uniform(-15, 15))
    rotated = canvas.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False,
                            fillcolor=tuple(int(c) for c in np.asarray(canvas).reshape(-1, 3).mean(axis=0)))
    # 3. off-centre crop of 75-95 % of each side
    keep_w, keep_h = rng.uniform(0.75, 0.95, size=2)
    crop_w, crop_h = int(rotated.width * keep_w), int(rotated.height * keep_h)
    left = int(rng.integers(0, rotated.width - crop_w + 1))
    top = int(rng.integers(0, rotated.height - crop_h + 1))
    view = rotated.crop((left, top, left + crop_w, top + crop_h))
    # 4. mirror
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    # 5. light and colour
    view = ImageEnhance.Brightness(view).enhance(float(rng.uniform(0.7, 1.3)))
    view = ImageEnhance.Color(view).enhance(float(rng.uniform(0.7, 1.3)))
    # 6. blur
    view = view.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 0.01)) * min(view.size)))
    # 7. JPEG
    buffer = io.BytesIO()
    view.save(buffer, "JPEG", quality=int(rng.integers(50, 86)))
    return buffer.getvalue()
