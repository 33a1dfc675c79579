"""Product-like image domains for the relevance benchmark, each from one pinned registry package.

A domain is a list of ``Item``s: an image file, the product it shows (several views share a product id) and the
group (the kind of product: class queries and held-out groups use it). Sources and licences are in
docs/relevance-data.md. Nothing is vendored: each domain fetches its package once into ``CACHE_DIR`` and writes
the images it uses there as PNG (converted or shrunk where the package's files are not plain, small PNG/JPEG).

``python -m bench.domains`` prints a summary of every domain (and fetches what is missing).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import statistics
import sys
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bench.datasets import CACHE_DIR, FASHION_MNIST_CLASSES, _run, fashion_mnist, saleor_renders, vendure_photos

MAX_SIDE = 512  # openclipart ships drawings up to 16000 px wide; a benchmark only needs a thumbnail-sized copy


@dataclass(frozen=True)
class Item:
    path: Path  # an image file on disk (PNG/JPEG), RGB or with alpha
    product: str  # product id: images of one product share it
    group: str  # the kind of product (for class queries and held-out groups)


@dataclass(frozen=True)
class Domain:
    name: str  # short slug, e.g. "emoji-noto"
    source: str  # package name and version
    licence: str
    describe: str  # one line: what the images look like
    items: Callable[[], list[Item]]
    # Domains of one family show the same products and groups (the two emoji sets draw the same emoji): a fit
    # without a domain leaves its whole family out.
    family: str = ""


def family(name: str) -> str:
    """The family of the domain ``name``: itself, unless it shares one (any other name: itself)."""
    domain = DOMAINS.get(name)
    return (domain.family if domain is not None else "") or name


# --- Fetching ------------------------------------------------------------------------------------------

def _fetched(target: Path, fetch: Callable[[Path], None]) -> Path:
    """``target`` after ``fetch(target)`` has filled it once; a marker file tells a finished fetch from a
    half-done one (which is redone)."""
    done = target / ".done"
    if not done.exists():
        target.mkdir(parents=True, exist_ok=True)
        fetch(target)
        done.touch()
    return target


def _npm(spec: str) -> Callable[[Path], None]:
    def fetch(target: Path) -> None:
        _run(["npm", "pack", "--silent", spec], target)
        with tarfile.open(next(target.glob("*.tgz"))) as archive:
            archive.extractall(target, filter="data")

    return fetch


def _apt(package: str, version: str) -> Callable[[Path], None]:
    """``apt-get download`` + ``dpkg-deb -x``: the files without installing the package (no root needed)."""

    def fetch(target: Path) -> None:
        _run(["apt-get", "download", f"{package}={version}"], target)
        _run(["dpkg-deb", "-x", str(next(target.glob(f"{package}_*.deb"))), "root"], target)

    return fetch


@contextmanager
def _large_image(path: Path) -> Iterator[Image.Image]:
    """Open a file of a pinned package without Pillow's decompression-bomb limit: openclipart's biggest
    drawings (16000 px wide) are expected, not an attack."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            yield image
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _png_copy(source: Path, target: Path) -> Path:
    """``source`` as a PNG of at most MAX_SIDE px (alpha kept), written once."""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with _large_image(source) as image:
            image = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P", "PA") else "RGB")
            image.thumbnail((MAX_SIDE, MAX_SIDE))
            partial = target.with_suffix(".part")
            image.save(partial, "PNG")
            partial.rename(target)
    return target


def _capped(items: list[Item], per_group: int) -> list[Item]:
    """At most ``per_group`` products per group, all views of each kept product; the choice is a fixed hash
    of the product id, so it is the same on every machine and does not follow the package's file order."""
    products: dict[str, list[str]] = {}
    for item in items:
        kept = products.setdefault(item.group, [])
        if item.product not in kept:
            kept.append(item.product)
    keep = set()
    for group_products in products.values():
        group_products.sort(key=lambda product: hashlib.sha1(product.encode()).hexdigest())
        keep.update(group_products[:per_group])
    return [item for item in items if item.product in keep]


# --- The three sets bench/datasets.py already had -----------------------------------------------------------

def fashion_mnist_items(per_class: int = 60) -> list[Item]:
    """The first ``per_class`` test images of each class, written as dark-on-white PNGs."""
    folder = CACHE_DIR / "domains/fashion-mnist"
    images, labels = fashion_mnist("test")
    items, counts = [], [0] * len(FASHION_MNIST_CLASSES)
    for index, (image, label) in enumerate(zip(images, labels)):
        if counts[label] == per_class:
            continue
        counts[label] += 1
        path = folder / f"test-{index:05d}.png"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
        items.append(Item(path, f"fmnist-test-{index}", FASHION_MNIST_CLASSES[label]))
    return items


def vendure_items() -> list[Item]:
    """One photo per product; the group is the second category facet (Computers, Photo, Footwear, ...)."""
    photos = {path.name: path for path in vendure_photos()}
    csv_path = CACHE_DIR / "vendure/package/assets/products.csv"
    with open(csv_path, newline="", encoding="utf-8") as handle:  # columns are padded with spaces
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in csv.DictReader(handle)]
    items = []
    for row in rows:
        if not row["name"]:  # a variant row of the product above
            continue
        categories = [value for kind, _, value in (f.partition(":") for f in row["facets"].split("|"))
                      if kind == "category"]  # fmt: skip
        for name in filter(None, row["assets"].split("|")):
            items.append(Item(photos[name], f"vendure-{row['slug']}", categories[-1]))
    return items


def saleor_items() -> list[Item]:
    """Renders with a ``_<digit>`` suffix are views of one product (``cl_boot01_2``); ``juice_01`` and
    ``paints_01`` are different products of one type."""
    return [
        Item(path, "saleor-" + re.sub(r"_\d$", "", path.stem.removeprefix("saleordemoproduct_")), product_type)
        for path, product_type in saleor_renders()
    ]


# --- Emoji: Noto (flat, 64 px) and Fluent 3D (rendered, 256 px), grouped by Unicode subcategory ---------------

EMOJI_DATASOURCE = "emoji-datasource-google@16.0.0"
FLUENT_3D = "@lobehub/fluent-emoji-3d@1.1.0"
# Unicode emoji subcategories of things a shop could sell (faces, people, animals, symbols, flags left out).
EMOJI_GROUPS = (
    "clothing", "household", "tool", "computer", "office", "book-paper", "light & video", "phone",
    "musical-instrument", "medical", "science", "writing", "dishware", "drink", "food-fruit", "food-vegetable",
    "food-prepared", "food-sweet", "food-asian", "sport", "game", "arts & crafts",
)  # fmt: skip
EMOJI_PER_GROUP = 30


def _emoji_datasource() -> Path:
    return _fetched(CACHE_DIR / "domains/emoji-datasource-google", _npm(EMOJI_DATASOURCE)) / "package"


def _emoji_records() -> list[dict]:
    records = json.loads((_emoji_datasource() / "emoji.json").read_text(encoding="utf-8"))
    records = [record for record in records if record["subcategory"] in EMOJI_GROUPS]
    return sorted(records, key=lambda record: record["sort_order"])


def noto_items() -> list[Item]:
    folder = _emoji_datasource() / "img/google/64"
    items = [
        Item(folder / record["image"], f"emoji-{record['short_name']}", record["subcategory"])
        for record in _emoji_records()
        if record["has_img_google"]
    ]
    return _capped(items, EMOJI_PER_GROUP)


def fluent_3d_items() -> list[Item]:
    """The package names its WebP files by code points, with or without the FE0F selector; the categories come
    from emoji-datasource's emoji.json."""
    assets = _fetched(CACHE_DIR / "domains/fluent-emoji-3d", _npm(FLUENT_3D)) / "package/assets"
    items = []
    for record in _emoji_records():
        names = [record["unified"].lower(), (record["non_qualified"] or "").lower(),
                 record["unified"].lower().replace("-fe0f", "")]  # fmt: skip
        source = next((assets / f"{name}.webp" for name in names if name and (assets / f"{name}.webp").exists()), None)
        if source is not None:
            path = CACHE_DIR / "domains/fluent-emoji-3d/png" / f"{source.stem}.png"
            items.append(Item(path, f"emoji-{record['short_name']}", record["subcategory"]))
    items = _capped(items, EMOJI_PER_GROUP)
    for item in items:  # convert only what is used
        _png_copy(assets / f"{item.path.stem}.webp", item.path)
    return items


# --- Openclipart (public-domain drawings), grouped by the package's folders -----------------------------------

OPENCLIPART = ("openclipart-png", "1:0.18+dfsg-19")
# group -> folders (each with its subfolders); the package's folders of shop-like things
OPENCLIPART_GROUPS = {
    "fruit": ("food/fruit",), "vegetables": ("food/vegetables",), "desserts": ("food/desserts",),
    "beverages": ("food/beverages",), "meat-eggs": ("food/meats_and_eggs",), "bread": ("food/breads_and_carbs",),
    "tools": ("tools",), "office": ("office",), "computer-hardware": ("computer/hardware",),
    "electronics": ("electronics",), "music": ("recreation/music",), "sports": ("recreation/sports",),
    "toys": ("recreation/toys",), "clothing": ("people/clothing",), "vehicles": ("transportation/vehicles",),
    "containers": ("containers",), "books": ("education/books",),
}  # fmt: skip
# weapons, not shop goods; the hummers folder repeats the vehicles folder's hummer drawings
OPENCLIPART_SKIPPED = ("tools/weapons", "transportation/vehicles/hummers")
OPENCLIPART_PER_GROUP = 36
OPENCLIPART_MIN_SIDE = 64


def openclipart_items() -> list[Item]:
    """Drawings shrunk to at most MAX_SIDE px, each file once (in the first group that has it). A ``_bw`` file
    is the black-and-white version of a colour drawing (``pizza_cheese_bw`` / ``pizza_cheese``, ``lasagna_bw`` /
    ``lasagna_ganson``): both are views of one product when exactly one colour file matches."""
    root = _fetched(CACHE_DIR / "domains/openclipart", _apt(*OPENCLIPART)) / "root/usr/share/openclipart/png"
    items, sources, seen = [], {}, set()
    for group, folders in OPENCLIPART_GROUPS.items():
        files = sorted(
            path for folder in folders for path in (root / folder).rglob("*.png")
            if not any(str(path.relative_to(root)).startswith(skip) for skip in OPENCLIPART_SKIPPED)
        )  # fmt: skip
        files = [path for path in files if _openclipart_usable(path, seen)]
        colour = [path for path in files if "_bw" not in path.stem]
        for path in files:
            product = path.stem
            if "_bw" in path.stem:
                base = re.sub(r"_bw(_|$)", r"\1", path.stem).rstrip("_")
                matches = [other for other in colour if other.stem == base or other.stem.startswith(base + "_")]
                if len(matches) == 1:
                    product = matches[0].stem
            target = CACHE_DIR / "domains/openclipart/png" / path.relative_to(root)
            sources[target] = path
            items.append(Item(target, f"openclipart-{group}-{product}", group))
    items = _capped(items, OPENCLIPART_PER_GROUP)
    for item in items:
        _png_copy(sources[item.path], item.path)
    return items


def _openclipart_usable(path: Path, seen: set[str]) -> bool:
    """False for a copy of a file already taken (the package files some drawings in two folders, e.g. a juice
    box under fruit and beverages) and for icons under OPENCLIPART_MIN_SIDE px."""
    digest = hashlib.sha1(path.read_bytes()).hexdigest()
    if digest in seen:
        return False
    seen.add(digest)
    with _large_image(path) as image:
        return max(image.size) >= OPENCLIPART_MIN_SIDE


DOMAINS: dict[str, Domain] = {
    domain.name: domain
    for domain in (
        Domain(
            "fashion-mnist", "Debian dataset-fashion-mnist (test split)", "MIT",
            "28x28 grey Zalando product photos, dark on white, 10 clothing classes", fashion_mnist_items,
        ),
        Domain(
            "vendure", "npm @vendure/create 3.7.3", "GPL-3.0-or-later (package); photos from Unsplash",
            "~1600x1067 JPEG product photos on real backgrounds, one per product", vendure_items,
        ),
        Domain(
            "saleor", "PyPI saleor 2.10.1 (wheel)", "CC-BY-4.0 (artwork), BSD-3-Clause (code)",
            "1024x1024 product renders on transparent backgrounds, several views of some products", saleor_items,
        ),
        Domain(
            "emoji-noto", f"npm {EMOJI_DATASOURCE.replace('@', ' ')}",
            "Apache-2.0 (Noto emoji images), MIT (emoji-datasource data)",
            "64x64 flat Noto emoji of objects and food on transparent backgrounds", noto_items, family="emoji",
        ),
        Domain(
            "emoji-fluent-3d", f"npm {FLUENT_3D.rsplit('@', 1)[0]} {FLUENT_3D.rsplit('@', 1)[1]}"
            f" + npm {EMOJI_DATASOURCE.replace('@', ' ')} (categories)",
            "MIT (Microsoft Fluent Emoji, LobeHub package), MIT (emoji-datasource data)",
            "256x256 3D-rendered Fluent emoji of objects and food on transparent backgrounds", fluent_3d_items,
            family="emoji",
        ),
        Domain(
            "openclipart", f"Debian {OPENCLIPART[0]} {OPENCLIPART[1]}", "Public domain (CC public domain dedication)",
            "vector clip-art drawings of objects (colour, some black-and-white), shrunk to <= 512 px",
            openclipart_items,
        ),
    )
}


def _summary(domain: Domain) -> list[str]:
    items = domain.items()
    per_group: dict[str, int] = {}
    for item in items:
        per_group[item.group] = per_group.get(item.group, 0) + 1
    sizes = []
    for item in items:
        with Image.open(item.path) as image:
            sizes.append(image.size)
    counts = sorted(per_group.values())
    small = min(sizes, key=lambda size: size[0] * size[1])
    large = max(sizes, key=lambda size: size[0] * size[1])
    return [
        f"{domain.name}: {len(items)} items, {len({item.product for item in items})} products, "
        f"{len(per_group)} groups, per group min/median/max {counts[0]}/{statistics.median(counts):g}/{counts[-1]}, "
        f"sizes {small[0]}x{small[1]} .. {large[0]}x{large[1]}",
        f"    {domain.describe}",
        f"    source: {domain.source}; licence: {domain.licence}",
    ]


def main() -> None:
    names = sys.argv[1:] or list(DOMAINS)
    for name in names:
        print("\n".join(_summary(DOMAINS[name])), flush=True)


if __name__ == "__main__":
    main()
