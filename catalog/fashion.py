"""The Fashion-MNIST demo: 70,000 Zalando article photos as products, to show the catalog at scale.

Data: the Debian package ``dataset-fashion-mnist`` (MIT), four IDX files under /usr/share/datasets/fashion-mnist.
Each 28x28 grey image is stored light-on-black; it becomes a catalog photo by inverting it to dark-on-white and
enlarging it to a 224 px PNG (the model's input size).

Products are written through ``catalog.services.products_with_photos_upsert``, the write path the CSV import and
the photo demo share, 500 to a transaction: it works set-based (a few queries a batch, bulk inserts), so 70,000
products take minutes, not the tens of minutes a product at a time would. Each batch announces its photos once
(search queues their embeddings in tasks of 32 when it commits). Sources and licence: docs/demo-data.md.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
from django.core.files.base import ContentFile
from PIL import Image

from catalog.images import inspect_image
from catalog.models import Category
from catalog.services import (
    LoadSummary,
    PreparedImage,
    ProductWithPhotos,
    atomic_with_files,
    category_get_or_create_path,
    products_with_photos_upsert,
)

DEFAULT_DATASET_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"
SPLITS = (("train", "train", 60_000), ("test", "t10k", 10_000))  # (split, file prefix, size); train first
SIDE = 28
IMAGE_SIDE = 224
BATCH_SIZE = 500
SKU_PREFIX = "FMNIST"
CURRENCY = "USD"


@dataclass(frozen=True)
class FashionClass:
    title: str  # shown as "Ankle boot #1234"
    category_path: str
    price_range: tuple[int, int]  # whole dollars, inclusive


# In label order (0-9), as the dataset defines them: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt,
# Sneaker, Bag, Ankle boot.
CLASSES = (
    FashionClass("T-shirt", "Fashion > Tops > T-shirts & Tops", (9, 39)),
    FashionClass("Trousers", "Fashion > Bottoms > Trousers", (25, 89)),
    FashionClass("Pullover", "Fashion > Tops > Pullovers", (25, 79)),
    FashionClass("Dress", "Fashion > Dresses", (29, 149)),
    FashionClass("Coat", "Fashion > Outerwear > Coats", (59, 249)),
    FashionClass("Sandal", "Fashion > Shoes > Sandals", (19, 69)),
    FashionClass("Shirt", "Fashion > Tops > Shirts", (19, 69)),
    FashionClass("Sneaker", "Fashion > Shoes > Sneakers", (39, 139)),
    FashionClass("Bag", "Fashion > Bags", (19, 199)),
    FashionClass("Ankle boot", "Fashion > Shoes > Ankle Boots", (49, 179)),
)
_CENTS = ("00", "50", "95", "99")


class FashionDataMissing(Exception):
    """The dataset files are not installed; the message says how to install them."""


def fashion_dataset_dir() -> Path:
    return Path(os.environ.get("FASHION_MNIST_DIR") or DEFAULT_DATASET_DIR)


# --- Reading the IDX files -----------------------------------------------------------------------------


def _idx_open(path: Path, *, magic: int, dims: int):
    """Open a gzipped IDX file and check its header; returns (stream positioned at the data, shape)."""
    if not path.is_file():
        raise FashionDataMissing(
            f"Fashion-MNIST is not installed: {path} not found. Install the Debian package: {INSTALL_HINT} "
            "(or set FASHION_MNIST_DIR to a folder holding its four *-ubyte.gz files)."
        )
    stream = gzip.open(path, "rb")
    header = stream.read(4 + 4 * dims)
    found = int.from_bytes(header[:4], "big")
    if found != magic:
        stream.close()
        raise FashionDataMissing(f"{path} is not an IDX file of the expected kind (magic {found:#x}, want {magic:#x})")
    shape = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return stream, shape


def fashion_labels_read(*, directory: Path, prefix: str) -> np.ndarray:
    stream, (count,) = _idx_open(directory / f"{prefix}-labels-idx1-ubyte.gz", magic=0x801, dims=1)
    with stream:
        return np.frombuffer(stream.read(count), dtype=np.uint8)


def fashion_images_iter(*, directory: Path, prefix: str, limit: int, batch: int) -> Iterator[np.ndarray]:
    """Raw (light-on-black) images, ``batch`` at a time, streamed: loading the first 20 reads only those."""
    stream, (count, rows, columns) = _idx_open(directory / f"{prefix}-images-idx3-ubyte.gz", magic=0x803, dims=3)
    if (rows, columns) != (SIDE, SIDE):
        stream.close()
        raise FashionDataMissing(f"{prefix} images are {rows}x{columns}, expected {SIDE}x{SIDE}")
    with stream:
        left = min(limit, count)
        while left > 0:
            n = min(batch, left)
            yield np.frombuffer(stream.read(n * SIDE * SIDE), dtype=np.uint8).reshape(n, SIDE, SIDE)
            left -= n


# --- One product ----------------------------------------------------------------------------------------


def fashion_photo_png(*, pixels: np.ndarray) -> bytes:
    """A catalog photo from one raw image: dark article on white, enlarged to IMAGE_SIDE px, grey PNG."""
    image = Image.fromarray(255 - pixels).resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # 1.4 ms and 12 KB a photo; level 6 is 3x slower for 15% less
    return buffer.getvalue()


def fashion_sku(*, split: str, index: int) -> str:
    return f"{SKU_PREFIX}-{split}-{index:05d}"


def fashion_price(*, sku: str, label: int) -> Decimal:
    """A price in the class's range that depends only on the SKU, so reloading never changes it."""
    low, high = CLASSES[label].price_range
    value = int.from_bytes(hashlib.blake2b(sku.encode(), digest_size=8).digest(), "big")
    return Decimal(f"{low + value % (high - low + 1)}.{_CENTS[(value >> 32) % len(_CENTS)]}")


def fashion_product_fields(*, split: str, index: int, number: int, label: int) -> dict:
    kind = CLASSES[label]
    sku = fashion_sku(split=split, index=index)
    return {
        "sku": sku,
        "title": f"{kind.title} #{number}",
        "description": (
            f"Zalando article photo from the Fashion-MNIST {split} set (image {index}), 28x28 grey, "
            "shown enlarged. Demo data, MIT licence."
        ),
        "price": fashion_price(sku=sku, label=label),
        "currency": CURRENCY,
    }


# --- Loading --------------------------------------------------------------------------------------------


def fashion_products_load(
    *,
    limit: int | None = None,
    directory: Path | None = None,
    on_batch: Callable[[int], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> LoadSummary:
    """Create or update the first ``limit`` Fashion-MNIST products (train split first), with their photos.

    Idempotent by SKU: existing products get changed fields updated and a missing photo (by content hash) added;
    photos are never removed. Each batch is one transaction; its embeddings are queued when it commits.
    ``on_batch(n)`` is called after each batch with the number of images it covered (progress).
    """
    directory = directory or fashion_dataset_dir()
    total = sum(size for _, _, size in SPLITS)
    limit = total if limit is None else max(0, min(limit, total))
    labels = {prefix: fashion_labels_read(directory=directory, prefix=prefix) for _, prefix, _ in SPLITS}
    categories = [category_get_or_create_path(path=kind.category_path) for kind in CLASSES]
    summary = LoadSummary()
    number, left = 0, limit
    for split, prefix, _ in SPLITS:
        if left <= 0:
            break
        index = 0
        for pixels in fashion_images_iter(directory=directory, prefix=prefix, limit=left, batch=batch_size):
            items = [
                (split, index + i, number + i + 1, int(labels[prefix][index + i]), pixels[i])
                for i in range(len(pixels))
            ]
            _batch_load(items=items, categories=categories, summary=summary)
            index, number, left = index + len(items), number + len(items), left - len(items)
            if on_batch is not None:
                on_batch(len(items))
    return summary


def _batch_load(*, items: list, categories: list[Category], summary: LoadSummary) -> None:
    batch = []
    for split, index, number, label, pixels in items:
        fields = fashion_product_fields(split=split, index=index, number=number, label=label)
        sku = fields.pop("sku")
        batch.append(ProductWithPhotos(sku=sku, fields={**fields, "category": categories[label]},
                                       photos=[_FashionPhoto(sku=sku, pixels=pixels)]))
    with atomic_with_files() as stored:
        results = products_with_photos_upsert(items=batch, stored=stored)  # one transaction a batch
    for result in results:
        summary.count(result.outcome, result.images_added)


class _FashionPhoto:
    """One article's photo, made from its pixels when the product lacks it."""

    def __init__(self, *, sku: str, pixels: np.ndarray):
        self.name, self.pixels = f"{sku.lower()}.png", pixels
        self._png: bytes | None = None

    @property
    def png(self) -> bytes:
        if self._png is None:
            self._png = fashion_photo_png(pixels=self.pixels)
        return self._png

    def sha256(self) -> str:
        return hashlib.sha256(self.png).hexdigest()

    def prepare(self) -> PreparedImage:
        photo = ContentFile(self.png, name=self.name)
        # The check every upload gets. No thumbnail: a 224 px PNG is smaller than one (THUMBNAIL_MAX_SIDE).
        return PreparedImage(file=photo, info=inspect_image(photo), thumbnail=None)
