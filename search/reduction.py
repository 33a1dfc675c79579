"""The reduction of the 1280-d view-averaged features to the stored vector: a linear map, fitted offline.

    raw (1280, unit length) -> minus mean -> x @ projection (1280 x d) -> L2

The projection is learned whitening (Radenović et al., "Fine-tuning CNN Image Retrieval with No Human Annotation",
2018): fitted on pairs of a catalog photo and another photo of the same product, it weighs down the directions in
which two photos of one product differ (background, light, framing), then keeps the ``d`` directions in which
products differ most. It is fitted once, offline, by ``bench/fit_reduction.py`` on the benchmark's image domains, each
weighted equally (never by the running app: the space must not drift between workers), and its content hash is part
of ``Embedder.id``, so a refit is a new embedding space. Judged on domains it was not fitted on, it found the right
product more often than PCA on five of six, and told sold from unsold better on five (docs/relevance.md); the
whitening of the first release, fitted and judged on two domains only, had lost more than it gained elsewhere.
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
    def fit(cls, sources: list[np.ndarray], *, dimensions: int, provenance: dict,
            pairs: list[tuple[np.ndarray, np.ndarray]] | None = None, shrinkage: float = 1.0) -> Reduction:
        """The reduction of several sources of raw features, each source weighted equally whatever its number of rows.

        Without ``pairs``: PCA. With ``pairs`` (per source, the features of photos and, row by row, of other photos
        of the same products): learned whitening. The directions in which two photos of one product differ are
        weighed down (the inverse square root of their covariance), then PCA keeps the ``dimensions`` directions in
        which products differ most. ``shrinkage`` in (0, 1] blends that covariance with the identity, so that few
        pairs cannot blow up a direction they happen not to vary in; 1 gives PCA again.
        """
        features = [l2_normalise(source).astype(np.float64) for source in sources]
        mean = sum(f.mean(axis=0) for f in features) / len(features)
        whitening = np.eye(len(mean))
        if pairs and shrinkage < 1:  # at 1 the blend below is the identity: PCA, without an eigendecomposition
            changes = [l2_normalise(a).astype(np.float64) - l2_normalise(b).astype(np.float64) for a, b in pairs]
            within = sum(change.T @ change / len(change) for change in changes) / len(changes)
            if (variance := np.trace(within) / len(within)) > 0:  # pairs of identical photos teach nothing
                within /= variance  # mean variance 1, as the identity it is blended with
                within = (1 - shrinkage) * within + shrinkage * np.eye(len(within))
                spread, axes = np.linalg.eigh(within)
                whitening = (axes / np.sqrt(spread)) @ axes.T
        whitened = [(f - mean) @ whitening for f in features]
        scatter = sum(w.T @ w / len(w) for w in whitened) / len(whitened)
        spread, axes = np.linalg.eigh(scatter)
        projection = whitening @ axes[:, np.argsort(spread)[::-1][:dimensions]]
        # eigh's signs are arbitrary; fix them so a refit on the same data gives the same file.
        projection *= np.sign(projection[np.abs(projection).argmax(axis=0), np.arange(dimensions)])
        method = {"method": "lw", "shrinkage": shrinkage} if pairs else {"method": "pca"}
        provenance = {**provenance, **method, "dimensions": dimensions}
        return cls._build(mean.astype(np.float32), projection.astype(np.float32), provenance)

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
