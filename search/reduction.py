"""The reduction of the 1280-d view-averaged features to the stored vector: PCA, fitted offline.

    raw (1280, unit length) -> minus mean -> x @ projection (1280 x d) -> L2

The projection keeps the ``d`` directions in which product photos of many kinds vary most. It is fitted once,
offline, by ``bench/fit_reduction.py`` on the benchmark's image domains, each weighted equally (never by the running
app: the space must not drift between workers), and its content hash is part of ``Embedder.id``, so a refit is a new
embedding space. Plain PCA, without whitening: whitening fitted on some domains blew up directions that other
domains use differently and lost more than it gained on held-out domains (docs/relevance.md), where PCA keeps 384-d
vectors (768 bytes as halfvec) as good as the 1280-d features.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPACES_DIR = Path(__file__).resolve().parent / "spaces"
# Fewer rows than this (a shopper's query, a worker's small batch) are projected in numpy's own loop rather than by
# BLAS: OpenBLAS wakes its thread pool even for one row, and with web workers sharing the cores that took 10-20 ms
# (bench.photo_search) for what costs 0.1-0.4 ms on one thread. The two differ by float rounding only (~1e-6).
BLAS_MIN_ROWS = 8


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Reduction:
    """A fitted projection: ``project`` maps raw features to unit-length reduced vectors."""

    mean: np.ndarray  # (input_dimensions,)
    projection: np.ndarray  # (input_dimensions, dimensions)
    provenance: dict
    digest: str  # sha256 of the arrays: identifies the space

    @property
    def dimensions(self) -> int:
        return self.projection.shape[1]

    @property
    def id(self) -> str:
        return f"{self.provenance['method']}{self.dimensions}-{self.digest[:8]}"

    def project(self, raw: np.ndarray) -> np.ndarray:
        centred = l2_normalise(raw) - self.mean
        if len(centred) < BLAS_MIN_ROWS:
            return l2_normalise(np.einsum("ij,jk->ik", centred, self.projection))
        return l2_normalise(centred @ self.projection)

    @classmethod
    def fit(cls, sources: list[np.ndarray], *, dimensions: int, provenance: dict) -> Reduction:
        """PCA of several sources of raw features, each source weighted equally whatever its number of rows."""
        features = [l2_normalise(source).astype(np.float64) for source in sources]
        mean = sum(f.mean(axis=0) for f in features) / len(features)
        scatter = sum((f - mean).T @ (f - mean) / len(f) for f in features) / len(features)
        spread, axes = np.linalg.eigh(scatter)
        axes = axes[:, np.argsort(spread)[::-1][:dimensions]]
        # eigh's signs are arbitrary; fix them so a refit on the same data gives the same file.
        axes *= np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(dimensions)])
        provenance = {**provenance, "method": "pca", "dimensions": dimensions}
        return cls._build(mean.astype(np.float32), axes.astype(np.float32), provenance)

    @classmethod
    def _build(cls, mean: np.ndarray, projection: np.ndarray, provenance: dict) -> Reduction:
        digest = hashlib.sha256(mean.tobytes() + projection.tobytes()).hexdigest()  # C order whatever the layout
        return cls(mean=mean, projection=np.ascontiguousarray(projection), provenance=provenance, digest=digest)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:  # a file object: np.savez would otherwise append ".npz"
            np.savez_compressed(
                handle, mean=self.mean, projection=self.projection, provenance=json.dumps(self.provenance, indent=1)
            )

    @classmethod
    def load(cls, path: Path) -> Reduction:
        with np.load(path, allow_pickle=False) as data:
            provenance = json.loads(str(data["provenance"]))
            return cls._build(data["mean"], data["projection"], provenance)


def reduction_path(*, model_name: str, dimensions: int) -> Path:
    return SPACES_DIR / f"{model_name}-{dimensions}d.npz"
