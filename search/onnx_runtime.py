"""Run the EfficientNet-Lite feature extractor with onnxruntime: ~5x PyTorch eager on 2 CPU cores.

PyTorch stays the reference: the ONNX graph is exported from the very PyTorch module (network and pooling,
``search/pooling.py``) that ``embeddings.py`` builds from the packaged weights, once per machine, and cached on disk under a name
keyed by the weights file's sha256 (tests/test_embeddings.py checks that both give the same vectors).
Workers that find the cached file never import torch, which saves memory and start-up time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from functools import cache
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Bump when the export itself changes (opset, wrapper, exporter): old cache files are then ignored.
EXPORT_VERSION = 2  # 2: generalised-mean pooling (search/pooling.py)
OPSET = 17


@cache
def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_path(*, cache_dir: Path, model_name: str, weights_path: str) -> Path:
    return cache_dir / f"{model_name}-{file_sha256(weights_path)[:16]}-x{EXPORT_VERSION}.onnx"


def export_features(*, pooled_module, input_size: int, path: Path) -> Path:
    """Export ``pooled_module`` (images -> pooled features) to ``path`` (atomic: temp file + rename).

    Two workers starting at once may both export; each writes its own temp file and the renames
    replace one complete file with an identical one, so no process ever opens a half-written file.
    """
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        sample = torch.zeros(1, 3, input_size, input_size)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and constant-folding notes
            # dynamo=False: the TorchScript exporter needs no onnxscript and handles this graph fine.
            torch.onnx.export(
                pooled_module.eval(),
                (sample,),
                temp,
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    logger.info("exported %s", path)
    return path


class OnnxFeatures:
    """Callable (n, 3, s, s) float32 -> (n, 1280) float32 pooled features."""

    def __init__(self, path: Path, *, threads: int = 0):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # 0 lets onnxruntime use every core; set EMBEDDING_THREADS=1 with several prefork workers
        # per machine, or they fight over the same cores.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads sleep instead of spinning: the decode/resize threads that prepare the next
        # batch get the cores (file-to-vector ~10 % faster, model-only ~5 % slower; embeddings-benchmarks.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        (features,) = self.session.run(["features"], {"images": np.ascontiguousarray(batch, dtype=np.float32)})
        return features
