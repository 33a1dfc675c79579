"""Turn an image file into the model's input tensor with Pillow and numpy (torchvision is unavailable here)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

WHITE = (255, 255, 255)


def load_rgb(source, *, target_size: int | None = None) -> Image.Image:
    """Open a file or path and return an upright RGB image; transparent parts become white.

    With ``target_size`` large JPEGs are decoded at reduced size (DCT scaling), which is much
    faster than decoding at full size and resizing afterwards.
    """
    image = Image.open(source)
    if target_size and image.format == "JPEG":
        image.draft("RGB", (target_size * 2, target_size * 2))
    image.seek(0)  # first frame of animated images
    image = ImageOps.exif_transpose(image)
    if image.mode in ("P", "LA", "RGBA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, WHITE)
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits before converting, or it clips to white.
        array = np.asarray(image, dtype=np.float32)
        peak = max(float(array.max()), 1.0)
        image = Image.fromarray((array * (255.0 / peak)).astype(np.uint8), mode="L")
    return image.convert("RGB")


def pad_to_square(image: Image.Image, fill=WHITE) -> Image.Image:
    """Keep the whole product in view: pad the short side instead of cropping it away."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    square = Image.new("RGB", (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def to_model_input(image: Image.Image, size: int) -> np.ndarray:
    """RGB image -> float32 CHW array normalised with mean 0.5 and std 0.5 (EfficientNet-Lite)."""
    square = pad_to_square(image).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    array = np.asarray(square, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))
