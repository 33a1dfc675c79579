"""Query photos: decode a shopper's upload, cut out the region they chose, embed it in the searched space."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
from django.conf import settings
from PIL import Image

from catalog.images import inspect_image
from catalog.pixels import upright_turn
from search import details, lone_search
from search.embeddings import EMBEDDERS, RUNTIMES, Embedder, ModelUnavailable, earlier_embedder, get_embedder
from search.preprocessing import to_rgb


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
        """The part inside a width x height photo; a box partly outside is clipped, one wholly outside refused, and
        so is a region smaller than a photo may be (UPLOAD_MIN_SIDE)."""
        box = Box(max(self.x0, 0), max(self.y0, 0), min(self.x1, width), min(self.y1, height))
        if box.x1 - box.x0 < 1 or box.y1 - box.y0 < 1:
            raise InvalidBox(f"box lies outside the {width}x{height} photo")
        if min(box.x1 - box.x0, box.y1 - box.y0) < settings.UPLOAD_MIN_SIDE:
            raise InvalidBox(f"box must be at least {settings.UPLOAD_MIN_SIDE} pixels wide and high inside the photo")
        return box

    def scaled_crop(self, scale: float, width: int, height: int) -> tuple[int, int, int, int]:
        """This box in a copy of the photo decoded at ``scale`` (width x height): at least one whole pixel, the
        region's partial edge pixels included, so that no region of a big photo shrinks to nothing."""
        left, top = min(int(np.floor(self.x0 * scale)), width - 1), min(int(np.floor(self.y0 * scale)), height - 1)
        right = min(max(int(np.ceil(self.x1 * scale)), left + 1), width)
        bottom = min(max(int(np.ceil(self.y1 * scale)), top + 1), height)
        return left, top, right, bottom


# Query photos are decoded once, at the smallest JPEG scale that keeps both sides at least the largest model input.
QUERY_DECODE_MIN_SIDE = max(embedder.input_size for embedder in EMBEDDERS.values())
# The longest side of the photo's preview on the results page (search/views.py), made from the same pixels: big enough
# for a sharp preview on a phone's screen and for drawing a box on it; small enough to inline.
PREVIEW_MAX_SIDE = 800


@dataclass(frozen=True)
class QueryImage:
    """A shopper's photo, checked and decoded once."""

    pixels: Image.Image  # upright RGB; big photos at reduced size (_reduced_like_a_draft)
    width: int  # the upright original's size: boxes are measured in these pixels
    height: int


def query_image_read(file) -> QueryImage:
    """Check an upload as every image upload is checked (raises ValidationError with the reason) and decode it."""
    info = inspect_image(file, keep_image=True, keep_min_side=QUERY_DECODE_MIN_SIDE)
    turn = upright_turn(info.image)  # read off the decoded file: a reduced copy carries no EXIF
    pixels = info.image if info.format == "JPEG" else _reduced_like_a_draft(info.image)
    return QueryImage(pixels=to_rgb(pixels if turn is None else pixels.transpose(turn)), width=info.width,
                      height=info.height)


def _reduced_like_a_draft(image: Image.Image) -> Image.Image:
    """A photo decoded whole (PNG, WebP, HEIC: only JPEG decodes at a reduced scale) made as small as a JPEG's
    draft would be, by the largest factor of 2, 4 or 8 that keeps both sides at least QUERY_DECODE_MIN_SIDE (and
    the longer one PREVIEW_MAX_SIDE, for the results page's preview of the photo), before it is turned upright and
    made RGB: a 50-megapixel PNG then made two more full-size copies (about 300 MB)."""
    factor = 1
    while (factor < 8 and min(image.size) >= QUERY_DECODE_MIN_SIDE * factor * 2
           and max(image.size) >= PREVIEW_MAX_SIDE * factor * 2):
        factor *= 2
    if factor == 1:
        return image
    if image.mode in ("1", "P") or image.mode.startswith("I;16"):  # modes Image.reduce does not take
        image = to_rgb(image)
    return image.reduce(factor)


def embedder_for_model(model: str) -> Embedder:
    """The embedder whose vectors make up the space ``model`` (an ``Embedder.id``, or one it computes the same
    vectors for: an earlier version's space, still searched while the new one is built)."""
    for name in EMBEDDERS:
        embedder = get_embedder(name)
        if model in embedder.query_ids:
            return embedder
    # A space of an earlier runtime or reduction file, searched while the configured one is built: the same code
    # still makes its vectors. (An earlier preprocessing or network version's code is gone: nothing can.)
    for name, runtime, shipped_reduction in product(EMBEDDERS, RUNTIMES, (False, True)):
        embedder = earlier_embedder(name, runtime, shipped_reduction)
        try:
            if model in embedder.query_ids:
                return embedder
        except ModelUnavailable:  # that configuration's reduction file is not here either
            continue
    raise LookupError(f"no installed embedder produces space {model!r}")


@dataclass(frozen=True)
class QueryEmbedding:
    vector: np.ndarray  # in the searched space
    details: tuple[np.ndarray, np.ndarray]  # the photo's detail descriptors and weights (search/details.py)


@dataclass(frozen=True)
class KeptQuery:
    """An earlier photo search's query vector, kept for a while (search/kept_queries.py) so that it can be refined
    without the photo."""

    model: str
    vector: np.ndarray  # float32
    details: tuple | None = None  # the photo's detail descriptors and weights (search/details.py)
    token: str = ""  # what it is kept under


def query_embedding(*, image: QueryImage, model: str, box: Box | None = None) -> QueryEmbedding:
    """Embed a query photo (or the ``box`` region of it) into the space ``model``, its details from the same
    network run."""
    embedder = embedder_for_model(model)
    pixels = image.pixels
    if box is not None:
        box = box.clipped(image.width, image.height)
        scale = pixels.width / image.width  # the reduced-size decode keeps the aspect ratio
        pixels = pixels.crop(box.scaled_crop(scale, pixels.width, pixels.height))
    with lone_search.searching() as alone:
        every_core = alone and settings.SEARCH_EVERY_CORE_WHEN_ALONE
        vectors, maps = embedder.embed_images([pixels], views=settings.SEARCH_QUERY_VIEWS, every_core=every_core,
                                              details=True)
    return QueryEmbedding(vector=vectors[0], details=details.descriptors(maps[0]))


def query_vector(*, image: QueryImage, model: str, box: Box | None = None) -> np.ndarray:
    """``query_embedding``'s vector alone."""
    return query_embedding(image=image, model=model, box=box).vector
