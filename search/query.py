"""Query photos: decode a shopper's upload, cut out the region they chose, embed it in the searched space."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from search.embeddings import EMBEDDERS, Embedder, get_embedder

# EXIF orientations that swap width and height (rotations by 90 or 270 degrees, with or without a flip).
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112


class InvalidBox(ValueError):
    """The region is malformed, inverted or entirely outside the photo; the message says which."""


@dataclass(frozen=True)
class Box:
    """A region in the uploaded photo's pixels, measured on the upright (EXIF-rotated) photo."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def parse(cls, text: str) -> Box:
        parts = [part.strip() for part in str(text).split(",")]
        if len(parts) != 4:
            raise InvalidBox("box must be four numbers: x0,y0,x1,y1")
        try:
            x0, y0, x1, y1 = (float(part) for part in parts)
        except ValueError:
            raise InvalidBox("box must be four numbers: x0,y0,x1,y1") from None
        if not all(np.isfinite([x0, y0, x1, y1])):
            raise InvalidBox("box coordinates must be finite numbers")
        if x1 <= x0 or y1 <= y0:
            raise InvalidBox("box must have x1 > x0 and y1 > y0")
        return cls(x0, y0, x1, y1)

    def clipped(self, width: int, height: int) -> Box:
        """The part inside a width x height photo; a box partly outside is clipped, one wholly outside refused."""
        box = Box(max(self.x0, 0), max(self.y0, 0), min(self.x1, width), min(self.y1, height))
        if box.x1 - box.x0 < 1 or box.y1 - box.y0 < 1:
            raise InvalidBox(f"box lies outside the {width}x{height} photo")
        return box


def upright_size(file) -> tuple[int, int]:
    """Width and height of the photo as shown, i.e. after its EXIF rotation."""
    file.seek(0)
    with Image.open(file) as image:
        width, height = image.size
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    file.seek(0)
    return (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


def embedder_for_model(model: str) -> Embedder:
    """The embedder whose vectors make up the space ``model`` (an ``Embedder.id``)."""
    for name in EMBEDDERS:
        embedder = get_embedder(name)
        if embedder.id == model:
            return embedder
    raise LookupError(f"no installed embedder produces space {model!r}")


def query_vector(*, file, model: str, box: Box | None = None) -> np.ndarray:
    """Embed an uploaded photo (or the ``box`` region of it) into the space ``model``."""
    embedder = embedder_for_model(model)
    if box is not None:
        width, height = upright_size(file)
        box = box.clipped(width, height)
    image = embedder.load_image(file)  # upright RGB; big JPEGs decoded at reduced size
    if box is not None:
        scale = image.width / width  # the reduced-size decode keeps the aspect ratio
        image = image.crop(
            (round(box.x0 * scale), round(box.y0 * scale), round(box.x1 * scale), round(box.y1 * scale))
        )
    return embedder.embed_images([image])[0]
