"""Helpers shared by the benchmarks: cached raw features, retrieval precision, markdown tables."""

from __future__ import annotations

import hashlib
import os
import platform
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import numpy as np

from bench.datasets import CACHE_DIR, save_array
from search.embeddings import EMBEDDERS, INT8, Embedder
from search.preprocessing import PREPROCESSING_VERSION


def embedder(name: str, *, runtime: str = INT8, threads: int = 0) -> Embedder:
    return EMBEDDERS[name](runtime=runtime, threads=threads, cache_dir=CACHE_DIR / "models")


def cached_raw_features(model: Embedder, key: str, images: Callable[[], Sequence]) -> np.ndarray:
    """Raw 1280-d features of ``images()``, cached on disk by model, preprocessing and ``key``."""
    path = raw_features_path(model, key)
    if path.exists():
        return np.load(path)
    features = model.raw_features(images())
    save_array(path, features)
    return features


def raw_features_path(model: Embedder, key: str) -> Path:
    tag = f"{model.network_id}-p{PREPROCESSING_VERSION}-{key}"
    return CACHE_DIR / "features" / f"{hashlib.sha1(tag.encode()).hexdigest()[:12]}-{model.name}.npy"


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def precision_at(vectors: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 10)) -> dict[int, float]:
    """Mean share of same-label items among each item's k nearest others (cosine), for each k."""
    vectors = unit(vectors.astype(np.float32))
    deepest = max(ks)
    hits = {k: 0.0 for k in ks}
    for start in range(0, len(vectors), 1000):
        block = vectors[start : start + 1000] @ vectors.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf  # not itself
        nearest = np.argpartition(-block, deepest, axis=1)[:, :deepest]
        order = np.take_along_axis(block, nearest, axis=1).argsort(axis=1)[:, ::-1]
        nearest = np.take_along_axis(nearest, order, axis=1)
        same = labels[nearest] == labels[start : start + len(block), None]
        for k in ks:
            hits[k] += same[:, :k].mean(axis=1).sum()
    return {k: hits[k] / len(vectors) for k in ks}


def median_seconds(run: Callable[[], object], *, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return float(np.median(timings))


def table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    return f"{date.today().isoformat()}, {platform.processor() or platform.machine()}, nproc={os.cpu_count()}"
