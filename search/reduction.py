"""Learned reduction of the 1280-d pooled features to the stored vector ("learned whitening").

    raw (1280) -> signed square root -> L2 -> minus mean -> x @ projection (1280 x d) -> L2

The projection is fitted offline from groups of images that should be near each other:
- whiten by the within-group covariance: directions in which images of one group differ (how a
  product is photographed: framing, mirror image, JPEG noise, lighting) get small weight;
- then keep the d directions of largest total variance in that whitened space (what tells groups apart).

This is the "learned whitening" of Radenović, Tolias and Chum (CNN image retrieval, TPAMI 2018),
with groups instead of matching pairs. With every image its own group it reduces to plain
PCA-whitening (``method="pca"``), kept for comparison. ``shrinkage`` adds a share of the mean eigenvalue
to every eigenvalue before whitening, so directions that hardly varied in the fitting data (colour,
when most of it is greyscale) are not blown up on photos unlike it.

A fitted reduction is a small ``.npz`` in ``search/spaces/`` with its provenance. It is fitted once,
offline, by ``bench/fit_reduction.py`` (never by the running app: the space must not drift between
workers), and its content hash is part of ``Embedder.id``, so a refit is a new embedding space.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPACES_DIR = Path(__file__).resolve().parent / "spaces"


def power_normalise(raw: np.ndarray) -> np.ndarray:
    """Signed square root, then L2: damps the few bursty channels that dominate raw CNN features."""
    raw = np.asarray(raw, dtype=np.float32)
    rooted = np.sign(raw) * np.sqrt(np.abs(raw))
    return rooted / np.maximum(np.linalg.norm(rooted, axis=1, keepdims=True), 1e-12)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class FitSource:
    """Raw features of one data source, the group of each row, and the source's share of the fit."""

    raw: np.ndarray
    groups: np.ndarray
    weight: float


def _within_group_covariance(features: np.ndarray, groups: np.ndarray) -> np.ndarray:
    centred = features.copy()
    for group in np.unique(groups):
        members = groups == group
        centred[members] -= features[members].mean(axis=0)
    return centred.T @ centred / len(features)


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
        return f"{self.provenance.get('method', 'lw')}{self.dimensions}-{self.digest[:8]}"

    def project(self, raw: np.ndarray) -> np.ndarray:
        return l2_normalise((power_normalise(raw) - self.mean) @ self.projection)

    @classmethod
    def fit(
        cls, sources: list[FitSource], *, dimensions: int, shrinkage: float, method: str = "lw", provenance: dict
    ) -> Reduction:
        """Fit on several sources, each weighted by its ``weight`` whatever its number of rows."""
        total = sum(source.weight for source in sources)
        features = [power_normalise(source.raw).astype(np.float64) for source in sources]
        shares = [source.weight / total for source in sources]
        mean = sum(share * f.mean(axis=0) for share, f in zip(shares, features, strict=True))
        scatter = sum(share * (f - mean).T @ (f - mean) / len(f) for share, f in zip(shares, features, strict=True))
        if method == "lw":
            within = sum(
                share * _within_group_covariance(f, source.groups)
                for share, f, source in zip(shares, features, sources, strict=True)
            )
        elif method == "pca":
            within = scatter
        else:
            raise ValueError(f"unknown method {method!r}")
        eigenvalues, eigenvectors = np.linalg.eigh(within)
        eigenvalues = np.maximum(eigenvalues, 0.0) + shrinkage * float(np.mean(eigenvalues))
        whiten = (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T
        spread, axes = np.linalg.eigh(whiten @ scatter @ whiten)
        axes = axes[:, np.argsort(spread)[::-1][:dimensions]]
        # eigh's signs are arbitrary; fix them so a refit on the same data gives the same file.
        axes *= np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(dimensions)])
        projection = (whiten @ axes).astype(np.float32)
        provenance = {**provenance, "method": method, "dimensions": dimensions, "shrinkage": shrinkage}
        return cls._build(mean.astype(np.float32), projection, provenance)

    @classmethod
    def _build(cls, mean: np.ndarray, projection: np.ndarray, provenance: dict) -> Reduction:
        digest = hashlib.sha256(mean.tobytes() + projection.tobytes()).hexdigest()
        return cls(mean=mean, projection=projection, provenance=provenance, digest=digest)

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
