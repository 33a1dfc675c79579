"""The relevance benchmark's data: each domain split into a shop's catalog and its queries, shopper-style snapshots of
the queries, and the shipped pipeline's features of all of them (cached on disk).

Used by bench/relevance.py (through the API) and bench/fit_reduction.py (the fits).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bench.datasets import CACHE_DIR, save_array
from bench.domains import DOMAINS, Item
from bench.shopper import snapshot
from bench.training_pairs import other_photo
from search.preprocessing import PREPROCESSING_VERSION

SNAPSHOT_VERSION = 3  # bump when bench/shopper.py or the query sampling changes: cached features are keyed by it
SNAPSHOTS_PER_PHOTO = 3
PAIRS_VERSION = 2  # bump when bench/training_pairs.py changes: cached features are keyed by it
# Which photos are queried, and how each is snapshot, follows from the query set's name. The figures reported in
# docs/relevance.md are the "report" set's; whatever is chosen by looking at results (a weighting, a variant, the
# shipped constants) is chosen on the "explore" set, so that the report measures queries the choice never saw.
QUERY_SETS = ("report", "explore")
PAIRS_PER_PHOTO = 2  # other photos of each catalog photo, for fitting the learned whitening


@dataclass(frozen=True)
class DomainFeatures:
    """Raw (view-averaged, 1280-d) features of one domain's benchmark split."""

    name: str
    catalog: np.ndarray
    products: np.ndarray  # product of each catalog row
    groups: np.ndarray  # group (the shop's category) of each catalog row
    instance: np.ndarray  # snapshots of catalog photos
    instance_products: np.ndarray
    absent: np.ndarray  # snapshots of held-out photos
    other_photos: np.ndarray  # PAIRS_PER_PHOTO other photos of each catalog photo (bench/training_pairs.py), in turn

    @property
    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(catalog photos, other photos of the same products), row by row: what the learned whitening is fitted on."""
        return np.tile(self.catalog, (PAIRS_PER_PHOTO, 1)), self.other_photos


@dataclass(frozen=True)
class Sizes:
    catalog: int  # at most this many catalog photos (whole products)
    instance: int  # instance queries
    absent: int  # absent queries
    class_queries: int  # More like this queries


DEFAULT_SIZES = Sizes(catalog=300, instance=120, absent=80, class_queries=80)
QUICK_SIZES = Sizes(catalog=16, instance=6, absent=4, class_queries=4)
QUICK_DOMAINS = ("saleor",)

@dataclass
class DomainSplit:
    name: str
    catalog: list[Item]
    instance: list[Item]  # catalog photos whose snapshots are queried
    absent: list[Item]  # held-out photos whose snapshots are queried
    class_queries: list[Item]  # catalog products whose More like this is read
    snapshots: dict[str, list[bytes]] = field(default_factory=dict)  # "instance"/"absent" -> JPEG files
    query_set: str = "report"  # QUERY_SETS


def _stable(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _name(item: Item) -> str:
    """The photo's name for seeds and samples: its path inside the cache, the same wherever the cache lies."""
    return str(item.path.relative_to(CACHE_DIR)) if item.path.is_relative_to(CACHE_DIR) else str(item.path)


def _sample(items: list[Item], count: int, query_set: str) -> list[Item]:
    return sorted(items, key=lambda item: _stable(f"{query_set}:{_name(item)}"))[:count]


def split_domain(name: str, items: list[Item], sizes: Sizes, query_set: str = "report") -> DomainSplit:
    groups = sorted({item.group for item in items})
    held_out = set(groups[1::4])
    kept = [item for item in items if item.group not in held_out]
    catalog, products = [], set()
    for item in sorted(kept, key=lambda item: (_stable(item.product), str(item.path))):  # whole products
        if len(catalog) >= sizes.catalog and item.product not in products:
            break
        catalog.append(item)
        products.add(item.product)
    firsts = list({item.product: item for item in reversed(catalog)}.values())
    absent = [item for item in items if item.group in held_out]
    return DomainSplit(name=name, catalog=catalog, instance=_queries(catalog, sizes.instance, query_set),
                       absent=_queries(absent, sizes.absent, query_set),
                       class_queries=_sample(firsts, sizes.class_queries, query_set), query_set=query_set)


def _queries(items: list[Item], count: int, query_set: str) -> list[Item]:
    """``count`` photos to snapshot: each sampled photo once, and again (another snapshot) while a small domain has
    too few, up to SNAPSHOTS_PER_PHOTO each, so small domains are not measured on a handful of queries."""
    sampled = _sample(items, count, query_set)
    return [sampled[index % len(sampled)] for index in range(min(count, SNAPSHOTS_PER_PHOTO * len(sampled)))]


def prepare_domains(*, sizes: Sizes, names=None, query_set: str = "report") -> list[DomainSplit]:
    splits = []
    for name in names or DOMAINS:
        split = split_domain(name, DOMAINS[name].items(), sizes, query_set)
        for kind in ("instance", "absent"):
            taken: dict[Path, int] = {}
            split.snapshots[kind] = []
            for item in getattr(split, kind):
                taken[item.path] = taken.get(item.path, -1) + 1  # the nth snapshot of this photo
                seed = int(_stable(f"{query_set}:{kind}{_name(item)}#{taken[item.path]}")[:8], 16)
                split.snapshots[kind].append(snapshot(Image.open(item.path), np.random.default_rng(seed)))
        splits.append(split)
    return splits


# --- Offline features --------------------------------------------------------------------------------------


def cached(key: str, compute) -> np.ndarray:
    path = CACHE_DIR / "relevance" / f"{_stable(key)[:16]}.npy"
    if path.exists():
        return np.load(path)
    values = compute()
    save_array(path, values)
    return values


def decoded(split: DomainSplit, kind: str, load) -> list:
    if kind == "catalog":
        return [load(item.path) for item in split.catalog]
    return [load(io.BytesIO(data)) for data in split.snapshots[kind]]


def domain_features(embedder, split: DomainSplit) -> DomainFeatures:
    """The shipped pipeline's raw features of a split (cached on disk by model id, split and snapshot version)."""

    def features(kind: str) -> np.ndarray:
        paths = [str(item.path) for item in getattr(split, kind)]
        key = f"{embedder.network_id}p{PREPROCESSING_VERSION}-{kind}-s{SNAPSHOT_VERSION}{split.query_set}-{paths}"
        return cached(key, lambda: embedder.raw_features(decoded(split, kind, embedder.load_image)))

    def other_photos() -> np.ndarray:
        paths = [str(item.path) for item in split.catalog]
        key = f"{embedder.network_id}p{PREPROCESSING_VERSION}-pairs{PAIRS_VERSION}x{PAIRS_PER_PHOTO}-{paths}"

        def compute() -> np.ndarray:
            photos = []
            for turn in range(PAIRS_PER_PHOTO):
                for item in split.catalog:
                    seed = int(_stable(f"pair{_name(item)}#{turn}")[:8], 16)
                    photos.append(embedder.load_image(io.BytesIO(other_photo(Image.open(item.path),
                                                                             np.random.default_rng(seed)))))
            return embedder.raw_features(photos)

        return cached(key, compute)

    return DomainFeatures(
        name=split.name, catalog=features("catalog"), products=np.array([item.product for item in split.catalog]),
        groups=np.array([item.group for item in split.catalog]),
        instance=features("instance"), instance_products=np.array([item.product for item in split.instance]),
        absent=features("absent"), other_photos=other_photos(),
    )
