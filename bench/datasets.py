"""Real image sets for the benchmarks, all from package registries (see docs/embeddings-benchmarks.md).

- Fashion-MNIST (Debian ``dataset-fashion-mnist``, MIT): Zalando product photos, 28x28 grey,
  10 classes. Stored light-on-black; inverted here to dark-on-white, like catalog photos.
- Saleor 2.10.1 demo renders (PyPI wheel, artwork CC-BY-4.0): 1024x1024 product PNGs, a few views
  per product, ~9 product types. Used as an out-of-domain check of the reduction.
- @vendure/create 3.7.3 demo photos (npm, GPL-3.0-or-later, photos from Unsplash): 54 ~1600x1067
  JPEG product photos. Used for file-to-vector throughput and as generic photos in the reduction fit.

The two photo sets are not vendored: ``photo_dir`` unpacks them into a cache dir on first use.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CACHE_DIR = Path(os.environ.get("BENCH_CACHE_DIR", Path(tempfile.gettempdir()) / "lookalike-bench"))


def save_array(path: Path, values: np.ndarray) -> None:
    """``np.save`` into the cache, whole or not at all: benchmarks running side by side share the cache, and one
    must never load a file another is still writing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    with partial.open("wb") as file:
        np.save(file, values)
    partial.replace(path)


def fashion_mnist(split: str = "test", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 28, 28) dark-on-white, labels int (n,)) for split "train" or "test"."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images_file = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    if not images_file.exists():
        sys.exit(f"{images_file} not found: apt-get install dataset-fashion-mnist")
    with gzip.open(images_file) as handle:
        images = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8).astype(np.int64)
    images = 255 - images  # dark product on white, as in a catalog
    return images[:limit], labels[:limit]


def fashion_mnist_pil(images: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(image).convert("RGB") for image in images]


def _run(command: list[str], cwd: Path) -> None:
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def vendure_photos() -> list[Path]:
    """The 54 @vendure/create demo JPEGs (fetched with ``npm pack`` once into CACHE_DIR)."""
    target = CACHE_DIR / "vendure"
    if not (target / "package/assets/images").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        _run(["npm", "pack", "--silent", "@vendure/create@3.7.3"], target)
        with tarfile.open(target / "vendure-create-3.7.3.tgz") as archive:
            archive.extractall(target, filter="data")
    return sorted((target / "package/assets/images").glob("*.jpg"))


def saleor_renders() -> list[tuple[Path, str]]:
    """(path, product type) for the Saleor 2.10.1 demo renders (fetched with ``pip download`` once)."""
    target = CACHE_DIR / "saleor"
    folder = target / "saleor/static/placeholders"
    if not folder.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.8"]
        _run([*pip, "saleor==2.10.1", "-d", str(target)], target)
        with zipfile.ZipFile(next(target.glob("saleor-*.whl"))) as wheel:
            for name in wheel.namelist():
                if name.startswith("saleor/static/placeholders/saleordemoproduct"):
                    wheel.extract(name, target)
    renders = []
    for path in sorted(folder.glob("saleordemoproduct_*.png")):
        # saleordemoproduct_cl_boot01_2.png -> "boot"; _fd_juice_03 -> "juice"; _wine-red -> "wine"
        stem = path.stem.removeprefix("saleordemoproduct_")
        stem = re.sub(r"^(cl|fd)_", "", stem)
        renders.append((path, re.match(r"[a-z]+", stem).group(0)))
    return renders


def random_view(image: Image.Image, rng: np.random.Generator, *, keep: tuple[float, float]) -> Image.Image:
    """A random crop keeping ``keep[0]``-``keep[1]`` of each side, mirrored half of the time."""
    width, height = image.size
    keep_w, keep_h = rng.uniform(*keep, size=2)
    crop_w, crop_h = int(width * keep_w), int(height * keep_h)
    left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    view = image.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return view


def augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A shopper's view of a product photo: random crop (60-95% per side), maybe mirrored, re-encoded."""
    import io

    view = random_view(image, rng, keep=(0.6, 0.95))
    buffer = io.BytesIO()
    view.save(buffer, "JPEG", quality=int(rng.integers(40, 90)))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
