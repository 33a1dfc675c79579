"""Embedding throughput and worker memory on this machine, PyTorch eager vs onnxruntime (float32, int8) side by side.

    .venv/bin/python -m bench.throughput [--model efficientnet-lite0] [--repeats 5] [--quick]

1. model only: images/second through the network at its input size, per runtime, batch and thread count
   (median of --repeats runs, all in one process, interleaved so that load from other users of the
   machine hits every configuration alike);
2. file to vector: JPEG product photos (~1600x1067, the 54 Vendure demo photos) -> stored vector,
   the whole pipeline (decode with draft, trim, pad, resize, network, reduction), network batches
   of 16, with 16 or all files per ``embed_files`` call (within a call the next batch is decoded
   while the network runs on the current one);
   and the decode step alone with and without draft mode;
3. peak RSS of a fresh worker-like process that loads the embedder and embeds the photos.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
from PIL import Image

from bench.common import embedder, machine, median_seconds, table
from bench.datasets import vendure_photos
from search.embeddings import INT8, RUNTIMES
from search.preprocessing import to_model_input


def model_only(args) -> None:
    photos = vendure_photos()
    configs = [("torch", 2, 1), ("torch", 2, 16), ("onnx", 2, 1), ("onnx", 2, 8), ("onnx", 1, 3), ("onnx", 1, 16),
               (INT8, 2, 1), (INT8, 2, 8), (INT8, 1, 3), (INT8, 1, 16)]  # 3: a shopper's photo as its three views
    if args.quick:
        configs = [("torch", 2, 8), ("onnx", 2, 8), (INT8, 2, 8)]
    networks = {}
    for runtime, threads, _ in configs:
        if (runtime, threads) not in networks:
            model = embedder(args.model, runtime=runtime, threads=threads)
            networks[runtime, threads] = model.network
    size = model.input_size
    count = 16 if args.quick else 64
    batch = np.stack([to_model_input(model.load_image(photos[i % len(photos)]), size) for i in range(count)])
    timings = {config: [] for config in configs}
    for _ in range(args.repeats):
        for runtime, threads, batch_size in configs:
            network = networks[runtime, threads]
            seconds = median_seconds(
                lambda: [network(batch[i : i + batch_size]) for i in range(0, count, batch_size)], repeats=1
            )
            timings[runtime, threads, batch_size].append(seconds)
    rows = []
    for config in configs:
        runs = [count / s for s in timings[config]]
        rows.append([*config, f"{np.median(runs):.0f}", f"{min(runs):.0f}-{max(runs):.0f}"])
    print(f"Model only, {args.model} at {size} px, {count} images per run, median of {args.repeats} runs\n")
    print(table(["runtime", "threads", "batch", "images/s (median)", "range"], rows))


def file_to_vector(args) -> None:
    photos = vendure_photos()
    if args.quick:
        photos = photos[:8]
    model = embedder(args.model)
    model.embed_files(photos[:2])  # load the network outside the timing

    def decode(draft: bool) -> None:
        for path in photos:
            model.load_image(path) if draft else Image.open(path).convert("RGB")

    def preprocess() -> None:
        for path in photos:
            model.model_views(model.load_image(path))

    single = embedder(args.model, threads=1)
    single.embed_files(photos[:2])
    float32 = embedder(args.model, runtime="onnx")
    float32.embed_files(photos[:2])

    def whole(model=model, per_call=16) -> None:
        for start in range(0, len(photos), per_call):
            model.embed_files(photos[start : start + per_call])

    sizes = {Image.open(path).size for path in photos}
    rows = [
        ["decode only, full size", len(photos) / median_seconds(lambda: decode(False), repeats=args.repeats)],
        ["decode only, draft mode", len(photos) / median_seconds(lambda: decode(True), repeats=args.repeats)],
        ["decode (draft) + trim + pad + resize, 1 thread", len(photos) / median_seconds(preprocess, repeats=args.repeats)],
        ["file to vector, 1 thread, 16 files per call", len(photos) / median_seconds(lambda: whole(single), repeats=args.repeats)],
        ["file to vector, 2 threads, 16 files per call", len(photos) / median_seconds(whole, repeats=args.repeats)],
        ["file to vector, 2 threads, 16 files per call, float32 network",
         len(photos) / median_seconds(lambda: whole(float32), repeats=args.repeats)],
        [f"file to vector, 2 threads, {len(photos)} files per call (decode overlaps the network)",
         len(photos) / median_seconds(lambda: whole(per_call=len(photos)), repeats=args.repeats)],
    ]
    print(f"\nFile to vector, {args.model} ({model.runtime} unless said): {len(photos)} JPEGs, {len(sizes)} sizes, mostly 1600x1067, median of {args.repeats} runs\n")
    print(table(["step", "images/s"], [[name, f"{value:.0f}"] for name, value in rows]))


def worker_memory(args) -> None:
    rows = []
    for runtime in (INT8, "onnx", "torch"):
        command = [sys.executable, "-m", "bench.throughput", "--model", args.model, "--memory-child", runtime]
        if args.quick:
            command.append("--quick")
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        rows.append([runtime, result["images"], f"{result['after_import']:.0f}", f"{result['peak']:.0f}"])
    print(f"\nPeak RSS of a fresh process that loads {args.model} and embeds the photos (MiB)\n")
    print(table(["runtime", "images embedded", "RSS after imports", "peak RSS"], rows))


def memory_child(args) -> None:
    """Runs in its own process: RSS is per process, and a worker imports what this imports."""
    import search.embeddings as embeddings

    after_import = embeddings.peak_rss_mb()
    photos = vendure_photos()[: 8 if args.quick else 54]
    model = embedder(args.model, runtime=args.memory_child)
    for start in range(0, len(photos), 16):
        model.embed_files(photos[start : start + 16])
    print(json.dumps({"images": len(photos), "after_import": after_import, "peak": embeddings.peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke test: few images, few configurations")
    parser.add_argument("--memory-child", choices=RUNTIMES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args)
    if args.quick:
        args.repeats = 1
    print(f"Machine: {machine()}\n")
    model_only(args)
    file_to_vector(args)
    worker_memory(args)


if __name__ == "__main__":
    main()
