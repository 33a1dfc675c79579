"""The demo catalog: real product photos from two published packages, loaded through catalog.services.

- Vendure's project starter (npm ``@vendure/create``) ships 54 Unsplash product photos and a products CSV.
- Saleor's 2.10 wheel (PyPI ``saleor``) ships product renders and the fixture its ``populatedb`` command loads.

Both are fetched with the ordinary package clients (``npm pack``, ``pip download``) into a cache under the
state directory, pinned by SHA-256, and mapped into one category tree. Sources and licences: docs/demo-data.md.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from django.core.files.base import ContentFile
from django.db import connections, router

from catalog.models import CATEGORY_PATH_DISPLAY_SEPARATOR, DEFAULT_CURRENCY, Category, Product
from catalog.services import (
    LoadSummary,
    ProductWithPhotos,
    atomic_with_files,
    category_get_or_create_path,
    image_prepare,
    products_with_photos_upsert,
)
from config.embedded import STATE_DIR

DEFAULT_CACHE_DIR = STATE_DIR / "cache" / "demo"
COMPLETE_MARKER = ".complete"


class DemoSourceError(Exception):
    """A source package could not be fetched or read; the message says what to do."""


class DemoSourceUnavailable(DemoSourceError):
    """The package client is missing or could not download (no network, registry down)."""


@dataclass(frozen=True)
class DemoProduct:
    sku: str
    title: str
    category_path: str
    price: Decimal
    images: tuple[Path, ...]
    description: str = ""
    currency: str = DEFAULT_CURRENCY


# --- Sources ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoSource:
    name: str
    client: str  # "npm" or "pip": the ordinary client for the registry that publishes it
    spec: str
    archive_sha256: str  # pinned: a re-published artefact must not silently change the demo or its licence
    members: dict[str, str]  # archive member (prefix) -> path inside the extracted source directory
    sku_prefix: str  # every product of the source has a SKU that begins with it

    @property
    def directory_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.spec).strip("-")


VENDURE = DemoSource(
    name="vendure",
    client="npm",
    spec="@vendure/create@3.7.3",
    archive_sha256="89f0a9ce225c44b7f9fc07a85bca655f98c48bbb7f3aa06ae0e9c04ce5db0af7",
    members={
        "package/assets/products.csv": "products.csv",
        "package/assets/images/": "images/",
        "package/package.json": "package.json",  # names the licence
    },
    sku_prefix="VEN-",
)
SALEOR = DemoSource(
    name="saleor",
    client="pip",
    spec="saleor==2.10.1",
    archive_sha256="ebf33a74d000dcee5298b728b1bb10321521feea74c94a28bf85da556bfd337c",
    members={
        "saleor/static/populatedb_data.json": "populatedb_data.json",
        "saleor/static/placeholders/saleordemoproduct_": "placeholders/saleordemoproduct_",
        "saleor-2.10.1.dist-info/LICENSE": "LICENSE",
    },
    sku_prefix="SAL-",
)
SOURCES = {source.name: source for source in (VENDURE, SALEOR)}


def demo_source_fetch(*, source: DemoSource, cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Return the extracted source directory, downloading the package only when it is not cached yet."""
    target = cache_dir / source.directory_name
    if (target / COMPLETE_MARKER).exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".{source.name}-") as work:
        work = Path(work)
        archive = _FETCHERS[source.client](source.spec, work)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != source.archive_sha256:
            raise DemoSourceError(
                f"{archive.name} has SHA-256 {digest}, expected {source.archive_sha256}; refusing to load it."
            )
        staging = work / "extracted"
        _extract(archive, source.members, staging)
        (staging / COMPLETE_MARKER).write_text(source.spec + "\n")
        shutil.rmtree(target, ignore_errors=True)  # an interrupted earlier attempt
        staging.rename(target)
    return target


def _run(command: list[str], *, cwd: Path, what: str) -> None:
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise DemoSourceUnavailable(f"{what} took over 10 minutes; is the package registry reachable?") from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise DemoSourceUnavailable(f"{what} failed (exit {result.returncode}):\n{tail}")


def _npm_pack(spec: str, work: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise DemoSourceUnavailable(
            "npm is needed to fetch the Vendure demo photos but was not found on PATH. Install Node.js with npm "
            "(Debian: apt-get install npm), or load only the Saleor part: manage.py load_demo --source saleor"
        )
    _run([npm, "pack", spec, "--pack-destination", str(work), "--silent"], cwd=work, what=f"npm pack {spec}")
    return _single(work.glob("*.tgz"), spec)


def _pip_download(spec: str, work: Path) -> Path:
    # Saleor 2.10 declares Requires-Python <3.9; we only read its static files, so ask pip for a 3.8 wheel.
    command = [
        sys.executable, "-m", "pip", "download", spec, "--no-deps", "--only-binary=:all:",
        "--python-version", "3.8", "--dest", str(work), "--quiet", "--disable-pip-version-check",
    ]
    _run(command, cwd=work, what=f"pip download {spec}")
    return _single(work.glob("*.whl"), spec)


_FETCHERS = {"npm": _npm_pack, "pip": _pip_download}


def _single(paths: Iterable[Path], spec: str) -> Path:
    paths = list(paths)
    if len(paths) != 1:
        raise DemoSourceError(f"expected one archive for {spec}, found {[p.name for p in paths]}")
    return paths[0]


def _extract(archive: Path, members: dict[str, str], target: Path) -> None:
    """Copy the wanted members out by name; nothing else in the archive is written (no path traversal)."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                if path := _member_destination(info.filename, members, target):
                    _write(path, zipped.read(info))
    else:
        with tarfile.open(archive, "r:gz") as tarred:
            for member in tarred.getmembers():
                if member.isfile() and (path := _member_destination(member.name, members, target)):
                    _write(path, tarred.extractfile(member).read())


def _member_destination(name: str, members: dict[str, str], target: Path) -> Path | None:
    for prefix, local in members.items():
        rest = name[len(prefix):]
        if name.startswith(prefix) and "/" not in rest and rest not in (".", ".."):
            return target / (local + rest)
    return None


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


# --- Category tree ------------------------------------------------------------------------------------
# One tree for both sources. Vendure's facets stop at two levels (e.g. Electronics / Photo), so each Vendure
# product is placed by its slug; Saleor products are placed by their category, or their product type where
# the category mixes kinds (Saleor's "Alcohol" holds both wine and beer).

CATEGORY_TREE = {
    "Electronics > Computers > Laptops": ["laptop"],
    "Electronics > Computers > Tablets": ["tablet"],
    "Electronics > Computers > Monitors": ["32-inch-monitor", "curvy-monitor"],
    "Electronics > Computers > Desktops": ["gaming-pc"],
    "Electronics > Computers > Components": ["high-performance-ram", "hard-drive"],
    "Electronics > Computers > Accessories": ["cordless-mouse", "clacky-keyboard", "ethernet-cable", "usb-cable"],
    "Electronics > Cameras & Photo > Cameras": [
        "instant-camera", "vintage-folding-camera", "instamatic-camera", "compact-digital-camera",
        "nikkormat-slr-camera", "compact-slr-camera", "twin-lens-camera",
    ],
    "Electronics > Cameras & Photo > Lenses": ["camera-lens"],
    "Electronics > Cameras & Photo > Tripods": ["tripod"],
    "Sports & Outdoors > Cycling": ["road-bike"],
    "Sports & Outdoors > Fitness": ["skipping-rope", "boxing-gloves"],
    "Sports & Outdoors > Camping": ["tent"],
    "Sports & Outdoors > Skateboarding": ["cruiser-skateboard"],
    "Sports & Outdoors > Ball Sports": ["football", "tennis-ball", "basketball"],
    "Clothing > Shoes > Running Shoes": [
        "ultraboost-running-shoe", "freerun-running-shoe", "pureboost-running-shoe", "runx-running-shoe",
    ],
    "Clothing > Shoes > Sneakers": ["hi-top-basketball-shoe", "allstar-sneakers", "saleor:footwear"],
    "Clothing > Tops > T-shirts": ["saleor:t-shirts"],
    "Clothing > Tops > Polo Shirts": ["saleor:polo-shirts"],
    "Clothing > Tops > Hoodies": ["saleor:hoodies"],
    "Home & Garden > Furniture > Chairs & Stools": [
        "balloon-chair", "comfy-padded-chair", "black-eaves-chair", "modern-cafe-chair", "wooden-stool",
    ],
    "Home & Garden > Furniture > Sofas": ["grey-fabric-sofa", "leather-sofa"],
    "Home & Garden > Furniture > Tables & Desks": ["wooden-side-desk", "bedside-table"],
    "Home & Garden > Lighting": ["light-shade"],
    "Home & Garden > Decor > Ornaments": ["guardian-lion-statue"],
    "Home & Garden > Decor > Cushions": ["saleor:homewares"],
    "Home & Garden > Paint": ["saleor:paints"],
    "Home & Garden > Plants": [
        "spiky-cactus", "tulip-pot", "hanging-plant", "aloe-vera", "fern-blechnum-gibbum", "assorted-succulents",
        "orchid", "bonsai-tree",
    ],
    "Home & Garden > Garden Tools": ["hand-trowel"],
    "Groceries > Drinks > Juices": ["saleor:juices"],
    "Groceries > Drinks > Wine": ["saleor-type:wine"],
    "Groceries > Drinks > Beer": ["saleor-type:beer"],
}
_PATH_BY_KEY = {key: path for path, keys in CATEGORY_TREE.items() for key in keys}

# Where a Vendure product the table does not know yet goes (a newer package may add some).
VENDURE_FACET_PATHS = {
    ("Electronics", "Computers"): "Electronics > Computers",
    ("Electronics", "Photo"): "Electronics > Cameras & Photo",
    ("Sports & Outdoor", "Equipment"): "Sports & Outdoors",
    ("Sports & Outdoor", "Footwear"): "Clothing > Shoes",
    ("Home & Garden", "Plants"): "Home & Garden > Plants",
    ("Home & Garden", "Furniture"): "Home & Garden > Furniture",
}

# Saleor fixture rows whose photo belongs to another product (Apple, Pineapple and Coconut Juice show the
# Orange, Power and Bean bottles) or that repeat one (the fourth T-shirt has the third's photos): left out,
# since a demo of visual search must not show a photo under the wrong name.
SALEOR_SKIPPED_PRODUCTS = {72, 75, 76, 114}


# --- Parsing ------------------------------------------------------------------------------------------

def vendure_products_parse(*, root: Path) -> list[DemoProduct]:
    """Products from the starter's products.csv: a row with a name starts a product, the rows after it are
    its variants (the first variant's price is used)."""
    with open(root / "products.csv", newline="", encoding="utf-8") as handle:
        # The file pads every column with spaces to line them up.
        rows = [
            {key.strip(): (value or "").strip() for key, value in row.items() if key}
            for row in csv.DictReader(handle, skipinitialspace=True)
        ]
    products = []
    for row in rows:
        if not row["name"]:
            continue
        facets = [facet.split(":", 1) for facet in row["facets"].split("|") if ":" in facet]
        categories = tuple(value for kind, value in facets if kind == "category")
        path = (_PATH_BY_KEY.get(row["slug"]) or VENDURE_FACET_PATHS.get(categories)
                or CATEGORY_PATH_DISPLAY_SEPARATOR.join(categories))
        products.append(
            DemoProduct(
                sku=f"{VENDURE.sku_prefix}{row['slug']}",
                title=row["name"],
                description=row["description"],
                price=Decimal(row["price"]),
                category_path=path,
                images=tuple(root / "images" / name for name in row["assets"].split("|") if name),
            )
        )
    return products


def saleor_products_parse(*, root: Path) -> list[DemoProduct]:
    """Products from the populatedb fixture, with every view its product images list, in their order."""
    records = json.loads((root / "populatedb_data.json").read_text(encoding="utf-8"))
    by_model: dict[str, dict[int, dict]] = {}
    for record in records:
        by_model.setdefault(record["model"], {})[record["pk"]] = record["fields"]
    categories = by_model["product.category"]
    product_types = by_model["product.producttype"]

    images: dict[int, list[tuple[int, Path]]] = {}
    for fields in by_model["product.productimage"].values():
        # The fixture names the uploaded copy ("..._paints_01_stdygda.png"); the wheel ships the original.
        original = re.sub(r"_[A-Za-z0-9]{7}(\.\w+)$", r"\1", Path(fields["image"]).name)
        images.setdefault(fields["product"], []).append((fields["sort_order"], root / "placeholders" / original))

    products = []
    for pk, fields in sorted(by_model["product.product"].items()):
        if pk in SALEOR_SKIPPED_PRODUCTS or pk not in images:
            continue
        category = categories[fields["category"]]
        product_type = product_types[fields["product_type"]]
        category_path = (
            _PATH_BY_KEY.get(f"saleor-type:{product_type['slug']}")
            or _PATH_BY_KEY.get(f"saleor:{category['slug']}")
            or category["name"]
        )
        products.append(
            DemoProduct(
                sku=f"{SALEOR.sku_prefix}{pk}",
                title=fields["name"],
                description=fields["description"] or fields.get("seo_description", ""),
                price=Decimal(fields["price_amount"]),
                currency=fields["currency"],
                category_path=category_path,
                images=tuple(image for _, image in sorted(images[pk])),
            )
        )
    return products


PARSERS = {"vendure": vendure_products_parse, "saleor": saleor_products_parse}


def demo_products_collect(
    *, sources: Iterable[str] = tuple(SOURCES), cache_dir: Path = DEFAULT_CACHE_DIR, fetch: bool = True,
    on_fetch: Callable[[DemoSource], None] | None = None,
) -> list[DemoProduct]:
    """Fetch (unless cached or ``fetch`` is false) and parse the named sources; ``on_fetch(source)`` is called before
    a source is fetched from its registry (minutes, once)."""
    products = []
    for name in sources:
        source = SOURCES[name]
        root = cache_dir / source.directory_name
        if fetch:
            if on_fetch is not None and not (cache_dir / source.directory_name / COMPLETE_MARKER).exists():
                on_fetch(source)
            root = demo_source_fetch(source=source, cache_dir=cache_dir)
        elif not (root / COMPLETE_MARKER).exists():
            raise DemoSourceError(f"{source.spec} is not in the cache ({root}); run load_demo without --no-fetch.")
        products.extend(PARSERS[name](root=root))
    return products


# --- Loading ------------------------------------------------------------------------------------------

def demo_sources_loaded(*, sources: Iterable[str], cache_dir: Path = DEFAULT_CACHE_DIR) -> list[str]:
    """Those of ``sources`` whose load into this database completed (``demo_sources_loaded_mark``), whatever an admin
    changed or deleted since: every product of a source deleted, to start a shop's own catalog, stays deleted. Not a
    product of the source in the catalog: a first load cut short (Ctrl-C) left 30 of 85, and deleting them all
    brought them all back."""
    return [name for name in sources if _loaded_marker(SOURCES[name], cache_dir).exists()]


def demo_sources_loaded_mark(*, sources: Iterable[str], cache_dir: Path = DEFAULT_CACHE_DIR) -> None:
    """Record that the products of ``sources`` were all loaded into this database."""
    for name in sources:
        marker = _loaded_marker(SOURCES[name], cache_dir)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(SOURCES[name].spec + "\n")


def _loaded_marker(source: DemoSource, cache_dir: Path) -> Path:
    """Beside the cached packages, one per database (its host, port and name)."""
    database = connections[router.db_for_write(Product)].settings_dict
    where = hashlib.sha256(f"{database['HOST']}:{database['PORT']}/{database['NAME']}".encode()).hexdigest()[:16]
    return cache_dir / f".{source.name}-loaded-into-{where}"


def demo_products_load(*, products: Iterable[DemoProduct]) -> LoadSummary:
    """Create or update each product by SKU and add the photos it lacks (compared by content hash).

    Re-running changes nothing. Images are never removed, so photos an admin added survive. Each product is
    its own transaction: its embedding tasks are queued when it commits.
    """
    summary = LoadSummary()
    categories: dict[str, Category] = {}
    for item in products:
        if item.category_path not in categories:
            categories[item.category_path] = category_get_or_create_path(path=item.category_path)
        category = categories[item.category_path]
        summary.categories.add(category.pk)
        fields = {
            "title": item.title, "description": item.description, "price": item.price,
            "currency": item.currency, "category": category,
        }
        photos = [_DemoPhoto(path) for path in item.images]
        with atomic_with_files() as stored:
            (result,) = products_with_photos_upsert(
                items=[ProductWithPhotos(sku=item.sku, fields=fields, photos=photos)], stored=stored
            )
        summary.count(result.outcome, result.images_added)
    return summary


class _DemoPhoto:
    """A demo photo for products_with_photos_upsert: hashed first, decoded only when the product lacks it."""

    def __init__(self, path: Path):
        self.path, self.name = path, path.name

    def sha256(self) -> str:
        with open(self.path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()

    def prepare(self):
        return image_prepare(ContentFile(self.path.read_bytes(), name=self.path.name))
