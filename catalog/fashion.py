"""The Fashion-MNIST demo: 70,000 Zalando article photos as products, to show the catalog at scale.

Data: the Debian package ``dataset-fashion-mnist`` (MIT), four IDX files under /usr/share/datasets/fashion-mnist.
Each 28x28 grey image is stored light-on-black; it becomes a catalog photo by inverting it to dark-on-white and
enlarging it to a 224 px PNG (the model's input size).

70,000 products one by one through catalog.services take tens of minutes: ``product_with_photos_upsert``, which
the CSV import and the photo demo share, makes about 24 queries a product (``full_clean`` checks each constraint
with a query) and a thumbnail a photo; 1,000 articles took 21 s that way, in batches of 500 per transaction, and
3-4 s here (a test run on the 2-core machine, issue 13). So products are written in batches with bulk inserts,
after the same checks the services make (``Product.clean_fields``, ``inspect_image`` on every PNG; the database
enforces the constraints), and each batch announces its photos (``catalog.signals.photos_added``: search queues
their embeddings in batched tasks) once it commits. Sources and licence: docs/demo-data.md.
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
from django.db import transaction
from django.utils import timezone
from PIL import Image

from catalog.images import inspect_image
from catalog.models import Category, Product, ProductImage
from catalog.page_cache import catalog_changed
from catalog.services import LoadSummary, category_get_or_create_path
from catalog.signals import photos_added

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
    skus = [fashion_sku(split=split, index=index) for split, index, *_ in items]
    existing = {product.sku: product for product in Product.objects.filter(sku__in=skus)}
    hashes: dict[int, set[str]] = {}
    for product_id, content_hash in ProductImage.objects.filter(product__in=existing.values()).values_list(
        "product_id", "content_hash"
    ):
        hashes.setdefault(product_id, set()).add(content_hash)

    new_products, changed_products, images = [], [], []
    for split, index, number, label, pixels in items:
        # category_id, not category: comparing the related object would cost a query per existing product.
        fields = {**fashion_product_fields(split=split, index=index, number=number, label=label),
                  "category_id": categories[label].pk}
        product = existing.get(fields["sku"])
        if product is None:
            product = Product(**fields)
            product.clean_fields()  # the field checks product_create makes; the constraints are the database's
            new_products.append(product)
            have = set()
        else:
            changed = [name for name, value in fields.items() if getattr(product, name) != value]
            for name in changed:
                setattr(product, name, fields[name])
            if changed:
                product.clean_fields()
                changed_products.append(product)
            have = hashes.get(product.pk, set())
        png = fashion_photo_png(pixels=pixels)
        if hashlib.sha256(png).hexdigest() in have:  # reloading: the photo is there (decoding it again is not needed)
            continue
        photo = ContentFile(png, name=f"{fields['sku'].lower()}.png")
        info = inspect_image(photo)  # the check every upload gets
        images.append(
            (product, ProductImage(position=len(have), width=info.width, height=info.height,
                                   content_hash=info.sha256), photo)
        )

    storage = ProductImage._meta.get_field("file").storage
    stored: list[str] = []
    try:
        for _, image, photo in images:
            image.file = storage.save(image.file.field.generate_filename(image, photo.name), photo)
            stored.append(image.file.name)
        with transaction.atomic():
            Product.objects.bulk_create(new_products)  # PostgreSQL returns the new primary keys
            if changed_products:
                now = timezone.now()
                for product in changed_products:
                    product.updated_at = now
                Product.objects.bulk_update(
                    changed_products, ["title", "description", "price", "currency", "category_id", "updated_at"]
                )
            for product, image, _ in images:
                image.product = product
            created = ProductImage.objects.bulk_create([image for _, image, _ in images])
            catalog_changed()  # bulk writes send no signals
            photos_added.send(sender=ProductImage, image_ids=[image.pk for image in created], on_not_queued=None)
    except BaseException:
        for name in stored:  # the rows are gone with the transaction: so must their files be
            storage.delete(name)
        raise
    # An existing product counts as updated when a field changed or it only lacked its photo.
    new_ids = {id(product) for product in new_products}
    updated_ids = {id(product) for product in changed_products}
    updated_ids |= {id(product) for product, _, _ in images if id(product) not in new_ids}
    summary.created += len(new_products)
    summary.updated += len(updated_ids)
    summary.unchanged += len(items) - len(new_products) - len(updated_ids)
    summary.images_added += len(images)
