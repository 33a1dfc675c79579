"""Many distinct catalog-like photos made from the real photo sets (bench/datasets.py), cached on disk.

Each photo is a random variant of one Vendure photo (54 JPEGs) or Saleor render (45 PNGs): a crop keeping
70-100% of each side, maybe mirrored, brightness/contrast/colour jitter of +-15%, resized to a long side of
1000-1600 px and saved as a quality-85 JPEG (~150-400 KB), as a shop's photo export looks. Variant ``i`` is the
same on every machine (seeded by ``i``), so the cache can be reused and grown.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance
from tqdm import tqdm

from bench.datasets import CACHE_DIR, random_view, saleor_renders, vendure_photos

VERSION = 1
PHOTO_DIR = CACHE_DIR / f"ingest-photos-v{VERSION}"
LONG_SIDE = (1000, 1600)
JPEG_QUALITY = 85


def sources() -> list[tuple[Path, str]]:
    """(path, product type) of every source photo."""
    # Vendure's files are named after their photographers, so they get one product type.
    return [(path, "lifestyle") for path in vendure_photos()] + saleor_renders()


def photo_path(index: int) -> Path:
    return PHOTO_DIR / f"photo-{index:05d}.jpg"


def _open_source(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "P"):  # renders with transparency: on white, as a shop shows them
            image = image.convert("RGBA")
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.getchannel("A"))
            return background
        return image.convert("RGB")


def variant(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    view = random_view(image, rng, keep=(0.7, 1.0))
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        view = enhance(view).enhance(float(rng.uniform(0.85, 1.15)))
    long_side = int(rng.integers(LONG_SIDE[0], LONG_SIDE[1] + 1))
    scale = long_side / max(view.size)
    return view.resize((max(1, round(view.width * scale)), max(1, round(view.height * scale))),
                       Image.Resampling.LANCZOS)


def _make(job: tuple[Path, list[int]]) -> int:
    source, indices = job
    image = _open_source(source)
    for index in indices:
        out = photo_path(index)
        temp = out.with_suffix(".tmp")
        variant(image, np.random.default_rng(index)).save(temp, "JPEG", quality=JPEG_QUALITY)
        os.replace(temp, out)  # an interrupted run never leaves half a photo in the cache
    return len(indices)


def source_of(index: int, count: int) -> int:
    # Spread over all sources, but not in order: consecutive rows are different products.
    return (index * 7919) % count


def photos(count: int, *, processes: int | None = None) -> list[tuple[Path, str]]:
    """(path, product type) of ``count`` distinct photos, generating the ones not cached yet (all cores)."""
    originals = sources()
    PHOTO_DIR.mkdir(parents=True, exist_ok=True)
    missing: dict[int, list[int]] = {}
    for index in range(count):
        if not photo_path(index).exists():
            missing.setdefault(source_of(index, len(originals)), []).append(index)
    if missing:
        # Jobs of at most 25 photos of one source: each source is decoded once per job, and the bar moves.
        jobs = [(originals[s][0], indices[i : i + 25]) for s, indices in missing.items()
                for i in range(0, len(indices), 25)]
        with ProcessPoolExecutor(processes or os.cpu_count()) as pool, tqdm(
            total=sum(len(indices) for indices in missing.values()), desc="Generating photos", unit="photo"
        ) as bar:
            for done in pool.map(_make, jobs):
                bar.update(done)
    return [(photo_path(index), originals[source_of(index, len(originals))][1]) for index in range(count)]
