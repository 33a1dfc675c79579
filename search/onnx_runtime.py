"""Run the EfficientNet-Lite feature extractor with onnxruntime: ~5x PyTorch eager on 2 CPU cores, ~2x more in int8.

PyTorch stays the reference: the ONNX graph is exported from the very PyTorch module (network and pooling,
``search/pooling.py``) that ``embeddings.py`` builds from the packaged weights, once per machine, and cached on disk under a name
keyed by the weights file's sha256 (tests/test_embeddings.py checks that both give the same vectors).
Workers that find the cached file never import torch, which saves memory and start-up time.

The int8 graph (the default runtime, ``onnx-int8``) is quantised from that export, also once per machine: weights
per channel, activations with ranges observed on a fixed set of generic photos that ship with the code
(``spaces/quantisation/``, none from a benchmark domain), so every machine derives the same graph.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Bump when the export itself changes (opset, wrapper, exporter): old cache files are then ignored.
EXPORT_VERSION = 3  # 3: the stride-16 map as a second output; 2: generalised-mean pooling (search/pooling.py)
OPSET = 17


@cache
def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def cache_build_lock(cache_dir: Path):
    """Held while a process builds (exports, quantises) a graph into ``cache_dir``: on a fresh machine every web and
    worker process found the cache empty and built the same graph at once, each importing PyTorch (150 MB kept for
    the process's life) on the same cores, the web ones inside a shopper's first search."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _publish(temp: str | Path, path: Path) -> None:
    """Put a finished file in place: readable by every user (the web and the workers may run as others), on disk
    before its name is (a crash between the two left an empty graph under the final name), then renamed."""
    os.chmod(temp, 0o644)
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, path)


def onnx_path(*, cache_dir: Path, model_name: str, weights_path: str) -> Path:
    return cache_dir / f"{model_name}-{file_sha256(weights_path)[:16]}-x{EXPORT_VERSION}.onnx"


def export_features(*, pooled_module, input_size: int, path: Path, outputs=("features", "details")) -> Path:
    """Export ``pooled_module`` (images -> pooled features and the stride-16 map, or only the first when
    ``outputs`` names one) to ``path`` (atomic: temp file + rename).

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
                output_names=list(outputs),
                dynamic_axes={"images": {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
                opset_version=OPSET,
                dynamo=False,
            )
        _publish(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    logger.info("exported %s", path)
    return path


# Photos whose activations set the int8 ranges (public domain and CC0, see spaces/quantisation/LICENSES.md).
QUANTISATION_IMAGES = Path(__file__).resolve().parent / "spaces" / "quantisation"
QUANTISATION_VERSION = 2  # bump when the quantisation settings change (2: 7-bit weights)


@cache
def quantisation_digest() -> str:
    """Names the int8 graph: changes with the settings and with the sample photos, so a change is a new space."""
    digest = hashlib.sha256(f"v{QUANTISATION_VERSION}".encode())
    for path in quantisation_images():
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:8]


def quantisation_images() -> list[Path]:
    return sorted(QUANTISATION_IMAGES.glob("*.jpg"))


def int8_path(float_path: Path) -> Path:
    return float_path.with_name(f"{float_path.stem}-int8-{quantisation_digest()}.onnx")


def quantise_features(*, float_path: Path, path: Path, samples) -> Path:
    """Static int8 quantisation of the exported graph into ``path`` (atomic, like the export).

    ``samples`` yields network inputs, (n, 3, s, s) float32, whose activation ranges (min and max) become the
    quantisation ranges. QDQ format with per-channel weights: onnxruntime fuses each convolution with its ReLU6 and
    runs it on integer kernels. The GeM pooling stays float32.

    Weights use 7 bits (``reduce_range``): on a CPU without VNNI the integer kernels add pairs of uint8 x int8
    products in 16 bits, which 8-bit weights overflow; 7-bit ones cannot, so every CPU computes the same integers and
    the same vectors. With 8 bits an AVX2-only CPU gave vectors at median cosine 0.886 (lowest 0.496) to float32's
    over the benchmark domains' catalog photos, and unlike a VNNI CPU's (docs/embeddings.md).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Samples(CalibrationDataReader):
        def __init__(self):
            self.inputs = iter(samples)

        def get_next(self):
            batch = next(self.inputs, None)
            return None if batch is None else {"images": np.ascontiguousarray(batch, dtype=np.float32)}

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f"{path.name}.") as work:
        prepared, quantised = Path(work) / "prepared.onnx", Path(work) / "int8.onnx"
        quant_pre_process(str(float_path), str(prepared))  # shape inference and graph clean-up, as recommended
        quantize_static(
            str(prepared),
            str(quantised),
            Samples(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,
        )
        _publish(quantised, path)
    logger.info("quantised %s", path)
    return path


class OnnxFeatures:
    """Callable (n, 3, s, s) float32 -> (n, 1280) float32 pooled features; ``with_details`` gives the stride-16 map
    too, from the same run."""

    def __init__(self, path: Path, *, threads: int = 0):
        import onnxruntime

        self.path = path
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

    def with_threads(self, threads: int) -> OnnxFeatures:
        """Another session of the same graph, on ``threads`` threads (0: every core)."""
        return OnnxFeatures(self.path, threads=threads)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        (features,) = self._run(batch, "features")
        return features

    def with_details(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features, details = self._run(batch, "features", "details")
        return features, details

    def _run(self, batch: np.ndarray, *outputs: str) -> list[np.ndarray]:
        return self.session.run(list(outputs), {"images": np.ascontiguousarray(batch, dtype=np.float32)})
